/* The compiled forms of the edge's two passes over a request's head:

- ``Collector`` (gw/_collector.h): llhttp's ``on_header`` callback, which keeps each field of
  a request's head as bytes (``Connection.on_header`` in gw/edge/connection.py);
- ``environ``: ``build_environ`` (gw/edge/environ.py), which makes a request's WSGI environ:
  its fields as the environ's keys and the pipeline's ``Headers``, and its target, method and
  protocol.

PERF: the Python forms cost about 50 bytecodes per field for the callback and 40 for the loop,
for every field of every request, and about a hundred more for the rest of the environ and the
``Headers``. These forms do the common case in C and hand everything else to the Python form,
which decides and refuses exactly as before: the collector calls it for a field over the size
limit, a field past the count limit, a name of Transfer-Encoding's length and a trailer field;
``environ`` returns None for a repeated field (joined, or refused for Host and Content-Type)
and for anything not of the types it expects, and the caller then starts over with the Python
form. So the two never disagree, they only differ in who did the work. An absolute-form
target's path and a path with an escape or beyond ASCII are made by the Python form's own
functions. ``tests/unit/test_edge_request_compiled.py`` compares them.

APPSEC: nothing here decides what is refused or trusted: every limit is checked before a field
is kept, and the names come from the Python form's own ``_environ_names`` (a name with an
underscore has no environ key and is dropped, as there). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define COLLECTOR_NAME "gw.edge._requestfields.Collector"
#include "../_collector.h"

/* -- environ: the fields -------------------------------------------------------------------- */

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

/* The fields' pass: each field into ``environ``, and the pipeline's fields into ``pairs`` and
   ``by_name``. */
static int all_fields(PyObject *environ, PyObject *headers, PyObject *names, PyObject *pairs,
                      PyObject *by_name) {
    int result = DONE;
    /* ``names`` may run Python code (a name not in its cache): the list is read afresh, and
       each field held, at every step. */
    for (Py_ssize_t i = 0; result == DONE && i < PyList_GET_SIZE(headers); i++) {
        PyObject *field = Py_NewRef(PyList_GET_ITEM(headers, i));
        result = one_field(environ, field, names, pairs, by_name);
        Py_DECREF(field);
    }
    return result;
}

/* -- environ: the rest ---------------------------------------------------------------------- */

/* What gw.edge.environ hands over (``configure``). */
static struct {
    PyObject *headers_type;  /* gw.core.headers.Headers */
    PyObject *headers_key;   /* gw.core.ingress.HEADERS: the environ key of the Headers */
    PyObject *cgi;           /* gw.core.headers.CGI_HEADERS: (key, name, lower-case name)s */
    PyObject *absolute_path; /* an absolute-form target's path (gw.edge.environ) */
    PyObject *decoded_path;  /* a path with an escape or beyond ASCII, decoded */
} given;

/* The environ's own keys and the values it never has to make. */
static PyObject *key_method, *key_raw_uri, *key_path, *key_query, *key_protocol,
    *key_content_type, *http_11, *http_10, *empty;

static int make_constants(void) {
    key_method = PyUnicode_InternFromString("REQUEST_METHOD");
    key_raw_uri = PyUnicode_InternFromString("RAW_URI");
    key_path = PyUnicode_InternFromString("PATH_INFO");
    key_query = PyUnicode_InternFromString("QUERY_STRING");
    key_protocol = PyUnicode_InternFromString("SERVER_PROTOCOL");
    key_content_type = PyUnicode_InternFromString("CONTENT_TYPE");
    http_11 = PyUnicode_InternFromString("HTTP/1.1");
    http_10 = PyUnicode_InternFromString("HTTP/1.0");
    empty = PyUnicode_InternFromString("");
    return key_method && key_raw_uri && key_path && key_query && key_protocol &&
                   key_content_type && http_11 && http_10 && empty
               ? 0
               : -1;
}

