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
framing is never written by this form; the Python form refuses it. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "../_buffer.h"
#define COLLECTOR_NAME "gw.upstream._wire.Collector"
#include "../_collector.h"

/* RFC 9110 token characters: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA. */
static int is_token_char(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

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

static int named(PyObject *name, const char *lower) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    if ((size_t)n != strlen(lower)) return 0;
    const unsigned char *c = CHARS(name);
    for (Py_ssize_t i = 0; i < n; i++)
        if ((c[i] >= 'A' && c[i] <= 'Z' ? c[i] + 32 : c[i]) != (unsigned char)lower[i]) return 0;
    return 1;
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
    .m_doc = "The compiled forms of gw.upstream.wire: the request head, the answer's fields.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__wire(void) { return module_with_collector(&module_def); }
