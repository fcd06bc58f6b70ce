/* The compiled form of gw.observe.instruments's ``_python_grouped``: a batch of finished
exchanges grouped for the metrics, the same groups in the same order.

``grouped(batch, methods, other, no_route, proxy)`` returns ``(requests, upstreams)``:
``requests`` maps ``(route or no_route, method if in methods else other, status // 100)`` to the
durations (``ended - started``) of the requests with that key, ``upstreams`` maps ``(upstream,
proxy)`` to the ``upstream_seconds`` of those that have one. It returns None for a batch with
anything it does not expect (a field of another type, a negative or huge status), and the
caller then groups the batch with the Python form: the two never disagree.
``tests/unit/test_metrics_grouped.py`` compares them.

PERF: about 50 bytecodes and a tuple hashed and compared per request in the Python form (about
1,800 instructions); here a request whose key is the one before's (the same route, method and
status class objects: most of a batch) is appended to that key's list with no tuple made.

APPSEC: a method not in ``methods`` is counted as ``other``, as in the Python form: a
client-chosen word never becomes a new series. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../_slots.h"

static PyObject *n_method, *n_route, *n_status, *n_started, *n_ended, *n_upstream,
    *n_upstream_seconds;

enum { F_METHOD, F_ROUTE, F_STATUS, F_STARTED, F_ENDED, F_UPSTREAM, F_UPSTREAM_SECONDS, FIELDS };
static PyObject **field_names[FIELDS] = {
    &n_method, &n_route, &n_status, &n_started, &n_ended, &n_upstream, &n_upstream_seconds,
};
static Py_ssize_t field_offsets[FIELDS];
static Slots exchange_slots = {NULL, 0, 0, FIELDS, field_names, field_offsets};

/* The results of a step: done, failed (an exception is set), or not for this form. */
enum { DONE = 0, FAILED = -1, NOT_HERE = 1 };

/* What ``grouped`` was handed, and the last key of each kind with its list. The lists and
   the last keys' pieces are borrowed: the dicts hold the lists, and every piece is a field of
   an exchange of the batch, which holds them all until ``grouped`` returns. */
typedef struct {
    PyObject *methods, *other, *no_route, *proxy, *requests, *upstreams;
    PyObject *route, *method, *durations; /* the last request's key and its list */
    long status_class;
    PyObject *upstream, *seconds; /* the last upstream's key and its list */
} Grouping;

/* Append ``value`` to the list ``key`` maps to in ``dict`` (made empty when missing); the list
   is kept in ``*list`` (borrowed; NULL after a failure). */
static int append_to(PyObject *dict, PyObject *key, PyObject **list, PyObject *value) {
    *list = NULL;
    if (key == NULL) return FAILED;
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL) return FAILED;
    PyObject *found = PyDict_SetDefault(dict, key, fresh); /* borrowed */
    Py_DECREF(fresh);
    if (found == NULL || PyList_Append(found, value) < 0) return FAILED;
    *list = found;
    return DONE;
}

/* The route's label: the route, or ``no_route`` for None or "" (``route or NO_ROUTE``). */
static int route_label(Grouping *g, PyObject *route, PyObject **label) {
    *label = route;
    if (route == Py_None || (PyUnicode_CheckExact(route) && PyUnicode_GET_LENGTH(route) == 0))
        *label = g->no_route;
    return route == Py_None || PyUnicode_CheckExact(route) ? DONE : NOT_HERE;
}

/* The method's label: the method, or ``other`` for one not in ``methods``. */
static int method_label(Grouping *g, PyObject *method, PyObject **label) {
    if (!PyUnicode_CheckExact(method)) return NOT_HERE;
    int known = PySet_Contains(g->methods, method);
    if (known < 0) return FAILED;
    *label = known ? method : g->other;
    return DONE;
}

/* Add a request's duration under its key. */
static int add_request(Grouping *g, PyObject *route, PyObject *method, PyObject *status,
                       PyObject *started, PyObject *ended) {
    if (!PyLong_CheckExact(status) || !PyFloat_CheckExact(started) || !PyFloat_CheckExact(ended))
        return NOT_HERE;
    int overflow;
    long code = PyLong_AsLongAndOverflow(status, &overflow);
    if (overflow || code < 0) return NOT_HERE; /* Python's floor division for those */
    PyObject *route_text, *method_text;
    int result = route_label(g, route, &route_text);
    if (result == DONE) result = method_label(g, method, &method_text);
    if (result != DONE) return result;
    PyObject *duration = PyFloat_FromDouble(PyFloat_AS_DOUBLE(ended) - PyFloat_AS_DOUBLE(started));
    if (duration == NULL) return FAILED;
    if (g->durations != NULL && route_text == g->route && method_text == g->method &&
        code / 100 == g->status_class) {
        result = PyList_Append(g->durations, duration) < 0 ? FAILED : DONE;
    } else {
        PyObject *status_class = PyLong_FromLong(code / 100);
        PyObject *key = status_class ? PyTuple_Pack(3, route_text, method_text, status_class)
                                     : NULL;
        result = append_to(g->requests, key, &g->durations, duration);
        Py_XDECREF(key);
        Py_XDECREF(status_class);
        g->route = route_text;
        g->method = method_text;
        g->status_class = code / 100;
    }
    Py_DECREF(duration);
    return result;
}

