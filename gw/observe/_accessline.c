/* The compiled form of gw.observe.accesslog's access line (``_line``): the same text, in C.

PERF: the Python form costs about 22,900 instructions for a full pipeline's line (Debian's
python3), most of them in the f-string's pieces and the calls that escape them; this form, about
7,700, reads the same attributes and copies the same ASCII text into one buffer. ``line`` returns None for anything it does not expect (a value of
another type, a piece of text that is not ASCII, a stage's field named like a base field), and
the caller then makes the line with the Python form: the two forms never disagree, they only
differ in who made the text. ``tests/unit/test_accesslog_compiled.py`` compares them.

APPSEC: every value a client or an upstream chooses (the request id, the path, the client
address, the error, a stage's field) is escaped exactly as ``json.encoder``'s own
``encode_basestring_ascii`` escapes it: printable ASCII without a quote or a backslash is
copied, anything else is handed to that function. A line can never be split or given a field
by what it reports. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "../_buffer.h"

/* What accesslog hands over (``configure``): its table of escaped repeating values, the
   function that fills it, the two JSON encoders and the set of the base field names. */
static PyObject *quoted_table, *quote, *encode_str, *encode_any, *base_fields;

/* The attribute names of an Exchange (and of its client), interned once. */
static PyObject *n_request_id, *n_client, *n_ip, *n_method, *n_path, *n_raw_target, *n_route,
    *n_upstream, *n_upstream_target, *n_status, *n_bytes_sent, *n_error, *n_extra;



/* The results of the steps below: done, failed (an exception is set), or not for this form
   (the Python form makes the line). */
enum { DONE = 0, FAILED = -1, NOT_HERE = 1 };

/* Add ``text``, which must be a str of ASCII only (JSON text made by the encoders, or gw's own
   timestamp). */
static int add_ascii(Buffer *t, PyObject *text) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) return NOT_HERE;
    return buffer_add(t, (const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text));
}

/* Whether ``json.encoder.encode_basestring_ascii`` leaves every character of ``text`` as it
   is: printable ASCII, no quote, no backslash (its own test, S_CHAR). */
static int needs_no_escape(PyObject *text) {
    if (!PyUnicode_IS_ASCII(text)) return 0;
    const unsigned char *c = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] < ' ' || c[i] > '~' || c[i] == '"' || c[i] == '\\') return 0;
    }
    return 1;
}

/* Add ``value`` as a JSON string, as ``_str`` (encode_basestring_ascii) writes it. */
static int add_string(Buffer *t, PyObject *value) {
    if (PyUnicode_Check(value) && needs_no_escape(value)) {
        if (BUFFER_ADD_LITERAL(t, "\"") < 0) return FAILED;
        if (buffer_add(t, (const char *)PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value)) < 0)
            return FAILED;
        return BUFFER_ADD_LITERAL(t, "\"");
    }
    PyObject *encoded = PyObject_CallOneArg(encode_str, value);
    if (encoded == NULL) return FAILED;
    int result = add_ascii(t, encoded);
    Py_DECREF(encoded);
    return result;
}

/* Add the JSON text of a value that repeats (``_known(value) or _quoted(value)``). */
static int add_known(Buffer *t, PyObject *value) {
    PyObject *known = PyDict_GetItemWithError(quoted_table, value); /* borrowed */
    if (known != NULL) return add_ascii(t, known);
    if (PyErr_Occurred()) return FAILED;
    PyObject *made = PyObject_CallOneArg(quote, value);
    if (made == NULL) return FAILED;
    int result = add_ascii(t, made);
    Py_DECREF(made);
    return result;
}

/* Add the decimal text of an int (``int(value)`` in the Python form). */
static int add_int(Buffer *t, PyObject *value) {
    if (!PyLong_Check(value)) return NOT_HERE;
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) return NOT_HERE;
    if (number == -1 && PyErr_Occurred()) return FAILED;
    /* PERF: the digits by hand, not snprintf (which costs more than the rest of the line's
       numbers together); unsigned, so that the most negative number has its magnitude too. */
    char digits[24];
    char *end = digits + sizeof digits, *at = end;
    unsigned long long magnitude = number < 0 ? 0ULL - (unsigned long long)number
                                              : (unsigned long long)number;
    do {
        *--at = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (number < 0) *--at = '-';
    return buffer_add(t, at, end - at);
}

