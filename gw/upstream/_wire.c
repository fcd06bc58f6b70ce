/* The compiled forms of gw.upstream.wire: the request head (``request_head``: the Python form
is ``_request_head``) and llhttp's callback for an answer's fields (``Collector``, in
gw/_collector.h: the Python form is ``Response._on_header``).

PERF: the Python form checks the target, the method, the names and the values, then joins the
lines and encodes them: about 120 bytecodes a request, and more with the regular expressions
when a list of names is new. This form makes the same bytes in one pass. It returns None for
anything but the common case, and the caller then runs the Python form, which decides and
raises exactly as before: a target with a control character or a space, a method that is not a
token, a name that is not a token, a value with CR, LF or NUL, a character beyond Latin-1, a
mapping that is not a dict of str. So the two never disagree, they only differ in who made the
bytes. ``tests/unit/test_wire_compiled.py`` compares them.

APPSEC: every value is checked here too, and a head with anything that would break the
framing is never written by this form; the Python form refuses it.

The answer's state and llhttp's other callbacks on it (``ResponseState``, the base of
``Response``: the Python forms are ``Response._message_begin``, ``_headers_complete``,
``_body`` and ``_message_complete``) are at the end, with ``take_usual``, which reads the usual
answer whole without llhttp (its Python form takes none: llhttp reads every answer).

APPSEC (``take_usual``): it reads only an answer llhttp and the callbacks read the same way
(HTTP/1.1, Content-Length framing, plain fields, no field that frames or keeps the connection,
exactly the announced body and nothing after it), and declines anything else, however
harmless, to llhttp: it never decides a framing question llhttp would decide. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <structmember.h>

#include "../_buffer.h"
#define COLLECTOR_NAME "gw.upstream._wire.Collector"
#include "../_collector.h"
#include "../_http.h"

#define CHARS(text) ((const unsigned char *)PyUnicode_1BYTE_DATA(text))

static int token(PyObject *text) {
    if (!latin1_str(text)) return 0;
    const unsigned char *c = CHARS(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n == 0) return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!is_token_char(c[i])) return 0;
    return 1;
}

/* The Python form's _BAD_TARGET: no character from NUL to space, and no DEL. */
static int sendable_target(PyObject *text) {
    if (!latin1_str(text)) return 0;
    const unsigned char *c = CHARS(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    for (Py_ssize_t i = 0; i < n; i++)
        if (c[i] <= 0x20 || c[i] == 0x7f) return 0;
    return 1;
}

/* The Python form's _breaks_framing, negated: no CR, LF or NUL. */
static int sendable_value(PyObject *text) {
    if (!latin1_str(text)) return 0;
    const char *c = (const char *)CHARS(text);
    size_t n = (size_t)PyUnicode_GET_LENGTH(text);
    return memchr(c, '\r', n) == NULL && memchr(c, '\n', n) == NULL && memchr(c, '\0', n) == NULL;
}

/* Whether ``name`` (a token, as ``token`` checked) is ``lower`` in any case. */
static int named(PyObject *name, const char *lower) {
    return same_in_any_case(CHARS(name), PyUnicode_GET_LENGTH(name), lower);
}

static int expects_body(PyObject *method) {
    return PyUnicode_CompareWithASCIIString(method, "POST") == 0 ||
           PyUnicode_CompareWithASCIIString(method, "PUT") == 0 ||
           PyUnicode_CompareWithASCIIString(method, "PATCH") == 0;
}

/* 0 with the head in ``b``; 1 when the Python form must make it; -1 with an error set. */
static int make_head(Buffer *b, PyObject *method, PyObject *target, PyObject *headers,
                     PyObject *host, int chunked, int no_body) {
    if (!token(method) || !sendable_target(target) || !latin1_str(host) ||
        !PyDict_CheckExact(headers))
        return 1;
    if (buffer_add_latin1(b, method) < 0 || buffer_add(b, " ", 1) < 0 ||
        buffer_add_latin1(b, target) < 0 || BUFFER_ADD_LITERAL(b, " HTTP/1.1\r\n") < 0)
        return -1;
    int has_host = 0, has_length = 0, has_encoding = 0;
    Py_ssize_t at = 0;
    PyObject *name, *value;
    /* No Python code runs in the loop (exact str keys and values), so the dict cannot change
       under it. */
    while (PyDict_Next(headers, &at, &name, &value)) {
        if (!token(name) || !sendable_value(value)) return 1;
        has_host = has_host || named(name, "host");
        has_length = has_length || named(name, "content-length");
        has_encoding = has_encoding || named(name, "accept-encoding");
        if (buffer_add_latin1(b, name) < 0 || buffer_add(b, ": ", 2) < 0 ||
            buffer_add_latin1(b, value) < 0 || buffer_add(b, "\r\n", 2) < 0)
            return -1;
    }
    if (!has_host && (BUFFER_ADD_LITERAL(b, "Host: ") < 0 || buffer_add_latin1(b, host) < 0 ||
                      buffer_add(b, "\r\n", 2) < 0))
        return -1;
    if (chunked) {
        if (BUFFER_ADD_LITERAL(b, "Transfer-Encoding: chunked\r\n") < 0) return -1;
    } else if (no_body && !has_length && expects_body(method)) {
        if (BUFFER_ADD_LITERAL(b, "Content-Length: 0\r\n") < 0) return -1;
    }
    if (!has_encoding && BUFFER_ADD_LITERAL(b, "Accept-Encoding: identity\r\n") < 0) return -1;
    return buffer_add(b, "\r\n", 2);
}

static PyObject *request_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "request_head(method, target, headers, host, chunked, no_body)");
        return NULL;
    }
    int chunked = PyObject_IsTrue(args[4]), no_body = PyObject_IsTrue(args[5]);
    if (chunked < 0 || no_body < 0) return NULL;
    Buffer b;
    buffer_start(&b);
    PyObject *made = NULL;
    int result = make_head(&b, args[0], args[1], args[2], args[3], chunked, no_body);
    if (result == 0) made = PyBytes_FromStringAndSize(b.data, b.size);
    else if (result == 1) made = Py_NewRef(Py_None);
    buffer_free(&b);
    return made;
}

