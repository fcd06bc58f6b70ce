/* The compiled form of gw.edge.reply's answer head (``Reply._head`` and ``Reply._fields``), and
of the whole usual answer (``Reply.send`` of a list of bytes: the head, then the body framed as
``Reply._frame`` frames it).

PERF: the Python form runs a loop of about ten bytecodes per field (a dozen fields in a full
pipeline's answer), then formats gw's own fields, joins, checks and encodes the lines: about
a hundred bytecodes and a dozen short strings per answer. This form writes the same head in one
call. ``head`` returns None for anything but the common case, and the caller then runs the
Python form, which decides and raises exactly as before: a status that does not start with
three digits, a 101, a name not met before, a Connection field, a second Content-Length, a
length that is not plain digits, a character beyond Latin-1, any other type. So the two forms
never disagree, they only differ in who made the bytes. ``tests/unit/test_edge_reply_compiled.py``
compares them.

PERF: ``answer`` spares ``Reply.send`` its loop, ``_write``, ``_head`` and ``_frame`` (about 100
bytecodes and three Python calls an answer) and writes the head and the body in one bytes object,
sent in one write. It takes only an exact list of exact bytes, which it reads without running
Python code; anything else, and every head ``head`` declines, is the Python form's, which runs
from the start as if ``answer`` had not been asked. ``tests/unit/test_edge_reply_compiled.py``
compares the two.

APPSEC: a status, name or value with CR or LF is never written here (the Python form refuses
the whole answer); hop-by-hop fields are dropped, as the Python form drops them. A body is cut
to the Content-Length it announced, a cut or short one ends the connection, and a chunked one
ends with its final chunk, as the Python form does. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "../_buffer.h"

/* What gw.edge.reply hands over (``configure``): the kind objects its tables hold. */
static PyObject *kind_hop, *kind_length, *kind_date;

enum { DONE = 0, FAILED = -1, NOT_HERE = 1 };

/* A str whose characters are all Latin-1 (its bytes are its encoding) and none CR or LF. */
static int writable(PyObject *text) {
    if (!latin1_str(text)) return 0;
    const char *data = (const char *)PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    return memchr(data, '\r', (size_t)n) == NULL && memchr(data, '\n', (size_t)n) == NULL;
}

/* The number ``n`` ASCII digits at ``c`` spell, or -1 if any is not a digit (n <= 18). */
static long long digits(const char *c, Py_ssize_t n) {
    long long number = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] < '0' || c[i] > '9') return -1;
        number = number * 10 + (c[i] - '0');
    }
    return number;
}

/* The length a Content-Length value states, or -1 unless it is 1 to 18 ASCII digits (the
   Python form's ``int`` decides every other spelling). */
static long long plain_length(PyObject *value) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (n < 1 || n > 18) return -1;
    return digits((const char *)PyUnicode_1BYTE_DATA(value), n);
}

static int add_field(Buffer *b, PyObject *name, PyObject *value) {
    if (buffer_add_latin1(b, name) < 0 || buffer_add(b, ": ", 2) < 0 ||
        buffer_add_latin1(b, value) < 0 || buffer_add(b, "\r\n", 2) < 0)
        return FAILED;
    return DONE;
}

/* One field: written, dropped (hop-by-hop), or not for this form. */
static int one_field(Buffer *b, PyObject *field, PyObject *plain, PyObject *seen,
                     long long *length, int *has_date) {
    if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2) return NOT_HERE;
    PyObject *name = PyTuple_GET_ITEM(field, 0), *value = PyTuple_GET_ITEM(field, 1);
    if (!writable(name) || !writable(value)) return NOT_HERE;
    if (PyDict_GetItemWithError(plain, name) != NULL) return add_field(b, name, value);
    if (PyErr_Occurred()) return FAILED;
    PyObject *kind = PyDict_GetItemWithError(seen, name); /* borrowed */
    if (kind == NULL) return PyErr_Occurred() ? FAILED : NOT_HERE;
    if (kind == kind_hop) return DONE;
    if (kind == kind_date) {
        *has_date = 1;
        return add_field(b, name, value);
    }
    if (kind == kind_length && *length < 0) {
        *length = plain_length(value);
        if (*length < 0) return NOT_HERE;
        return add_field(b, name, value);
    }
    return NOT_HERE; /* a Connection field, a second length, a kind this form does not know */
}

