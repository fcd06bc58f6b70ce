/* The compiled form of gw.observe.accesslog's access line (``_line``): the same text, in C.

PERF: the Python form costs about 22,900 instructions for a full pipeline's line (Debian's
python3), most of them in the f-string's pieces and the calls that escape them; this form, about
7,700 (4,200 with the shortcuts marked PERF below), reads the same attributes and copies the
same ASCII text into one buffer; ``lines`` makes a whole batch's. ``line`` returns None for
anything it does not expect (a value of another type, a piece of text that is not ASCII, a
stage's field named like a base field), and the caller then makes the line with the Python
form: the two forms never disagree, they only differ in who made the text.
``tests/unit/test_accesslog_compiled.py`` compares them.

APPSEC: every value a client or an upstream chooses (the request id, the path, the client
address, the error, a stage's field) is escaped exactly as ``json.encoder``'s own
``encode_basestring_ascii`` escapes it: printable ASCII without a quote or a backslash is
copied, anything else is handed to that function. A line can never be split or given a field
by what it reports. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../_buffer.h"
#include "../_slots.h"

/* What accesslog hands over (``configure``): its table of escaped repeating values, the
   function that fills it, the two JSON encoders, the set of the base field names and the
   function that writes a second's time (``_formatted``). */
static PyObject *quoted_table, *quote, *encode_str, *encode_any, *base_fields, *formatted;

/* The attribute names of an Exchange (and of its client), interned once. */
static PyObject *n_request_id, *n_client, *n_ip, *n_method, *n_path, *n_raw_target, *n_route,
    *n_upstream, *n_upstream_target, *n_status, *n_bytes_sent, *n_error, *n_extra, *n_started,
    *n_ended;

/* An Exchange's fields, read at their slots' offsets (gw/_slots.h). */
enum { F_REQUEST_ID, F_CLIENT, F_METHOD, F_PATH, F_RAW_TARGET, F_ROUTE, F_UPSTREAM,
       F_UPSTREAM_TARGET, F_STATUS, F_BYTES_SENT, F_ERROR, F_EXTRA, F_STARTED, F_ENDED, FIELDS };
static PyObject **field_names[FIELDS] = {
    &n_request_id, &n_client, &n_method, &n_path, &n_raw_target, &n_route, &n_upstream,
    &n_upstream_target, &n_status, &n_bytes_sent, &n_error, &n_extra, &n_started, &n_ended,
};
static Py_ssize_t field_offsets[FIELDS];
static Slots exchange_slots = {NULL, 0, 0, FIELDS, field_names, field_offsets};

/* Field ``field`` of ``exchange`` (a new reference), or NULL with an exception set. */
static inline PyObject *field_of(PyObject *exchange, int field) {
    return slot_get(&exchange_slots, exchange, field);
}

/* The results of the steps below: done, failed (an exception is set), or not for this form
   (the Python form makes the line). */
enum { DONE = 0, FAILED = -1, NOT_HERE = 1 };

/* Add ``text``, which must be a str of ASCII only (JSON text made by the encoders, or gw's own
   timestamp). */
static int add_ascii(Buffer *t, PyObject *text) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)) return NOT_HERE;
    return buffer_add(t, (const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text));
}

/* Whether any byte of ``word`` is below ``n`` (n <= 128, every byte of ``word`` below 128):
   the subtraction borrows from, and so sets the top bit of, exactly the bytes below n, and a
   byte above one of those. Never a false "no". */
#define ANY_BELOW(word, n) \
    (((word) - 0x0101010101010101ULL * (n)) & ~(word) & 0x8080808080808080ULL)
/* Whether any byte of ``word`` is ``byte``. */
#define ANY_EQUAL(word, byte) ANY_BELOW((word) ^ (0x0101010101010101ULL * (byte)), 1)

/* Whether ``json.encoder.encode_basestring_ascii`` leaves every character of ``text`` as it
   is: printable ASCII, no quote, no backslash (its own test, S_CHAR).

   PERF: eight bytes at a time, with the tests above (a tenth of the instructions of a byte at a
   time for a line's strings); ``tests/unit/test_accesslog_compiled.py`` puts each escaped
   character at each place of a word. */