/* -- an upstream answer's state, and llhttp's callbacks on it --------------------------------

PERF: llhttp calls four callbacks per answer (the message's begin, its head's end, each piece
of body, its end); their Python forms, with the answer's attributes set up in
``Response.__init__``, were about 200 bytecodes per proxied request. Here the state is a C
struct, exposed under the Python form's attribute names (``Response`` subclasses this type and
reads and writes them as before), and the callbacks do the usual case in C: a final answer
with status 200 to 599 and no Transfer-Encoding field, and its body. For anything else (an
interim or a 101 answer, an invalid status, a transfer coding, ...) ``on_headers_complete``
calls the Python form before changing anything, so the two never disagree; they only differ in
who did the work. ``tests/unit/test_wire_compiled.py`` compares them. */

typedef struct {
    PyObject_HEAD
    PyObject *headers; /* the answer's (name, value) fields, names in lower case */
    PyObject *chunks;  /* the body's pieces not handed on yet */
    PyObject *parser;  /* llhttp (httptools' HttpResponseParser); NULL once closed */
    PyObject *kept;    /* the Collector of the head's fields (gw/_collector.h), or None */
    PyObject *early;   /* the bytes after a 101 answer's head */
    PyObject *error;   /* the MalformedResponse a callback raised, or None */
    int status;
    int interim;       /* the interim (1xx) answers read */
    char complete;     /* the whole answer, body included, has been read */
    char head_done;    /* the final answer's head has been read */
    char until_close;  /* the body ends when the connection does */
    char keep_alive;   /* llhttp's verdict on the connection, at the answer's end */
    char extra;        /* bytes after the answer: the connection is unusable */
    char head_request; /* the answer to a HEAD request: no body */
    char upgrade;      /* gw asked to switch protocols: a 101 is a final answer */
    char switched;     /* llhttp saw a 101 that switches (Connection: upgrade) */
} ResponseState;

static PyObject *str_get_status_code, *str_should_keep_alive, *str_headers_complete,
    *str_body, *str_message_complete;