/* Add a proxied request's upstream time under its upstream (when it has both). */
static int add_upstream(Grouping *g, PyObject *upstream, PyObject *seconds) {
    if (seconds == Py_None || upstream == Py_None) return DONE;
    if (!PyUnicode_CheckExact(upstream)) return NOT_HERE;
    if (g->seconds != NULL && upstream == g->upstream)
        return PyList_Append(g->seconds, seconds) < 0 ? FAILED : DONE;
    PyObject *key = PyTuple_Pack(2, upstream, g->proxy);
    int result = append_to(g->upstreams, key, &g->seconds, seconds);
    Py_XDECREF(key);
    g->upstream = upstream;
    return result;
}

/* Group one exchange. */
static int add_exchange(Grouping *g, PyObject *exchange) {
    PyObject *fields[FIELDS] = {NULL};
    int result = DONE;
    for (int field = 0; field < FIELDS && result == DONE; field++) {
        fields[field] = slot_get(&exchange_slots, exchange, field);
        if (fields[field] == NULL) result = FAILED;
    }
    if (result == DONE)
        result = add_request(g, fields[F_ROUTE], fields[F_METHOD], fields[F_STATUS],
                             fields[F_STARTED], fields[F_ENDED]);
    if (result == DONE) result = add_upstream(g, fields[F_UPSTREAM], fields[F_UPSTREAM_SECONDS]);
    for (int field = 0; field < FIELDS; field++) Py_XDECREF(fields[field]);
    return result;
}

/* ``grouped(batch, methods, other, no_route, proxy)``: see the top of this file. */
static PyObject *grouped(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_CheckExact(args[0]) || !PyAnySet_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "grouped(batch: list, methods: frozenset, other, no_route, proxy)");
        return NULL;
    }
    if (exchange_slots.type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "gw.observe._grouped is not configured");
        return NULL;
    }
    Grouping g = {.methods = args[1], .other = args[2], .no_route = args[3], .proxy = args[4],
                  .requests = PyDict_New(), .upstreams = PyDict_New()};
    PyObject *made = NULL;
    int result = g.requests && g.upstreams ? DONE : FAILED;
    PyObject *batch = args[0];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(batch) && result == DONE; i++)
        result = add_exchange(&g, PyList_GET_ITEM(batch, i));
    if (result == DONE) {
        made = PyTuple_Pack(2, g.requests, g.upstreams);
    } else {
        if (result == FAILED) PyErr_Clear(); /* the Python form meets it again, and says so */
        made = Py_NewRef(Py_None);
    }
    Py_XDECREF(g.requests);
    Py_XDECREF(g.upstreams);
    return made;
}

static PyObject *configure(PyObject *module, PyObject *type) {
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "configure(exchange_type: type)");
        return NULL;
    }
    slots_of(&exchange_slots, (PyTypeObject *)type);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"grouped", (PyCFunction)(void (*)(void))grouped, METH_FASTCALL,
     "grouped(batch, methods, other, no_route, proxy) -> (requests, upstreams) | None: a "
     "batch of finished exchanges grouped for the metrics, or None when the Python form must "
     "group it."},
    {"configure", configure, METH_O, "configure(exchange_type): the class whose slots are read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.observe._grouped",
    .m_doc = "The compiled form of gw.observe.instruments's grouping of a batch.",
    .m_size = -1,
    .m_methods = methods,
};

static int intern(PyObject **into, const char *name) {
    *into = PyUnicode_InternFromString(name);
    return *into == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__grouped(void) {
    if (intern(&n_method, "method") < 0 || intern(&n_route, "route") < 0 ||
        intern(&n_status, "status") < 0 || intern(&n_started, "started") < 0 ||
        intern(&n_ended, "ended") < 0 || intern(&n_upstream, "upstream") < 0 ||
        intern(&n_upstream_seconds, "upstream_seconds") < 0)
        return NULL;
    return PyModule_Create(&module_def);
}