/* Add a float as ``f"{value:.3f}"`` writes it (the same routine under the format). */
static int add_milliseconds(Buffer *t, PyObject *value) {
    if (!PyFloat_Check(value)) return NOT_HERE;
    char *digits = PyOS_double_to_string(PyFloat_AS_DOUBLE(value), 'f', 3, 0, NULL);
    if (digits == NULL) return FAILED;
    int result = buffer_add(t, digits, (Py_ssize_t)strlen(digits));
    PyMem_Free(digits);
    return result;
}

/* -- the line -------------------------------------------------------------------------------- */

/* Each step below adds one piece; a step's result other than DONE ends the line at once. */
#define STEP(call)                    \
    do {                              \
        result = (call);              \
        if (result != DONE) goto end; \
    } while (0)

/* Read attribute ``name`` of ``owner`` into ``into`` (a new reference), or end the line. */
#define READ(into, owner, name)               \
    do {                                      \
        into = PyObject_GetAttr(owner, name); \
        if (into == NULL) {                   \
            result = FAILED;                  \
            goto end;                         \
        }                                     \
    } while (0)

static int add_path(Buffer *t, PyObject *exchange) {
    PyObject *path = PyObject_GetAttr(exchange, n_path);
    if (path == NULL) return FAILED;
    int truth = PyObject_IsTrue(path);
    int result = FAILED;
    if (truth > 0) {
        result = add_string(t, path);
    } else if (truth == 0) {
        PyObject *raw = PyObject_GetAttr(exchange, n_raw_target);
        if (raw != NULL) {
            PyObject *head = PySequence_GetSlice(raw, 0, 512);
            if (head != NULL) {
                result = add_string(t, head);
                Py_DECREF(head);
            }
            Py_DECREF(raw);
        }
    }
    Py_DECREF(path);
    return result;
}

static int add_client(Buffer *t, PyObject *client) {
    if (client == Py_None) return BUFFER_ADD_LITERAL(t, "null");
    PyObject *ip = PyObject_GetAttr(client, n_ip);
    if (ip == NULL) return FAILED;
    int result = add_string(t, ip);
    Py_DECREF(ip);
    return result;
}

/* The stages' fields, in the order they were set (a dict's order): ``,"name":value``. */
static int add_extra(Buffer *t, PyObject *extra) {
    PyObject *name, *value;
    Py_ssize_t at = 0;
    while (PyDict_Next(extra, &at, &name, &value)) { /* borrowed */
        int result;
        if (BUFFER_ADD_LITERAL(t, ",") < 0) return FAILED;
        if ((result = add_known(t, name)) != DONE) return result;
        if (BUFFER_ADD_LITERAL(t, ":") < 0) return FAILED;
        if (PyUnicode_CheckExact(value)) {
            result = add_string(t, value);
        } else {
            PyObject *encoded = PyObject_CallOneArg(encode_any, value);
            if (encoded == NULL) return FAILED;
            result = add_ascii(t, encoded);
            Py_DECREF(encoded);
        }
        if (result != DONE) return result;
    }
    return DONE;
}

/* NOT_HERE when a stage's field has a base field's name: the Python form lets it win. */
static int check_extra(PyObject *extra) {
    if (!PyDict_CheckExact(extra)) return NOT_HERE;
    PyObject *name, *value;
    Py_ssize_t at = 0;
    while (PyDict_Next(extra, &at, &name, &value)) {
        int clash = PySet_Contains(base_fields, name);
        if (clash < 0) return FAILED;
        if (clash) return NOT_HERE;
    }
    return DONE;
}

