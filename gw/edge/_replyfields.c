/* The compiled form of gw.edge.reply's pass over an answer's fields (``Reply._fields``).

PERF: the Python form runs a loop of about ten bytecodes per field (a dozen fields in a full
pipeline's answer), then joins, checks and encodes the lines; this form does the same pass in
one call. ``fields`` returns None for anything but the common case, and the caller then runs
the Python form, which decides and raises exactly as before: a name not met before, a
Connection field, a second Content-Length, a length that is not plain digits, a character
beyond Latin-1, any other type. So the two forms never disagree, they only differ in who made
the bytes. ``tests/unit/test_edge_reply_compiled.py`` compares them.

APPSEC: a name or value with CR or LF is never written here (the Python form refuses the whole
answer); hop-by-hop fields are dropped, as the Python form drops them. */

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

/* The length a Content-Length value states, or -1 unless it is 1 to 18 ASCII digits (the
   Python form's ``int`` decides every other spelling). */
static long long plain_length(PyObject *value) {
    const char *c = (const char *)PyUnicode_1BYTE_DATA(value);
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (n < 1 || n > 18) return -1;
    long long length = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] < '0' || c[i] > '9') return -1;
        length = length * 10 + (c[i] - '0');
    }
    return length;
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

static PyObject *fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "fields(headers, plain_names, seen_kinds)");
        return NULL;
    }
    if (kind_hop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "gw.edge._replyfields is not configured");
        return NULL;
    }
    PyObject *headers = args[0], *plain = args[1], *seen = args[2];
    if (!PyList_CheckExact(headers) || !PyDict_CheckExact(plain) || !PyDict_CheckExact(seen))
        Py_RETURN_NONE;
    Buffer b;
    buffer_start(&b);
    long long length = -1;
    int has_date = 0, result = DONE;
    /* No Python code runs in the loop (exact str names: C hashing and comparison), so the
       list cannot change under it. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers) && result == DONE; i++) {
        result = one_field(&b, PyList_GET_ITEM(headers, i), plain, seen, &length, &has_date);
    }
    PyObject *made = NULL;
    if (result == DONE) {
        PyObject *block = PyBytes_FromStringAndSize(b.data, b.size);
        if (block != NULL) {
            PyObject *stated = length < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(length);
            if (stated != NULL) made = Py_BuildValue("(NNO)", block, stated,
                                                     has_date ? Py_True : Py_False);
            else Py_DECREF(block);
        }
    } else if (result == NOT_HERE) {
        made = Py_NewRef(Py_None);
    }
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
    {"fields", (PyCFunction)(void (*)(void))fields, METH_FASTCALL,
     "fields(headers, plain_names, seen_kinds) -> (bytes, int | None, bool) | None: the "
     "answer's fields as written, the Content-Length they state and whether one is Date; or "
     "None when the Python form must make them."},
    {"configure", configure, METH_VARARGS,
     "configure(hop, length, date): the kind objects of gw.edge.reply's tables."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.edge._replyfields",
    .m_doc = "The compiled form of gw.edge.reply's pass over an answer's fields.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__replyfields(void) { return PyModule_Create(&module_def); }