/* The status code of a status line's text ("200 OK"), or -1 unless it starts with three
   ASCII digits (the Python form's ``int`` decides every other spelling). */
static int status_code(PyObject *status) {
    if (PyUnicode_GET_LENGTH(status) < 3) return -1;
    return (int)digits((const char *)PyUnicode_1BYTE_DATA(status), 3);
}

/* What an answer's head says about its body and its connection. */
typedef struct {
    long long length; /* the Content-Length stated, or -1 */
    int has_date, bodyless, chunked, keep_alive;
} Framing;

/* The app's fields, then gw's own (Date, Transfer-Encoding, Connection) and the empty line. */
static int head_fields(Buffer *b, PyObject *headers, PyObject *plain, PyObject *seen,
                       PyObject *date, int chunkable, Framing *framing) {
    int result = DONE;
    /* No Python code runs in the loop (exact str names: C hashing and comparison), so the
       list cannot change under it. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers) && result == DONE; i++) {
        result = one_field(b, PyList_GET_ITEM(headers, i), plain, seen, &framing->length,
                           &framing->has_date);
    }
    if (result != DONE) return result;
    if (!framing->has_date) {
        if (!writable(date)) return NOT_HERE;
        if (BUFFER_ADD_LITERAL(b, "Date: ") < 0 || buffer_add_latin1(b, date) < 0 ||
            BUFFER_ADD_LITERAL(b, "\r\n") < 0)
            return FAILED;
    }
    if (framing->length < 0 && !framing->bodyless) {
        if (chunkable) {
            framing->chunked = 1;
            if (BUFFER_ADD_LITERAL(b, "Transfer-Encoding: chunked\r\n") < 0) return FAILED;
        } else {
            framing->keep_alive = 0; /* HTTP/1.0: the end of the connection ends the body */
        }
    }
    int added = framing->keep_alive ? BUFFER_ADD_LITERAL(b, "Connection: keep-alive\r\n\r\n")
                                    : BUFFER_ADD_LITERAL(b, "Connection: close\r\n\r\n");
    return added < 0 ? FAILED : DONE;
}

/* True or False (borrowed). */
static PyObject *truth(int flag) { return flag ? Py_True : Py_False; }

/* The Content-Length a head states: an int, or None. */
static PyObject *stated_length(const Framing *framing) {
    return framing->length < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(framing->length);
}

static PyObject *made_head(Buffer *b, const Framing *framing) {
    PyObject *block = PyBytes_FromStringAndSize(b->data, b->size);
    if (block == NULL) return NULL;
    PyObject *stated = stated_length(framing);
    if (stated == NULL) {
        Py_DECREF(block);
        return NULL;
    }
    /* PERF: PyTuple_Pack, not Py_BuildValue (which reads a format string each time) */
    PyObject *made = PyTuple_Pack(5, block, stated, truth(framing->chunked),
                                  truth(framing->bodyless), truth(framing->keep_alive));
    Py_DECREF(block);
    Py_DECREF(stated);
    return made;
}

/* The head of the answer in ``args`` (``head``'s first eight arguments) into ``b``, and its
   framing: DONE, NOT_HERE (a ``None`` for the caller, nothing raised) or FAILED. */
static int make_head(Buffer *b, PyObject *const *args, Framing *framing) {
    if (kind_hop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "gw.edge._replyfields is not configured");
        return FAILED;
    }
    PyObject *status = args[0], *headers = args[1], *plain = args[2], *seen = args[3];
    if (!PyList_CheckExact(headers) || !PyDict_CheckExact(plain) || !PyDict_CheckExact(seen) ||
        !writable(status))
        return NOT_HERE;
    int code = status_code(status);
    if (code < 0 || code == 101) return NOT_HERE; /* a 101's fields are the tunnel's */
    for (int i = 5; i < 8; i++)
        if (!PyBool_Check(args[i])) return NOT_HERE;
    framing->length = -1;
    framing->has_date = framing->chunked = 0;
    framing->bodyless = args[7] == Py_True || code < 200 || code == 204 || code == 304;
    framing->keep_alive = args[6] == Py_True;
    int chunkable = args[5] == Py_True;
    if (BUFFER_ADD_LITERAL(b, "HTTP/1.1 ") < 0 || buffer_add_latin1(b, status) < 0 ||
        BUFFER_ADD_LITERAL(b, "\r\n") < 0)
        return FAILED;
    return head_fields(b, headers, plain, seen, args[4], chunkable, framing);
}

