/* A byte buffer that grows as bytes are added: the one gw's C extensions write into
(gw/observe/_accessline.c, gw/edge/_replyfields.c, gw/upstream/_wire.c). Its first
2048 bytes are inside the struct, on the caller's stack: nearly every access line and head fits
there, with no allocation. */

#ifndef GW_BUFFER_H
#define GW_BUFFER_H

#include <Python.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t size, room;
    char first[2048];
} Buffer;

static void buffer_start(Buffer *b) {
    b->first[0] = '\0'; /* never read as such: it tells the compiler the bytes are ours */
    b->data = b->first;
    b->size = 0;
    b->room = (Py_ssize_t)sizeof b->first;
}

static void buffer_free(Buffer *b) {
    if (b->data != b->first) PyMem_Free(b->data);
}

/* Make room for ``count`` more bytes (the rare case). -1 with MemoryError set if there is
   none. */
static Py_NO_INLINE int buffer_grow(Buffer *b, Py_ssize_t count) {
    Py_ssize_t room = b->room;
    while (count > room - b->size) {
        if (room > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        room *= 2;
    }
    char *grown;
    if (b->data == b->first) {
        grown = PyMem_Malloc((size_t)room);
        if (grown != NULL) memcpy(grown, b->first, (size_t)b->size);
    } else {
        grown = PyMem_Realloc(b->data, (size_t)room);
    }
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = grown;
    b->room = room;
    return 0;
}

/* Add ``count`` bytes; 0, or -1 with MemoryError set. PERF: always inlined, so that the
   copy of a literal (``BUFFER_ADD_LITERAL``) is a few moves, not a call of ``memcpy``. */
static inline Py_ALWAYS_INLINE int buffer_add(Buffer *b, const char *bytes, Py_ssize_t count) {
    if (count > b->room - b->size && buffer_grow(b, count) < 0) return -1;
    memcpy(b->data + b->size, bytes, (size_t)count);
    b->size += count;
    return 0;
}

#define BUFFER_ADD_LITERAL(b, s) buffer_add((b), (s), (Py_ssize_t)(sizeof(s) - 1))

/* Whether ``text`` is a str whose characters are all Latin-1: its one-byte form is then its
   encoding, which ``buffer_add_latin1`` copies. */
static inline int latin1_str(PyObject *text) {
    return PyUnicode_CheckExact(text) && PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND;
}

/* Add the encoding of ``text``, a str that ``latin1_str`` accepted; 0, or -1 with MemoryError
   set. */
static inline int buffer_add_latin1(Buffer *b, PyObject *text) {
    return buffer_add(b, (const char *)PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text));
}

#endif
