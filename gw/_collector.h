/* llhttp's ``on_header`` callback in C: a head's plain fields kept in a list, every other
field handed to the Python form (``slow``), which decides and refuses as before.

Included by the compiled module of each package that parses HTTP/1 with llhttp, which defines
``COLLECTOR_NAME`` (its type's name) first and is made by ``module_with_collector``:
gw/edge/_requestfields.c (a request's fields, kept as bytes: ``Connection.on_header``) and
gw/upstream/_wire.c (an upstream answer's fields, kept with their names in lower case from a
table of names met before, and their values decoded from Latin-1: ``Response._on_header``).

PERF: the Python forms cost about 35 to 50 bytecodes per field, for every field of every
message. The collector keeps a field only when it is below the size limit, within the count
limit, not named with Transfer-Encoding's length (17: the Python forms check its value) and,
with a table, named as met before; and only while ``fields`` is a list: the owner sets it to
None once the head is done, so a trailer field is always the Python form's. */

#ifndef GW_COLLECTOR_H
#define GW_COLLECTOR_H

#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *fields; /* the list the fields of the head being parsed go to; None: none does */
    PyObject *slow;   /* the Python form, called for every field this one does not keep */
    Py_ssize_t size;  /* the largest field: "Name: value" and its CRLF */
    Py_ssize_t count; /* the most fields a head may have */
    PyObject *names;  /* None: fields kept as bytes; a dict: lower-case names by raw name */
    vectorcallfunc vectorcall;
} Collector;

/* The field as kept: (name, value) as given, or (lower-case name, Latin-1 value) with a table
   of names; NULL with no error set when the name is not in the table. */
static PyObject *kept_field(Collector *self, PyObject *name, PyObject *value) {
    if (self->names == Py_None) return PyTuple_Pack(2, name, value);
    PyObject *lower = PyDict_GetItemWithError(self->names, name); /* borrowed */
    if (lower == NULL) return NULL;
    PyObject *text = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                                            NULL);
    if (text == NULL) return NULL;
    PyObject *pair = PyTuple_Pack(2, lower, text);
    Py_DECREF(text);
    return pair;
}

/* Keep (name, value) when the field is plain; anything else goes to the Python form. */
static PyObject *collector_call(Collector *self, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames) {
    PyObject *fields = self->fields;
    if (self->slow == NULL) { /* cleared by the garbage collector: never called again */
        PyErr_SetString(PyExc_RuntimeError, "a cleared Collector was called");
        return NULL;
    }
    if (PyVectorcall_NARGS(nargsf) == 2 && kwnames == NULL && fields != NULL &&
        PyList_CheckExact(fields) && PyBytes_CheckExact(args[0]) && PyBytes_CheckExact(args[1])) {
        Py_ssize_t name = PyBytes_GET_SIZE(args[0]), value = PyBytes_GET_SIZE(args[1]);
        /* 17: Transfer-Encoding's length, whose value the Python form checks */
        if (name != 17 && name + value + 4 <= self->size &&
            PyList_GET_SIZE(fields) < self->count) {
            PyObject *pair = kept_field(self, args[0], args[1]);
            if (pair == NULL) {
                if (PyErr_Occurred()) return NULL;
                return PyObject_Vectorcall(self->slow, args, nargsf, kwnames); /* a new name */
            }
            int failed = PyList_Append(fields, pair);
            Py_DECREF(pair);
            if (failed) return NULL;
            Py_RETURN_NONE;
        }
    }
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static PyObject *collector_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"slow", "size", "count", "names", NULL};
    PyObject *slow, *names = Py_None;
    Py_ssize_t size, count;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onn|O:Collector", keywords, &slow, &size,
                                     &count, &names))
        return NULL;
    if (!PyCallable_Check(slow) || (names != Py_None && !PyDict_CheckExact(names))) {
        PyErr_SetString(PyExc_TypeError, "Collector: slow must be callable, names a dict or None");
        return NULL;
    }
    Collector *self = (Collector *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->slow = Py_NewRef(slow);
    self->fields = Py_NewRef(Py_None);
    self->size = size;
    self->count = count;
    self->names = Py_NewRef(names);
    self->vectorcall = (vectorcallfunc)collector_call;
    return (PyObject *)self;
}

/* The collector refers to its Python form, a bound method of the object that holds it: a
   cycle, which that object breaks when it is done, and the collector can also be collected. */
static int collector_traverse(Collector *self, visitproc visit, void *arg) {
    Py_VISIT(self->fields);
    Py_VISIT(self->slow);
    Py_VISIT(self->names);
    return 0;
}

static int collector_clear(Collector *self) {
    Py_CLEAR(self->fields);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->names);
    return 0;
}

static void collector_dealloc(Collector *self) {
    PyObject_GC_UnTrack(self);
    collector_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef collector_members[] = {
    {"fields", T_OBJECT, offsetof(Collector, fields), 0,
     "the list the head's fields go to, or None (every field goes to the Python form)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CollectorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = COLLECTOR_NAME,
    .tp_doc = "Collector(slow, size, count, names=None): llhttp's on_header callback for a "
              "head; a field it does not keep goes to slow(name, value).",
    .tp_basicsize = sizeof(Collector),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = collector_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Collector, vectorcall),
    .tp_traverse = (traverseproc)collector_traverse,
    .tp_clear = (inquiry)collector_clear,
    .tp_dealloc = (destructor)collector_dealloc,
    .tp_members = collector_members,
};

/* The module of ``def`` with the ``Collector`` type in it; NULL with an error set. */
static PyObject *module_with_collector(PyModuleDef *def) {
    if (PyType_Ready(&CollectorType) < 0) return NULL;
    PyObject *module = PyModule_Create(def);
    if (module == NULL) return NULL;
    if (PyModule_AddObjectRef(module, "Collector", (PyObject *)&CollectorType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

#endif