static PyObject *head(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "head(status, headers, plain_names, seen_kinds, "
                                         "date, chunkable, keep_alive, bodyless)");
        return NULL;
    }
    Framing framing;
    Buffer b;
    buffer_start(&b);
    int result = make_head(&b, args, &framing);
    PyObject *made = result == DONE       ? made_head(&b, &framing)
                     : result == NOT_HERE ? Py_NewRef(Py_None)
                                          : NULL;
    buffer_free(&b);
    return made;
}

/* PERF: the bodies ``answer`` writes whole: an answer in hand is small (what came with the
   upstream's head). A larger one goes through ``Reply.send``'s Python form, which writes chunk
   by chunk and never holds a second copy of the body. */
#define ANSWER_BODY_MOST ((Py_ssize_t)1 << 20)

/* How many hex digits ``n`` takes (as ``b"%x"``). */
static int hex_digits(Py_ssize_t n) {
    int count = 1;
    while (n >>= 4) count++;
    return count;
}

/* The framed body of ``chunks`` (a list of exact bytes) after a head that says ``framing``:
   how many bytes it takes, and how many of the body's bytes it carries (``*sent``). As
   ``Reply._frame``: never more than a Content-Length announced, and a body cut to it ends the
   connection; an empty chunk is not written. -1 if it is over ANSWER_BODY_MOST. */
static Py_ssize_t body_size(PyObject *chunks, Framing *framing, long long *sent) {
    Py_ssize_t size = 0;
    *sent = 0;
    if (framing->bodyless) return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(chunks); i++) {
        Py_ssize_t n = PyBytes_GET_SIZE(PyList_GET_ITEM(chunks, i));
        if (framing->length >= 0 && n > framing->length - *sent) {
            /* APPSEC: never more than the Content-Length announced: the client would read the
               rest as the next answer. The connection then ends, so the client sees a broken
               answer, not a clean one. */
            n = (Py_ssize_t)(framing->length - *sent);
            framing->keep_alive = 0;
        }
        if (n == 0) continue;
        if (n > ANSWER_BODY_MOST) return -1;
        *sent += n;
        size += framing->chunked ? hex_digits(n) + 2 + n + 2 : n; /* "%x\r\n%s\r\n" */
        if (size > ANSWER_BODY_MOST) return -1;
    }
    if (framing->chunked) size += 5; /* the final chunk, "0\r\n\r\n" */
    return size;
}

/* The head in ``b`` and the framed body of ``chunks`` (``size`` bytes, ``sent`` of them the
   body's, as ``body_size`` counted them) in one bytes object. */
static PyObject *whole_answer(const Buffer *b, PyObject *chunks, const Framing *framing,
                              Py_ssize_t size, long long sent) {
    PyObject *data = PyBytes_FromStringAndSize(NULL, b->size + size);
    if (data == NULL) return NULL;
    char *at = PyBytes_AS_STRING(data);
    memcpy(at, b->data, (size_t)b->size);
    at += b->size;
    long long left = sent;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(chunks) && left > 0; i++) {
        PyObject *chunk = PyList_GET_ITEM(chunks, i);
        Py_ssize_t n = PyBytes_GET_SIZE(chunk);
        if (n > left) n = (Py_ssize_t)left; /* cut to the Content-Length (body_size) */
        if (n == 0) continue;
        left -= n;
        /* APPSEC: a chunk's bytes are the app's and are not read: its size line (from its
           length alone) frames it, so bytes like "0\r\n\r\n" in it cannot end the body. */
        if (framing->chunked) {
            int count = hex_digits(n);
            Py_ssize_t rest = n;
            for (int d = count - 1; d >= 0; d--, rest >>= 4)
                at[d] = "0123456789abcdef"[rest & 15];
            memcpy(at + count, "\r\n", 2);
            at += count + 2;
        }
        memcpy(at, PyBytes_AS_STRING(chunk), (size_t)n);
        at += n;
        if (framing->chunked) {
            memcpy(at, "\r\n", 2);
            at += 2;
        }
    }
    if (framing->chunked) memcpy(at, "0\r\n\r\n", 5);
    return data;
}