/* The Python form of the callback ``name`` (a method of the subclass), which decides. */
static PyObject *python_form(ResponseState *self, PyObject *name, PyObject *arg) {
    PyObject *args[2] = {(PyObject *)self, arg};
    return PyObject_VectorcallMethod(name, args, arg == NULL ? 1 : 2, NULL);
}

static PyObject *state_message_begin(ResponseState *self, PyObject *unused) {
    if (self->complete) self->extra = 1; /* another message after the answer */
    Py_RETURN_NONE;
}

/* The status llhttp read: 0 to 999 (three digits), or -1: the Python form decides (or an
   error is set). */
static int status_code(PyObject *parser) {
    PyObject *code = PyObject_CallMethodNoArgs(parser, str_get_status_code);
    if (code == NULL) return -1;
    int overflow = 0;
    long status = PyLong_Check(code) ? PyLong_AsLongAndOverflow(code, &overflow) : -1;
    Py_DECREF(code);
    return overflow || status < 0 || status > 999 ? -1 : (int)status;
}

static int is_name(PyObject *name, const char *lower, Py_ssize_t size) {
    return PyUnicode_IS_COMPACT_ASCII(name) && PyUnicode_GET_LENGTH(name) == size &&
           memcmp(PyUnicode_1BYTE_DATA(name), lower, (size_t)size) == 0;
}

/* Whether ``headers`` is a list of (str, value) fields without a Transfer-Encoding field (the
   Python form checks its coding); ``has_length``: with a Content-Length field. */
static int plain_fields(PyObject *headers, int *has_length) {
    if (headers == NULL || !PyList_CheckExact(headers)) return 0;
    *has_length = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *field = PyList_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2) return 0;
        PyObject *name = PyTuple_GET_ITEM(field, 0);
        if (!PyUnicode_CheckExact(name) || is_name(name, "transfer-encoding", 17)) return 0;
        *has_length = *has_length || is_name(name, "content-length", 14);
    }
    return 1;
}

/* Whether ``kept`` is what Response sets: this module's Collector, or None (a deleted
   attribute is NULL). */
static int collector_or_none(PyObject *kept) {
    return kept == Py_None || (kept != NULL && Py_IS_TYPE(kept, &CollectorType));
}

/* llhttp's verdict: 1 or 0 (the connection may carry another request or not), -1 with an
   error set. */
static int should_keep_alive(PyObject *parser) {
    PyObject *verdict = PyObject_CallMethodNoArgs(parser, str_should_keep_alive);
    if (verdict == NULL) return -1;
    int keep = PyObject_IsTrue(verdict);
    Py_DECREF(verdict);
    return keep;
}

/* The head of a final answer is done (the Python form: ``Response._headers_complete``). */
static PyObject *state_headers_complete(ResponseState *self, PyObject *unused) {
    if (self->complete) Py_RETURN_NONE; /* the head of bytes after the answer */
    if (self->parser == NULL) return python_form(self, str_headers_complete, NULL);
    int status = status_code(self->parser), has_length = 0;
    if (status < 0 && PyErr_Occurred()) return NULL;
    /* APPSEC: only a final answer with a valid status (RFC 9110 section 15) and no transfer
       coding is decided here; the Python form refuses or skips every other head, and checks
       every Transfer-Encoding field. */
    if (status < 200 || status > 599 || !plain_fields(self->headers, &has_length) ||
        !collector_or_none(self->kept))
        return python_form(self, str_headers_complete, NULL);
    int keep = self->head_request ? should_keep_alive(self->parser) : 0;
    if (keep < 0) return NULL;
    /* nothing below fails */
    self->status = status;
    self->head_done = 1;
    if (self->kept != Py_None) /* a trailer field is the Python form's (it drops them) */
        Py_SETREF(((Collector *)self->kept)->fields, Py_NewRef(Py_None));
    if (self->head_request) {
        self->complete = 1; /* a HEAD response has no body, whatever it announces */
        self->keep_alive = (char)keep;
    } else {
        self->until_close = status != 204 && status != 304 && !has_length;
    }
    Py_RETURN_NONE;
}

