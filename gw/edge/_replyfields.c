/* The compiled form of gw.edge.reply's answer head (``Reply._head`` and ``Reply._fields``).

PERF: the Python form runs a loop of about ten bytecodes per field (a dozen fields in a full
pipeline's answer), then formats gw's own fields, joins, checks and encodes the lines: about
a hundred bytecodes and a dozen short strings per answer. This form writes the same head in one
call. ``head`` returns None for anything but the common case, and the caller then runs the
Python form, which decides and raises exactly as before: a status that does not start with
three digits, a 101, a name not met before, a Connection field, a second Content-Length, a
length that is not plain digits, a character beyond Latin-1, any other type. So the two forms
never disagree, they only differ in who made the bytes. ``tests/unit/test_edge_reply_compiled.py``
compares them.

APPSEC: a status, name or value with CR or LF is never written here (the Python form refuses
the whole answer); hop-by-hop fields are dropped, as the Python form drops them. */

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

static PyObject *made_head(Buffer *b, const Framing *framing) {
    PyObject *block = PyBytes_FromStringAndSize(b->data, b->size);
    if (block == NULL) return NULL;
    PyObject *stated =
        framing->length < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(framing->length);
    if (stated == NULL) {
        Py_DECREF(block);
        return NULL;
    }
    return Py_BuildValue("(NNOOO)", block, stated, framing->chunked ? Py_True : Py_False,
                         framing->bodyless ? Py_True : Py_False,
                         framing->keep_alive ? Py_True : Py_False);
}

static PyObject *head(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "head(status, headers, plain_names, seen_kinds, "
                                         "date, chunkable, keep_alive, bodyless)");
        return NULL;
    }
    if (kind_hop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "gw.edge._replyfields is not configured");
        return NULL;
    }
    PyObject *status = args[0], *headers = args[1], *plain = args[2], *seen = args[3];
    if (!PyList_CheckExact(headers) || !PyDict_CheckExact(plain) || !PyDict_CheckExact(seen) ||
        !writable(status))
        Py_RETURN_NONE;
    int code = status_code(status);
    if (code < 0 || code == 101) Py_RETURN_NONE; /* a 101's fields are the tunnel's */
    for (int i = 5; i < 8; i++)
        if (!PyBool_Check(args[i])) Py_RETURN_NONE;
    Framing framing = {.length = -1};
    framing.bodyless = args[7] == Py_True || code < 200 || code == 204 || code == 304;
    framing.keep_alive = args[6] == Py_True;
    int chunkable = args[5] == Py_True;
    Buffer b;
    buffer_start(&b);
    int result = DONE;
    if (BUFFER_ADD_LITERAL(&b, "HTTP/1.1 ") < 0 || buffer_add_latin1(&b, status) < 0 ||
        BUFFER_ADD_LITERAL(&b, "\r\n") < 0)
        result = FAILED;
    if (result == DONE)
        result = head_fields(&b, headers, plain, seen, args[4], chunkable, &framing);
    PyObject *made = result == DONE       ? made_head(&b, &framing)
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
