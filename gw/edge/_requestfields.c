/* The compiled forms of the edge's two passes over a request's header fields:

- ``Collector`` (gw/_collector.h): llhttp's ``on_header`` callback, which keeps each field of
  a request's head as bytes (``Connection.on_header`` in gw/edge/connection.py);
- ``environ_fields``: the loop of ``build_environ`` (gw/edge/environ.py) that turns a request's
  fields into the environ's keys and the pipeline's ``Headers``.

PERF: the Python forms cost about 50 bytecodes per field for the callback and 40 for the loop,
for every field of every request. These forms do the common case in C and hand everything else
to the Python form, which decides and refuses exactly as before: the collector calls it for a
field over the size limit, a field past the count limit, a name of Transfer-Encoding's length
and a trailer field; ``environ_fields`` returns None for a repeated field (joined, or refused
for Host and Content-Type) and for anything not made of bytes, and the caller then starts over
with the Python form. So the two never disagree, they only differ in who did the work.
``tests/unit/test_edge_request_compiled.py`` compares them.

APPSEC: nothing here decides what is refused or trusted: every limit is checked before a field
is kept, and the names come from the Python form's own ``_environ_names`` (a name with an
underscore has no environ key and is dropped, as there). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define COLLECTOR_NAME "gw.edge._requestfields.Collector"
#include "../_collector.h"

/* -- environ_fields ------------------------------------------------------------------------- */

enum { DONE = 0, FAILED = -1, NOT_HERE = 1 };

/* The value as the Python form reads it: Latin-1, without the trailing spaces and tabs llhttp
   keeps. */
static PyObject *field_value(PyObject *raw) {
    const char *bytes = PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    while (n > 0 && (bytes[n - 1] == ' ' || bytes[n - 1] == '\t')) n--;
    return PyUnicode_DecodeLatin1(bytes, n, NULL);
}

static int one_field(PyObject *environ, PyObject *field, PyObject *names, PyObject *pairs,
                     PyObject *by_name) {
    if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2) return NOT_HERE;
    PyObject *raw_name = PyTuple_GET_ITEM(field, 0), *raw_value = PyTuple_GET_ITEM(field, 1);
    if (!PyBytes_CheckExact(raw_name) || !PyBytes_CheckExact(raw_value)) return NOT_HERE;
    PyObject *named = PyObject_CallOneArg(names, raw_name);
    if (named == NULL) return FAILED;
    int result = NOT_HERE;
    PyObject *value = NULL, *pair = NULL;
    if (!PyTuple_CheckExact(named) || PyTuple_GET_SIZE(named) != 3) goto done;
    PyObject *key = PyTuple_GET_ITEM(named, 0);
    if (!PyUnicode_CheckExact(key)) goto done;
    if (PyUnicode_GET_LENGTH(key) == 0) {
        result = DONE; /* a name with an underscore: never in the environ */
        goto done;
    }
    int seen = PyDict_Contains(environ, key);
    if (seen != 0) {
        result = seen < 0 ? FAILED : NOT_HERE; /* a repeated field: the Python form's */
        goto done;
    }
    result = FAILED;
    value = field_value(raw_value);
    if (value == NULL || PyDict_SetItem(environ, key, value) < 0) goto done;
    if (PyUnicode_READ_CHAR(key, 0) == 'H') { /* not CONTENT_TYPE or CONTENT_LENGTH */
        pair = PyTuple_Pack(2, PyTuple_GET_ITEM(named, 1), value);
        if (pair == NULL || PyList_Append(pairs, pair) < 0 ||
            PyDict_SetItem(by_name, PyTuple_GET_ITEM(named, 2), value) < 0)
            goto done;
    }
    result = DONE;
done:
    Py_XDECREF(pair);
    Py_XDECREF(value);
    Py_DECREF(named);
    return result;
}

static PyObject *environ_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "environ_fields(environ, headers, names)");
        return NULL;
    }
    PyObject *environ = args[0], *headers = args[1], *names = args[2];
    if (!PyDict_CheckExact(environ) || !PyList_CheckExact(headers)) Py_RETURN_NONE;
    PyObject *pairs = PyList_New(0), *by_name = PyDict_New();
    int result = pairs == NULL || by_name == NULL ? FAILED : DONE;
    /* ``names`` may run Python code (a name not in its cache): the list is read afresh, and
       each field held, at every step. */
    for (Py_ssize_t i = 0; result == DONE && i < PyList_GET_SIZE(headers); i++) {
        PyObject *field = Py_NewRef(PyList_GET_ITEM(headers, i));
        result = one_field(environ, field, names, pairs, by_name);
        Py_DECREF(field);
    }
    PyObject *made = NULL;
    if (result == DONE) made = PyTuple_Pack(2, pairs, by_name);
    else if (result == NOT_HERE) made = Py_NewRef(Py_None);
    Py_XDECREF(pairs);
    Py_XDECREF(by_name);
    return made;
}

static PyMethodDef methods[] = {
    {"environ_fields", (PyCFunction)(void (*)(void))environ_fields, METH_FASTCALL,
     "environ_fields(environ, headers, names) -> (pairs, by_name) | None: add the fields to "
     "environ as build_environ's loop does and return what Headers.from_fields takes; None "
     "(environ then holds some of them) when the Python form must do it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.edge._requestfields",
    .m_doc = "The compiled forms of the edge's passes over a request's header fields.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__requestfields(void) { return module_with_collector(&module_def); }