static PyObject *state_body(ResponseState *self, PyObject *body) {
    if (self->complete) {
        /* APPSEC: body bytes after the answer is complete (a HEAD answered with a body): the
           upstream and gw disagree on the framing, so the connection is never reused. */
        self->extra = 1;
        Py_RETURN_NONE;
    }
    if (!self->head_done) Py_RETURN_NONE; /* an interim answer's */
    if (self->chunks == NULL || !PyList_CheckExact(self->chunks))
        return python_form(self, str_body, body);
    if (PyList_Append(self->chunks, body) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *state_message_complete(ResponseState *self, PyObject *unused) {
    if (!self->head_done || self->complete) Py_RETURN_NONE;
    if (self->parser == NULL) return python_form(self, str_message_complete, NULL);
    self->complete = 1;
    int keep = should_keep_alive(self->parser); /* llhttp resets it afterwards */
    if (keep < 0) return NULL;
    self->keep_alive = (char)keep;
    Py_RETURN_NONE;
}

/* -- the usual answer, read without llhttp ------------------------------------------------ */

/* The fields of the usual answer, at most: more are llhttp's and the Python form's to count
   (and refuse over MAX_HEADERS, which is 100 too). */
#define USUAL_FIELDS 100

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* The end of the line that starts at ``p``: its CR (followed by LF), or NULL when a character
   before it is not ``is_field_text`` or the line has no CRLF in ``end``. */
static const unsigned char *line_end(const unsigned char *p, const unsigned char *end) {
    while (p < end && is_field_text(*p)) p++;
    return end - p >= 2 && p[0] == '\r' && p[1] == '\n' ? p : NULL;
}

/* A field whose presence makes the answer llhttp's: it frames the body otherwise, or decides
   whether the connection is kept (but a Connection field of ``keep-alive`` alone, in any case:
   on HTTP/1.1 llhttp then keeps the connection, as without it; Node.js sends it with every
   answer). */
static int is_framing_name(PyObject *lower) {
    return is_name(lower, "transfer-encoding", 17) || is_name(lower, "proxy-connection", 16) ||
           is_name(lower, "upgrade", 7);
}

/* The value of a Content-Length field as a count (at most 15 digits), or -1. */
static long long length_of(const unsigned char *value, Py_ssize_t size) {
    if (size < 1 || size > 15) return -1;
    long long length = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        if (!is_digit(value[i])) return -1;
        length = length * 10 + (value[i] - '0');
    }
    return length;
}

/* Read the fields from ``*at`` to the empty line into ``fields``, names from ``names``
   (bytes as sent -> lower-case str, as ``Response._on_header`` keeps them), and the body's
   Content-Length into ``*length`` (-1: none). 1: read, ``*at`` past the empty line; 0: not
   the usual head; -1: an error is set. */
static int usual_fields(const unsigned char **at, const unsigned char *end, PyObject *names,
                        PyObject *fields, long long *length) {
    const unsigned char *p = *at;
    *length = -1;
    for (int count = 0;; count++) {
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') break;
        if (count == USUAL_FIELDS) return 0;
        const unsigned char *name = p;
        while (p < end && is_token_char(*p)) p++;
        if (p == name || p == end || *p != ':') return 0; /* no space before the colon */
        Py_ssize_t name_size = p - name;
        for (p++; p < end && (*p == ' ' || *p == '\t'); p++) {}
        const unsigned char *value = p, *cr = line_end(p, end);
        /* an empty value, or one with trailing whitespace, is llhttp's to hand over */
        if (cr == NULL || cr == value || cr[-1] == ' ' || cr[-1] == '\t') return 0;
        Py_ssize_t value_size = cr - value;
        p = cr + 2;
        PyObject *raw = PyBytes_FromStringAndSize((const char *)name, name_size);
        if (raw == NULL) return -1;
        PyObject *lower = PyDict_GetItemWithError(names, raw); /* borrowed */
        Py_DECREF(raw);
        if (lower == NULL) return PyErr_Occurred() ? -1 : 0; /* a name met first: llhttp's */
        if (!PyUnicode_CheckExact(lower) || is_framing_name(lower)) return 0;
        if (is_name(lower, "connection", 10) &&
            !same_in_any_case(value, value_size, "keep-alive"))
            return 0;
        if (is_name(lower, "content-length", 14)) {
            if (*length >= 0) return 0; /* a second one: the Python form refuses or decides */
            *length = length_of(value, value_size);
            if (*length < 0) return 0;
        }
        PyObject *text = PyUnicode_DecodeLatin1((const char *)value, value_size, NULL);
        PyObject *field = text == NULL ? NULL : PyTuple_Pack(2, lower, text);
        Py_XDECREF(text);
        int appended = field == NULL ? -1 : PyList_Append(fields, field);
        Py_XDECREF(field);
        if (appended < 0) return -1;
    }
    *at = p + 2;
    return 1;
}

/* ``take_usual(data, names)``: read ``data``, the first bytes of an answer, when they are the
   usual answer whole; see the Python form, ``_PythonResponseState.take_usual``. */
static PyObject *state_take_usual(ResponseState *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "take_usual(data: bytes, names: dict)");
        return NULL;
    }
    /* only a fresh answer: nothing read, no parser, no switch asked for */
    if (self->parser != NULL || self->head_done || self->complete || self->upgrade ||
        self->interim || self->headers == NULL || !PyList_CheckExact(self->headers) ||
        PyList_GET_SIZE(self->headers) != 0 || self->chunks == NULL ||
        !PyList_CheckExact(self->chunks) || PyList_GET_SIZE(self->chunks) != 0)
        Py_RETURN_FALSE;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const unsigned char *end = p + PyBytes_GET_SIZE(args[0]);
    /* The status line: HTTP/1.1, a final status that may have a body, a reason of text. */
    if (end - p < 13 || memcmp(p, "HTTP/1.1 ", 9) != 0 || !is_digit(p[9]) || !is_digit(p[10]) ||
        !is_digit(p[11]) || p[12] != ' ')
        Py_RETURN_FALSE;
    int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (status < 200 || status > 599 || status == 204 || status == 304) Py_RETURN_FALSE;
    const unsigned char *cr = line_end(p + 13, end);
    if (cr == NULL) Py_RETURN_FALSE;
    p = cr + 2;
    PyObject *fields = PyList_New(0);
    if (fields == NULL) return NULL;
    long long length;
    int read = usual_fields(&p, end, args[1], fields, &length);
    /* The body: exactly Content-Length bytes, all here, and nothing after them (none at all
       after the head of an answer to HEAD, whose Content-Length llhttp needs all the same:
       without one it would keep the connection only until the close). */
    Py_ssize_t rest = end - p;
    if (read == 1 && (length < 0 || rest != (self->head_request ? 0 : length))) read = 0;
    PyObject *body = NULL;
    if (read == 1 && rest > 0) {
        body = PyBytes_FromStringAndSize((const char *)p, rest);
        if (body == NULL || PyList_Append(self->chunks, body) < 0) read = -1;
        Py_XDECREF(body);
    }
    if (read != 1) {
        Py_DECREF(fields);
        if (read < 0) return NULL;
        Py_RETURN_FALSE;
    }
    Py_SETREF(self->headers, fields);
    self->status = status;
    self->head_done = self->complete = self->keep_alive = 1; /* HTTP/1.1, no close */
    Py_RETURN_TRUE;
}