static int needs_no_escape(PyObject *text) {
    if (!PyUnicode_IS_ASCII(text)) return 0; /* every byte below 128 from here on */
    const unsigned char *c = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, c + i, 8);
        if (ANY_BELOW(word, ' ') | ANY_EQUAL(word, 0x7f) | ANY_EQUAL(word, '"') |
            ANY_EQUAL(word, '\\'))
            return 0;
    }
    for (; i < n; i++) {
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

/* Write the decimal digits of ``magnitude`` backwards, ending just before ``end``; return
   where they start. PERF: by hand, not snprintf (which costs more than the rest of the line's
   numbers together). */
static char *decimal(char *end, unsigned long long magnitude) {
    do {
        *--end = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    return end;
}

/* Add the decimal text of an int (``int(value)`` in the Python form). */
static int add_int(Buffer *t, PyObject *value) {
    if (!PyLong_Check(value)) return NOT_HERE;
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) return NOT_HERE;
    if (number == -1 && PyErr_Occurred()) return FAILED;
    /* unsigned, so that the most negative number has its magnitude too */
    char digits[24];
    char *end = digits + sizeof digits;
    char *at = decimal(end, number < 0 ? 0ULL - (unsigned long long)number
                                       : (unsigned long long)number);
    if (number < 0) *--at = '-';
    return buffer_add(t, at, end - at);
}

/* Add ``ms`` as ``f"{ms:.3f}"`` writes it (the same routine under the format). */
static int add_milliseconds(Buffer *t, double ms) {
    /* PERF: a duration below 1,000 s is written from its whole microseconds, without the
       correctly rounded conversion (about 600 instructions). The product below is within
       2**-23 of the exact one (it is below 2**30), so the nearest whole number to either is
       the same unless the product is within a millionth of a half; there, and for a negative,
       huge, infinite or NaN value, the conversion decides. */
    if (ms >= 0.0 && ms < 1e6 && !signbit(ms)) {
        double scaled = ms * 1000.0, whole = floor(scaled), fraction = scaled - whole;
        if (fabs(fraction - 0.5) > 1e-6) {
            unsigned long micros = (unsigned long)whole + (fraction > 0.5);
            char digits[24];
            char *end = digits + sizeof digits, *at = end;
            for (int place = 0; place < 3; place++, micros /= 10) *--at = (char)('0' + micros % 10);
            *--at = '.';
            at = decimal(at, micros);
            return buffer_add(t, at, end - at);
        }
    }
    char *digits = PyOS_double_to_string(ms, 'f', 3, 0, NULL);
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

/* Read field ``field`` of ``exchange`` into ``into`` (a new reference), or end the line. */
#define READ(into, exchange, field)       \
    do {                                  \
        into = field_of(exchange, field); \
        if (into == NULL) {               \
            result = FAILED;              \
            goto end;                     \
        }                                 \
    } while (0)

static int add_path(Buffer *t, PyObject *exchange) {
    PyObject *path = field_of(exchange, F_PATH);
    if (path == NULL) return FAILED;
    int truth = PyObject_IsTrue(path);
    int result = FAILED;
    if (truth > 0) {
        result = add_string(t, path);
    } else if (truth == 0) {
        PyObject *raw = field_of(exchange, F_RAW_TARGET);
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

/* The stages' fields, in the order they were set (a dict's order): ``,"name":value``; NOT_HERE
   when one has a base field's name (the Python form lets it win). */
static int add_extra(Buffer *t, PyObject *extra) {
    PyObject *name, *value;
    Py_ssize_t at = 0;
    while (PyDict_Next(extra, &at, &name, &value)) { /* borrowed */
        int result = PySet_Contains(base_fields, name);
        if (result != 0) return result < 0 ? FAILED : NOT_HERE;
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

/* Add the access line of ``exchange`` (``_line``'s text). */
static int add_line(Buffer *t, PyObject *exchange, PyObject *when, double duration_ms,
                    PyObject *worker) {
    PyObject *extra = NULL, *value = NULL;
    int result = DONE;
    READ(extra, exchange, F_EXTRA);
    if (!PyDict_CheckExact(extra)) {
        result = NOT_HERE;
        goto end;
    }
    STEP(BUFFER_ADD_LITERAL(t, "{\"time\":\""));
    STEP(add_ascii(t, when));
    STEP(BUFFER_ADD_LITERAL(t, "\",\"request_id\":"));
    READ(value, exchange, F_REQUEST_ID);
    STEP(add_string(t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(t, ",\"client\":"));
    READ(value, exchange, F_CLIENT);
    STEP(add_client(t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(t, ",\"method\":"));
    READ(value, exchange, F_METHOD);
    STEP(add_known(t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(t, ",\"path\":"));
    STEP(add_path(t, exchange));
    STEP(BUFFER_ADD_LITERAL(t, ",\"route\":"));
    READ(value, exchange, F_ROUTE);
    STEP(add_known(t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(t, ",\"upstream\":"));
    READ(value, exchange, F_UPSTREAM);
    STEP(add_known(t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(t, ",\"target\":"));
    READ(value, exchange, F_UPSTREAM_TARGET);
    STEP(add_known(t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(t, ",\"status\":"));
    READ(value, exchange, F_STATUS);
    STEP(add_int(t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(t, ",\"bytes\":"));
    READ(value, exchange, F_BYTES_SENT);
    STEP(add_int(t, value));
    Py_CLEAR(value);
    STEP(BUFFER_ADD_LITERAL(t, ",\"duration_ms\":"));
    STEP(add_milliseconds(t, duration_ms));
    STEP(BUFFER_ADD_LITERAL(t, ",\"worker\":"));
    STEP(add_int(t, worker));
    READ(value, exchange, F_ERROR);
    int error = PyObject_IsTrue(value);
    if (error < 0) {
        result = FAILED;
        goto end;
    }
    if (error) {
        STEP(BUFFER_ADD_LITERAL(t, ",\"error\":"));
        STEP(add_string(t, value));
    }
    Py_CLEAR(value);
    STEP(add_extra(t, extra));
    STEP(BUFFER_ADD_LITERAL(t, "}\n"));

end:
    Py_XDECREF(value);
    Py_XDECREF(extra);
    return result;
}

/* ``text``, made by the step whose result is ``result``, as the str the caller returns: None
   when the Python form must make it, NULL when it failed. */
static PyObject *made_text(Buffer *t, int result) {
    if (result == NOT_HERE) return Py_NewRef(Py_None);
    if (result != DONE) return NULL;
    PyObject *made = PyUnicode_New(t->size, 127);
    if (made != NULL) memcpy(PyUnicode_1BYTE_DATA(made), t->data, (size_t)t->size);
    return made;
}

static int configured(void) {
    if (quoted_table != NULL) return 1;
    PyErr_SetString(PyExc_RuntimeError, "gw.observe._accessline is not configured");
    return 0;
}

static PyObject *line(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "line(exchange, when, duration_ms, worker)");
        return NULL;
    }
    if (!configured()) return NULL;
    int result = NOT_HERE;
    Buffer t;
    buffer_start(&t);
    if (PyFloat_Check(args[2]))
        result = add_line(&t, args[0], args[1], PyFloat_AS_DOUBLE(args[2]), args[3]);
    PyObject *made = made_text(&t, result);
    buffer_free(&t);
    return made;
}

/* Field ``field`` of ``exchange``, a float, into ``into``: DONE, or NOT_HERE for anything
   else (an error is cleared: the Python form meets it again). */
static int read_float(PyObject *exchange, int field, double *into) {
    PyObject *value = field_of(exchange, field);
    if (value == NULL) {
        PyErr_Clear();
        return NOT_HERE;
    }
    int result = PyFloat_CheckExact(value) ? DONE : NOT_HERE;
    if (result == DONE) *into = PyFloat_AS_DOUBLE(value);
    Py_DECREF(value);
    return result;
}

/* The text of ``when`` for the moment ``moment`` (``_formatted(int(moment))``), reusing
   ``*when`` while the second is ``*second``: DONE, NOT_HERE or FAILED. */
static int time_of(double moment, long long *second, PyObject **when) {
    if (!(moment >= 0.0 && moment < 1e15)) return NOT_HERE; /* int() of the rest: Python's */
    long long now = (long long)moment;                       /* truncated, as int() does */
    if (*when != NULL && now == *second) return DONE;
    PyObject *number = PyLong_FromLongLong(now);
    if (number == NULL) return FAILED;
    PyObject *text = PyObject_CallOneArg(formatted, number);
    Py_DECREF(number);
    if (text == NULL) return FAILED;
    Py_XSETREF(*when, text);
    *second = now;
    return DONE;
}

/* Add the line of one finished ``exchange`` of a batch (``_python_line``'s text): DONE,
   NOT_HERE or FAILED. */
static int add_finished(Buffer *t, PyObject *exchange, double wall, long long *second,
                        PyObject **when, PyObject *worker) {
    double ended = 0.0, started = 0.0;
    int result = read_float(exchange, F_ENDED, &ended);
    if (result == DONE) result = read_float(exchange, F_STARTED, &started);
    if (result == DONE) result = time_of(ended + wall, second, when);
    if (result == DONE) result = add_line(t, exchange, *when, (ended - started) * 1000.0, worker);
    return result;
}

/* Add what the Python form made of ``exchange`` (``fallback(exchange, wall, worker)``). */
static int add_from_python(Buffer *t, PyObject *fallback, PyObject *exchange, PyObject *wall,
                           PyObject *worker) {
    PyObject *call[3] = {exchange, wall, worker};
    PyObject *made = PyObject_Vectorcall(fallback, call, 3, NULL);
    if (made == NULL) return FAILED;
    Py_ssize_t size;
    const char *text = PyUnicode_Check(made) ? PyUnicode_AsUTF8AndSize(made, &size) : NULL;
    if (text == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "an access line must be a str");
    int result = text == NULL ? FAILED : buffer_add(t, text, size);
    Py_DECREF(made);
    return result;
}

/* ``lines(batch, wall, worker, fallback)``: the access lines of a batch of finished
   exchanges, in order, as the bytes to write (``accesslog._python_lines`` makes the same).
   Every exchange this form declines, or fails on, is handed to ``fallback``, the Python form
   of one line, which logs a line it cannot make and gives "" for it.

   PERF: no Python step per line and no joining and encoding of the lines afterwards. */
static PyObject *lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyFloat_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "lines(batch: list, wall: float, worker, fallback)");
        return NULL;
    }
    if (!configured()) return NULL;
    PyObject *batch = args[0], *worker = args[2], *fallback = args[3];
    double wall = PyFloat_AS_DOUBLE(args[1]);
    PyObject *when = NULL, *made = NULL;
    long long second = 0;
    Buffer t;
    buffer_start(&t);
    /* PERF: room for the usual line at once, not grown by doubling from the first 2 KiB */
    Py_ssize_t room = PyList_GET_SIZE(batch) * 512;
    if (room > t.room && buffer_grow(&t, room) < 0) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(batch); i++) {
        PyObject *exchange = Py_NewRef(PyList_GET_ITEM(batch, i));
        Py_ssize_t start = t.size;
        int result = add_finished(&t, exchange, wall, &second, &when, worker);
        if (result != DONE) {
            if (result == FAILED) PyErr_Clear(); /* the Python form meets it again */
            t.size = start;
            result = add_from_python(&t, fallback, exchange, args[1], worker);
        }
        Py_DECREF(exchange);
        if (result != DONE) goto end;
    }
    made = PyBytes_FromStringAndSize(t.data, t.size);
end:
    Py_XDECREF(when);
    buffer_free(&t);
    return made;
}

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *table, *quote_, *str_, *any_, *base, *formatted_, *type;
    if (!PyArg_ParseTuple(args, "O!OOOO!OO!:configure", &PyDict_Type, &table, &quote_, &str_,
                          &any_, &PyFrozenSet_Type, &base, &formatted_, &PyType_Type, &type))
        return NULL;
    Py_XSETREF(quoted_table, Py_NewRef(table));
    Py_XSETREF(quote, Py_NewRef(quote_));
    Py_XSETREF(encode_str, Py_NewRef(str_));
    Py_XSETREF(encode_any, Py_NewRef(any_));
    Py_XSETREF(base_fields, Py_NewRef(base));
    Py_XSETREF(formatted, Py_NewRef(formatted_));
    slots_of(&exchange_slots, (PyTypeObject *)type);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"line", (PyCFunction)(void (*)(void))line, METH_FASTCALL,
     "line(exchange, when, duration_ms, worker) -> str | None: the access line of exchange, "
     "or None when the Python form must make it."},
    {"lines", (PyCFunction)(void (*)(void))lines, METH_FASTCALL,
     "lines(batch, wall, worker, fallback) -> bytes: the access lines of a batch of finished "
     "exchanges, fallback(exchange, wall, worker) making those this form does not."},
    {"configure", configure, METH_VARARGS,
     "configure(quoted_table, quote, encode_str, encode_any, base_fields, formatted, "
     "exchange_type): what line and lines use."},
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
        intern(&n_extra, "extra") < 0 || intern(&n_started, "started") < 0 ||
        intern(&n_ended, "ended") < 0)
        return NULL;
    return PyModule_Create(&module_def);
}