/* The SERVER_PROTOCOL of a served version (gw.edge.request.served_version: 1.0 or 1.1). */
static PyObject *protocol_of(PyObject *version) {
    if (PyUnicode_CompareWithASCIIString(version, "1.1") == 0) return http_11;
    if (PyUnicode_CompareWithASCIIString(version, "1.0") == 0) return http_10;
    return NULL;
}

/* PATH_INFO of the target's path as the Python form makes it: an absolute-form target's path,
   and a path with an escape or a character beyond ASCII decoded (both by the Python form's own
   functions). A new reference, or NULL with an error set. */
static PyObject *path_info(PyObject *path) {
    PyObject *made = Py_NewRef(path);
    if (PyUnicode_GET_LENGTH(made) == 0 || PyUnicode_READ_CHAR(made, 0) != '/') {
        Py_SETREF(made, PyObject_CallOneArg(given.absolute_path, made));
        if (made == NULL) return NULL;
        if (!PyUnicode_CheckExact(made)) {
            PyErr_SetString(PyExc_TypeError, "absolute_path must return a str");
            Py_DECREF(made);
            return NULL;
        }
    }
    Py_ssize_t escape = PyUnicode_FindChar(made, '%', 0, PyUnicode_GET_LENGTH(made), 1);
    if (escape == -2) {
        Py_DECREF(made);
        return NULL;
    }
    if (escape >= 0 || !PyUnicode_IS_ASCII(made))
        Py_SETREF(made, PyObject_CallOneArg(given.decoded_path, made));
    return made;
}

/* The target's keys: REQUEST_METHOD, RAW_URI, PATH_INFO, QUERY_STRING (in this order, as the
   Python form sets them). */
static int add_target(PyObject *environ, PyObject *url, PyObject *method) {
    PyObject *raw_uri = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(url), PyBytes_GET_SIZE(url), NULL);
    if (raw_uri == NULL) return FAILED;
    int result = FAILED;
    PyObject *path = NULL, *query = NULL, *decoded = NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(raw_uri);
    Py_ssize_t mark = PyUnicode_FindChar(raw_uri, '?', 0, n, 1);
    if (mark == -2) goto done;
    path = mark < 0 ? Py_NewRef(raw_uri) : PyUnicode_Substring(raw_uri, 0, mark);
    query = mark < 0 ? Py_NewRef(empty) : PyUnicode_Substring(raw_uri, mark + 1, n);
    if (path == NULL || query == NULL) goto done;
    decoded = path_info(path);
    if (decoded == NULL) goto done;
    if (PyDict_SetItem(environ, key_method, method) == 0 &&
        PyDict_SetItem(environ, key_raw_uri, raw_uri) == 0 &&
        PyDict_SetItem(environ, key_path, decoded) == 0 &&
        PyDict_SetItem(environ, key_query, query) == 0)
        result = DONE;
done:
    Py_XDECREF(decoded);
    Py_XDECREF(query);
    Py_XDECREF(path);
    Py_DECREF(raw_uri);
    return result;
}

/* Headers.from_fields's part: Content-Type and Content-Length after the other fields, when the
   environ holds them, not empty. */
static int add_cgi_fields(PyObject *environ, PyObject *pairs, PyObject *by_name) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(given.cgi); i++) {
        PyObject *names = PyTuple_GET_ITEM(given.cgi, i);
        PyObject *value = PyDict_GetItemWithError(environ, PyTuple_GET_ITEM(names, 0));
        if (value == NULL) {
            if (PyErr_Occurred()) return FAILED;
            continue;
        }
        int truth = PyObject_IsTrue(value);
        if (truth < 0) return FAILED;
        if (!truth) continue;
        PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(names, 1), value);
        int failed = pair == NULL || PyList_Append(pairs, pair) < 0 ||
                     PyDict_SetItem(by_name, PyTuple_GET_ITEM(names, 2), value) < 0;
        Py_XDECREF(pair);
        if (failed) return FAILED;
    }
    return DONE;
}