static PyObject *state_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    ResponseState *self = (ResponseState *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->headers = PyList_New(0);
    self->chunks = PyList_New(0);
    self->early = PyBytes_FromStringAndSize(NULL, 0);
    if (self->headers == NULL || self->chunks == NULL || self->early == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->kept = Py_NewRef(Py_None);
    self->error = Py_NewRef(Py_None);
    return (PyObject *)self;
}

/* The parser and the collector refer back to the answer (its bound methods): a cycle, which
   ``Response.close`` breaks, and the garbage collector can break too. */
static int state_traverse(ResponseState *self, visitproc visit, void *arg) {
    Py_VISIT(self->headers);
    Py_VISIT(self->chunks);
    Py_VISIT(self->parser);
    Py_VISIT(self->kept);
    Py_VISIT(self->early);
    Py_VISIT(self->error);
    return 0;
}

static int state_clear(ResponseState *self) {
    Py_CLEAR(self->headers);
    Py_CLEAR(self->chunks);
    Py_CLEAR(self->parser);
    Py_CLEAR(self->kept);
    Py_CLEAR(self->early);
    Py_CLEAR(self->error);
    return 0;
}

static void state_dealloc(ResponseState *self) {
    PyObject_GC_UnTrack(self);
    state_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define FLAG(name, member) {name, T_BOOL, offsetof(ResponseState, member), 0, NULL}
#define OBJECT(name, member) {name, T_OBJECT_EX, offsetof(ResponseState, member), 0, NULL}

static PyMemberDef state_members[] = {
    OBJECT("headers", headers),
    OBJECT("_chunks", chunks),
    OBJECT("_parser", parser),
    OBJECT("_kept", kept),
    OBJECT("early", early),
    OBJECT("_error", error),
    {"status", T_INT, offsetof(ResponseState, status), 0, NULL},
    {"_interim", T_INT, offsetof(ResponseState, interim), 0, NULL},
    FLAG("complete", complete),
    FLAG("_head_done", head_done),
    FLAG("_until_close", until_close),
    FLAG("_keep_alive", keep_alive),
    FLAG("_extra", extra),
    FLAG("_head_request", head_request),
    FLAG("_upgrade", upgrade),
    FLAG("_switched", switched),
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef state_methods[] = {
    {"on_message_begin", (PyCFunction)state_message_begin, METH_NOARGS, NULL},
    {"on_headers_complete", (PyCFunction)state_headers_complete, METH_NOARGS, NULL},
    {"on_body", (PyCFunction)state_body, METH_O, NULL},
    {"on_message_complete", (PyCFunction)state_message_complete, METH_NOARGS, NULL},
    {"take_usual", (PyCFunction)(void (*)(void))state_take_usual, METH_FASTCALL,
     "take_usual(data, names) -> bool: read the usual answer whole, without llhttp."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ResponseStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gw.upstream._wire.ResponseState",
    .tp_doc = "The state of an upstream answer being read, and llhttp's callbacks on it: the "
              "base of gw.upstream.wire.Response.",
    .tp_basicsize = sizeof(ResponseState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = state_new,
    .tp_traverse = (traverseproc)state_traverse,
    .tp_clear = (inquiry)state_clear,
    .tp_dealloc = (destructor)state_dealloc,
    .tp_members = state_members,
    .tp_methods = state_methods,
};

/* -- the module -------------------------------------------------------------------------- */

static int intern_names(void) {
    str_get_status_code = PyUnicode_InternFromString("get_status_code");
    str_should_keep_alive = PyUnicode_InternFromString("should_keep_alive");
    str_headers_complete = PyUnicode_InternFromString("_headers_complete");
    str_body = PyUnicode_InternFromString("_body");
    str_message_complete = PyUnicode_InternFromString("_message_complete");
    return str_get_status_code && str_should_keep_alive && str_headers_complete && str_body &&
                   str_message_complete
               ? 0
               : -1;
}

static PyMethodDef methods[] = {
    {"request_head", (PyCFunction)(void (*)(void))request_head, METH_FASTCALL,
     "request_head(method, target, headers, host, chunked, no_body) -> bytes | None: the "
     "request line and fields as gw.upstream.wire writes them, or None when its Python form "
     "must make (or refuse) them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.upstream._wire",
    .m_doc = "The compiled forms of gw.upstream.wire: the request head, the answer's fields, "
             "its state and llhttp's callbacks on it.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    if (intern_names() < 0 || PyType_Ready(&ResponseStateType) < 0) return NULL;
    PyObject *module = module_with_collector(&module_def);
    if (module != NULL &&
        PyModule_AddObjectRef(module, "ResponseState", (PyObject *)&ResponseStateType) < 0)
        Py_CLEAR(module);
    return module;
}
