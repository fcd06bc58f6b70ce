/* The compiled forms of three passes over header fields in gw/core/headers.py:

- ``field_values(pairs, form)``: the values of the fields whose comparison form is ``form``
  (``canonical_name``), in every spelling: a credential's field must be there once.

- ``upstream_fields(pairs, dropped)``: ``dict(forwardable(...))``'s pass: the client's fields
  by name, less those whose comparison form (``canonical_name``: lower case, ``_`` and ``.``
  as ``-``) is in ``dropped``; a repeated name keeps its first place and its last value, as
  ``dict()`` of the pairs does.
- ``answer_fields(pairs, hop_by_hop)``: ``response_headers``'s pass: an upstream answer's
  fields less the hop-by-hop ones, compared as they are (``gw.upstream.wire`` gives names in
  lower case).

Each returns None, having decided nothing, where the Python form must decide: a name that is
not ASCII (``str.lower`` knows more than ASCII: the Kelvin sign, the dotted I; for
``field_values`` only one of ``form``'s length, as only those can match), a name longer
than a field name can be here, a pair that is not a tuple of two ``str``, and for
``answer_fields`` an answer with a ``connection`` field (its tokens name more fields to drop).

PERF: the Python forms run a Python step per field, with a cached call for each comparison
form: about 70 bytecodes for the client's fields of a usual request, 60 for its answer's and
60 for its Authorization field.

APPSEC: what is dropped is decided by the same sets the Python forms use, and a name is
compared in the same form; ``tests/unit/test_fields_compiled.py`` compares the two forms on
generated fields. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Longer names go to the Python form: llhttp refuses a field line over the edge's field
   size, which is far larger, so no usual field is near this. */
#define MAX_NAME 256

/* One ASCII character of a name in its comparison form. */
static inline char form_of(Py_UCS1 c) {
    return (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : (c == '_' || c == '.') ? '-' : (char)c;
}

/* The comparison form of an ASCII ``name``: a new reference, or ``name`` itself (a new
   reference too) when it is already in that form. */
static PyObject *comparison_form(PyObject *name) {
    Py_ssize_t size = PyUnicode_GET_LENGTH(name);
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(name);
    Py_ssize_t first = 0;
    while (first < size && form_of(chars[first]) == (char)chars[first]) first++;
    if (first == size) return Py_NewRef(name);
    char form[MAX_NAME];
    memcpy(form, chars, (size_t)first);
    for (Py_ssize_t i = first; i < size; i++) form[i] = form_of(chars[i]);
    return PyUnicode_FromStringAndSize(form, size);
}

/* The pair's name and value (borrowed) when it is a tuple of two ``str``; 0 otherwise. */
static int name_and_value(PyObject *pair, PyObject **name, PyObject **value) {
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) return 0;
    *name = PyTuple_GET_ITEM(pair, 0);
    *value = PyTuple_GET_ITEM(pair, 1);
    return PyUnicode_CheckExact(*name) && PyUnicode_CheckExact(*value);
}

static PyObject *upstream_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyFrozenSet_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "upstream_fields(pairs: list, dropped: frozenset)");
        return NULL;
    }
    PyObject *pairs = args[0], *dropped = args[1];
    PyObject *fields = PyDict_New();
    if (fields == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *name, *value;
        if (!name_and_value(PyList_GET_ITEM(pairs, i), &name, &value) ||
            !PyUnicode_IS_ASCII(name) || PyUnicode_GET_LENGTH(name) > MAX_NAME) {
            Py_DECREF(fields);
            Py_RETURN_NONE;
        }
        PyObject *form = comparison_form(name);
        if (form == NULL) goto failed;
        int drop = PySet_Contains(dropped, form);
        Py_DECREF(form);
        if (drop < 0 || (!drop && PyDict_SetItem(fields, name, value) < 0)) goto failed;
    }
    return fields;
failed:
    Py_DECREF(fields);
    return NULL;
}

/* Whether the ASCII ``name``'s comparison form is ``form`` (ASCII, of the same length). */
static int has_form(const Py_UCS1 *name, const char *form, Py_ssize_t size) {
    for (Py_ssize_t i = 0; i < size; i++)
        if (form_of(name[i]) != form[i]) return 0;
    return 1;
}

static PyObject *field_values(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyUnicode_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "field_values(pairs: list, form: str)");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(args[1])) Py_RETURN_NONE;
    PyObject *pairs = args[0];
    Py_ssize_t size = PyUnicode_GET_LENGTH(args[1]);
    const char *form = (const char *)PyUnicode_1BYTE_DATA(args[1]);
    PyObject *values = PyList_New(0);
    if (values == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *name, *value;
        if (!name_and_value(PyList_GET_ITEM(pairs, i), &name, &value)) goto python_decides;
        if (PyUnicode_GET_LENGTH(name) != size) continue;  /* see _single in gw.auth */
        if (!PyUnicode_IS_ASCII(name)) goto python_decides;  /* the Kelvin sign, say */
        if (has_form(PyUnicode_1BYTE_DATA(name), form, size) && PyList_Append(values, value) < 0) {
            Py_DECREF(values);
            return NULL;
        }
    }
    return values;
python_decides:
    Py_DECREF(values);
    Py_RETURN_NONE;
}

static PyObject *str_connection;

static PyObject *answer_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyFrozenSet_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "answer_fields(pairs: list, hop_by_hop: frozenset)");
        return NULL;
    }
    PyObject *pairs = args[0], *hop_by_hop = args[1];
    Py_ssize_t count = PyList_GET_SIZE(pairs);
    PyObject *kept = PyList_New(0);
    if (kept == NULL) return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i), *name, *value;
        if (!name_and_value(pair, &name, &value)) goto python_decides;
        int connection = PyUnicode_Compare(name, str_connection);
        if (connection == -1 && PyErr_Occurred()) goto failed;
        if (connection == 0) goto python_decides;
        int drop = PySet_Contains(hop_by_hop, name);
        if (drop < 0 || (!drop && PyList_Append(kept, pair) < 0)) goto failed;
    }
    return kept;
python_decides:
    Py_DECREF(kept);
    Py_RETURN_NONE;
failed:
    Py_DECREF(kept);
    return NULL;
}

static PyMethodDef methods[] = {
    {"field_values", (PyCFunction)(void (*)(void))field_values, METH_FASTCALL,
     "field_values(pairs, form): the values of the fields whose comparison form is ``form``, "
     "or None where the Python form must decide."},
    {"upstream_fields", (PyCFunction)(void (*)(void))upstream_fields, METH_FASTCALL,
     "upstream_fields(pairs, dropped): the pairs by name less the dropped comparison forms, "
     "or None where the Python form must decide."},
    {"answer_fields", (PyCFunction)(void (*)(void))answer_fields, METH_FASTCALL,
     "answer_fields(pairs, hop_by_hop): the pairs less the hop-by-hop names, or None where "
     "the Python form must decide (a connection field)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.core._fields",
    .m_doc = "The compiled forms of three passes over header fields (gw/core/headers.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fields(void) {
    str_connection = PyUnicode_InternFromString("connection");
    if (str_connection == NULL) return NULL;
    return PyModule_Create(&module_def);
}