/* ``answer``'s tuple for the head in ``b``, or None for a body over ANSWER_BODY_MOST. */
static PyObject *made_answer(const Buffer *b, PyObject *chunks, Framing *framing) {
    long long sent;
    Py_ssize_t size = body_size(chunks, framing, &sent);
    if (size < 0) Py_RETURN_NONE;
    /* A short body: the client must see the connection end (``Reply.send``). */
    if (framing->length >= 0 && sent < framing->length && !framing->bodyless)
        framing->keep_alive = 0;
    PyObject *data = whole_answer(b, chunks, framing, size, sent);
    if (data == NULL) return NULL;
    PyObject *stated = stated_length(framing);
    if (stated == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *body_sent = PyLong_FromLongLong(sent);
    PyObject *made = body_sent == NULL ? NULL
                                       : PyTuple_Pack(6, data, truth(framing->keep_alive),
                                                      body_sent, stated, truth(framing->chunked),
                                                      truth(framing->bodyless));
    Py_DECREF(data);
    Py_XDECREF(body_sent);
    Py_DECREF(stated);
    return made;
}

static PyObject *answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "answer(status, headers, plain_names, seen_kinds, "
                                         "date, chunkable, keep_alive, bodyless, chunks)");
        return NULL;
    }
    PyObject *chunks = args[8];
    /* An exact list of exact bytes: reading it runs no Python code, so nothing can raise or
       change the list while it is read. Anything else is the Python form's. */
    if (!PyList_CheckExact(chunks)) Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(chunks); i++)
        if (!PyBytes_CheckExact(PyList_GET_ITEM(chunks, i))) Py_RETURN_NONE;
    Framing framing;
    Buffer b;
    buffer_start(&b);
    int result = make_head(&b, args, &framing);
    PyObject *made = result == DONE       ? made_answer(&b, chunks, &framing)
                     : result == NOT_HERE ? Py_NewRef(Py_None)
                                          : NULL;
    buffer_free(&b);
    return made;
}

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *hop, *length, *date;
    if (!PyArg_ParseTuple(args, "UUU:configure", &hop, &length, &date)) return NULL;
    Py_XSETREF(kind_hop, Py_NewRef(hop));
    Py_XSETREF(kind_length, Py_NewRef(length));
    Py_XSETREF(kind_date, Py_NewRef(date));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"head", (PyCFunction)(void (*)(void))head, METH_FASTCALL,
     "head(status, headers, plain_names, seen_kinds, date, chunkable, keep_alive, bodyless) "
     "-> (bytes, int | None, bool, bool, bool) | None: the answer's head as written, the "
     "Content-Length it states, whether the body is chunked, whether the answer has no body "
     "and whether the connection is kept; or None when the Python form must make it."},
    {"answer", (PyCFunction)(void (*)(void))answer, METH_FASTCALL,
     "answer(status, headers, plain_names, seen_kinds, date, chunkable, keep_alive, bodyless, "
     "chunks) -> (bytes, bool, int, int | None, bool, bool) | None: the whole answer to send "
     "for a body that is a list of bytes (the head as ``head`` makes it, then the body framed), "
     "whether the connection is kept, the body's bytes sent, the Content-Length stated, whether "
     "the body is chunked and whether the answer has no body; or None when the Python form "
     "must send it."},
    {"configure", configure, METH_VARARGS,
     "configure(hop, length, date): the kind objects of gw.edge.reply's tables."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.edge._replyfields",
    .m_doc = "The compiled form of gw.edge.reply's answer head.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__replyfields(void) { return PyModule_Create(&module_def); }