/* The rest of the environ after its fields; ``pairs`` and ``by_name`` become its Headers. */
static int add_the_rest(PyObject *environ, PyObject *url, PyObject *method, PyObject *protocol,
                        PyObject *pairs, PyObject *by_name) {
    if (add_target(environ, url, method) < 0) return FAILED;
    if (PyDict_SetItem(environ, key_protocol, protocol) < 0) return FAILED;
    int has_type = PyDict_Contains(environ, key_content_type);
    if (has_type < 0 || (!has_type && PyDict_SetItem(environ, key_content_type, empty) < 0))
        return FAILED;
    if (add_cgi_fields(environ, pairs, by_name) < 0) return FAILED;
    PyObject *headers = PyObject_CallFunctionObjArgs(given.headers_type, pairs, by_name, NULL);
    if (headers == NULL) return FAILED;
    int added = PyDict_SetItem(environ, given.headers_key, headers);
    Py_DECREF(headers);
    return added < 0 ? FAILED : DONE;
}

static PyObject *make_environ(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "environ(base, headers, names, url, method, version)");
        return NULL;
    }
    if (given.headers_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "gw.edge._requestfields is not configured");
        return NULL;
    }
    PyObject *base = args[0], *headers = args[1], *names = args[2], *url = args[3];
    PyObject *method = args[4], *version = args[5];
    if (!PyDict_CheckExact(base) || !PyList_CheckExact(headers) || !PyBytes_CheckExact(url) ||
        !PyUnicode_CheckExact(method) || !PyUnicode_CheckExact(version))
        Py_RETURN_NONE;
    PyObject *protocol = protocol_of(version);
    if (protocol == NULL) Py_RETURN_NONE;
    PyObject *environ = PyDict_Copy(base), *pairs = PyList_New(0), *by_name = PyDict_New();
    int result = environ == NULL || pairs == NULL || by_name == NULL ? FAILED : DONE;
    if (result == DONE) result = all_fields(environ, headers, names, pairs, by_name);
    if (result == DONE) result = add_the_rest(environ, url, method, protocol, pairs, by_name);
    Py_XDECREF(pairs);
    Py_XDECREF(by_name);
    if (result == DONE) return environ;
    Py_XDECREF(environ);
    if (result == NOT_HERE) Py_RETURN_NONE;
    return NULL;
}

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *headers_type, *headers_key, *cgi, *absolute_path, *decoded_path;
    if (!PyArg_ParseTuple(args, "OUO!OO:configure", &headers_type, &headers_key, &PyTuple_Type,
                          &cgi, &absolute_path, &decoded_path))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(cgi); i++) {
        PyObject *names = PyTuple_GET_ITEM(cgi, i);
        if (!PyTuple_CheckExact(names) || PyTuple_GET_SIZE(names) != 3) {
            PyErr_SetString(PyExc_TypeError, "cgi: (key, name, lower-case name) tuples");
            return NULL;
        }
    }
    Py_XSETREF(given.headers_type, Py_NewRef(headers_type));
    Py_XSETREF(given.headers_key, Py_NewRef(headers_key));
    Py_XSETREF(given.cgi, Py_NewRef(cgi));
    Py_XSETREF(given.absolute_path, Py_NewRef(absolute_path));
    Py_XSETREF(given.decoded_path, Py_NewRef(decoded_path));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"environ", (PyCFunction)(void (*)(void))make_environ, METH_FASTCALL,
     "environ(base, headers, names, url, method, version) -> dict | None: the environ "
     "build_environ makes, or None when the Python form must make it."},
    {"configure", configure, METH_VARARGS,
     "configure(headers_type, headers_key, cgi, absolute_path, decoded_path): what "
     "gw.edge.environ hands over."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.edge._requestfields",
    .m_doc = "The compiled forms of the edge's passes over a request's head.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__requestfields(void) {
    if (make_constants() < 0) return NULL;
    return module_with_collector(&module_def);
}