static PyObject *line(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "line(exchange, when, duration_ms, worker)");
        return NULL;
    }
    if (quoted_table == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "gw.observe._accessline is not configured");
        return NULL;
    }
    PyObject *exchange = args[0], *when = args[1], *duration_ms = args[2], *worker = args[3];
    PyObject *extra = NULL, *value = NULL;
    int result = DONE;
    Buffer t;
    buffer_start(&t);

    READ(extra, exchange, n_extra);
    STEP(check_extra(extra));
    STEP(BUFFER_ADD_LITERAL(&t, "{\"time\":\""));
    STEP(add_ascii(&t, when));
    STEP(BUFFER_ADD_LITERAL(&t, "\",\"request_id\":"));
    READ(value, exchange, n_request_id);
    STEP(add_string(&t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(&t, ",\"client\":"));
    READ(value, exchange, n_client);
    STEP(add_client(&t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(&t, ",\"method\":"));
    READ(value, exchange, n_method);
    STEP(add_known(&t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(&t, ",\"path\":"));
    STEP(add_path(&t, exchange));
    STEP(BUFFER_ADD_LITERAL(&t, ",\"route\":"));
    READ(value, exchange, n_route);
    STEP(add_known(&t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(&t, ",\"upstream\":"));
    READ(value, exchange, n_upstream);
    STEP(add_known(&t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(&t, ",\"target\":"));
    READ(value, exchange, n_upstream_target);
    STEP(add_known(&t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(&t, ",\"status\":"));
    READ(value, exchange, n_status);
    STEP(add_int(&t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(&t, ",\"bytes\":"));
    READ(value, exchange, n_bytes_sent);
    STEP(add_int(&t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(&t, ",\"duration_ms\":"));
    STEP(add_milliseconds(&t, duration_ms));
    STEP(BUFFER_ADD_LITERAL(&t, ",\"worker\":"));
    STEP(add_int(&t, worker));
    READ(value, exchange, n_error);
    int error = PyObject_IsTrue(value);
    if (error < 0) {
        result = FAILED;
        goto end;
    }
    if (error) {
        STEP(BUFFER_ADD_LITERAL(&t, ",\"error\":"));
        STEP(add_string(&t, value));
    }
    Py_CLEAR(value);
    STEP(add_extra(&t, extra));
    STEP(BUFFER_ADD_LITERAL(&t, "}\n"));

end:
    Py_XDECREF(value);
    Py_XDECREF(extra);
    PyObject *made = NULL;
    if (result == DONE) {
        made = PyUnicode_New(t.size, 127);
        if (made != NULL) memcpy(PyUnicode_1BYTE_DATA(made), t.data, (size_t)t.size);
    } else if (result == NOT_HERE) {
        made = Py_NewRef(Py_None);
    }
    buffer_free(&t);
    return made;
}

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *table, *quote_, *str_, *any_, *base;
    if (!PyArg_ParseTuple(args, "O!OOOO!:configure", &PyDict_Type, &table, &quote_, &str_, &any_,
                          &PyFrozenSet_Type, &base))
        return NULL;
    Py_XSETREF(quoted_table, Py_NewRef(table));
    Py_XSETREF(quote, Py_NewRef(quote_));
    Py_XSETREF(encode_str, Py_NewRef(str_));
    Py_XSETREF(encode_any, Py_NewRef(any_));
    Py_XSETREF(base_fields, Py_NewRef(base));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"line", (PyCFunction)(void (*)(void))line, METH_FASTCALL,
     "line(exchange, when, duration_ms, worker) -> str | None: the access line of exchange, "
     "or None when the Python form must make it."},
    {"configure", configure, METH_VARARGS,
     "configure(quoted_table, quote, encode_str, encode_any, base_fields): what line uses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.observe._accessline",
    .m_doc = "The compiled form of gw.observe.accesslog's access line.",
    .m_size = -1,
    .m_methods = methods,
};

static int intern(PyObject **into, const char *name) {
    *into = PyUnicode_InternFromString(name);
    return *into == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__accessline(void) {
    if (intern(&n_request_id, "request_id") < 0 || intern(&n_client, "client") < 0 ||
        intern(&n_ip, "ip") < 0 || intern(&n_method, "method") < 0 ||
        intern(&n_path, "path") < 0 || intern(&n_raw_target, "raw_target") < 0 ||
        intern(&n_route, "route") < 0 || intern(&n_upstream, "upstream") < 0 ||
        intern(&n_upstream_target, "upstream_target") < 0 || intern(&n_status, "status") < 0 ||
        intern(&n_bytes_sent, "bytes_sent") < 0 || intern(&n_error, "error") < 0 ||
        intern(&n_extra, "extra") < 0)
        return NULL;
    return PyModule_Create(&module_def);
}
