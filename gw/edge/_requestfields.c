/* The compiled forms of the edge's passes over a request's head:

- ``Collector`` (gw/_collector.h): llhttp's ``on_header`` callback, which keeps each field of
  a request's head as bytes (``Connection.on_header`` in gw/edge/connection.py);
- ``Callbacks``: llhttp's other callbacks for a request (``Connection.on_message_begin``,
  ``on_url``, ``on_headers_complete``, ``on_message_complete``), bound C methods of one object
  per connection, which make and fill a ``Message`` (``gw.edge.request.Message`` in C, with
  the same attribute names), and their ``take``, which reads the usual request whole without
  llhttp (``Connection._take``; APPSEC: only a request llhttp and the callbacks read the same
  way, within every limit, with no field llhttp reads itself, and only between two requests;
  anything else, and every refusal, is llhttp's and the Python forms');
- ``environ``: ``build_environ`` (gw/edge/environ.py), which makes a request's WSGI environ:
  its fields as the environ's keys and the pipeline's ``Headers``, and its target, method and
  protocol.

PERF: the Python forms cost about 50 bytecodes per field for the callback and 40 for the loop,
for every field of every request, about a hundred more for the rest of the environ and the
``Headers``, and about 170 for the other callbacks and the ``Message``. These forms do the
common case in C and hand everything else to the Python form, which decides and refuses
exactly as before: the collector calls it for a field over the size limit, a field past the
count limit, a name of Transfer-Encoding's length and a trailer field; the callbacks call
theirs, having set nothing, for a target over the request line's limit and for any head but
the usual one (version 1.1 or 1.0, no upgrade, no field of Transfer-Encoding's length on 1.0,
the request line within its limit); ``environ`` returns None for a repeated field (joined, or
refused for Host and Content-Type) and for anything not of the types it expects, and the
caller then starts over with the Python form. So the two never disagree, they only differ in
who did the work. An absolute-form target's path and a path with an escape or beyond ASCII are
made by the Python form's own functions. ``tests/unit/test_edge_request_compiled.py`` compares
them.

APPSEC: nothing here decides what is refused or trusted: every limit is checked before a field
is kept, every head the callbacks do not take as usual is the Python form's to refuse, and the
names come from the table the Python form's own ``_environ_names`` fills (a name not in it
yet is left to the Python form; a name with an underscore has no environ key and is dropped,
as there). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define COLLECTOR_NAME "gw.edge._requestfields.Collector"
#include "../_collector.h"
#include "../_http.h"

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
    PyObject *named = PyDict_GetItemWithError(names, raw_name);
    if (named == NULL) return PyErr_Occurred() ? FAILED : NOT_HERE; /* a name met first here */
    Py_INCREF(named);
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
    /* The list is read afresh, and each field held, at every step (the names table holds
       only bytes keys, so no lookup runs Python code; this stays safe if one ever did). */
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
    PyObject *made_of[2] = {pairs, by_name};
    PyObject *headers = PyObject_Vectorcall(given.headers_type, made_of, 2, NULL);
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
    if (!PyDict_CheckExact(base) || !PyList_CheckExact(headers) || !PyDict_CheckExact(names) ||
        !PyBytes_CheckExact(url) ||
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

/* -- Message: one request as llhttp reports it ---------------------------------------------- */

/* gw.edge.request.Message in C, with the same attribute names: the compiled on_message_begin
   makes one per request, and the compiled callbacks below read and set it directly. */
typedef struct {
    PyObject_HEAD
    PyObject *url, *headers, *head_done, *chunks, *complete, *keep_alive, *method, *version,
        *upgrade, *body_bytes, *chunk_count, *framing_bytes;
} RequestMessage;

static PyTypeObject MessageType;

/* What a new message holds, as the Python class's __init__ sets it. */
static PyObject *deque_type, *empty_bytes, *zero, *method_get, *version_11, *version_10;

static PyObject *new_message(void) {
    PyObject *headers = PyList_New(0);
    PyObject *chunks = headers == NULL ? NULL : PyObject_CallNoArgs(deque_type);
    RequestMessage *self =
        chunks == NULL ? NULL : (RequestMessage *)MessageType.tp_alloc(&MessageType, 0);
    if (self == NULL) {
        Py_XDECREF(chunks);
        Py_XDECREF(headers);
        return NULL;
    }
    self->url = Py_NewRef(empty_bytes);
    self->headers = headers;
    self->head_done = Py_NewRef(Py_False);
    self->chunks = chunks;
    self->complete = Py_NewRef(Py_False);
    self->keep_alive = Py_NewRef(Py_False);
    self->method = Py_NewRef(method_get);
    self->version = Py_NewRef(version_11);
    self->upgrade = Py_NewRef(Py_False);
    self->body_bytes = Py_NewRef(zero);
    self->chunk_count = Py_NewRef(zero);
    self->framing_bytes = Py_NewRef(zero);
    return (PyObject *)self;
}

static PyObject *message_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Message", keywords)) return NULL;
    return new_message();
}

static int message_traverse(RequestMessage *self, visitproc visit, void *arg) {
    Py_VISIT(self->url);
    Py_VISIT(self->headers);
    Py_VISIT(self->head_done);
    Py_VISIT(self->chunks);
    Py_VISIT(self->complete);
    Py_VISIT(self->keep_alive);
    Py_VISIT(self->method);
    Py_VISIT(self->version);
    Py_VISIT(self->upgrade);
    Py_VISIT(self->body_bytes);
    Py_VISIT(self->chunk_count);
    Py_VISIT(self->framing_bytes);
    return 0;
}

static int message_clear(RequestMessage *self) {
    Py_CLEAR(self->url);
    Py_CLEAR(self->headers);
    Py_CLEAR(self->head_done);
    Py_CLEAR(self->chunks);
    Py_CLEAR(self->complete);
    Py_CLEAR(self->keep_alive);
    Py_CLEAR(self->method);
    Py_CLEAR(self->version);
    Py_CLEAR(self->upgrade);
    Py_CLEAR(self->body_bytes);
    Py_CLEAR(self->chunk_count);
    Py_CLEAR(self->framing_bytes);
    return 0;
}

static void message_dealloc(RequestMessage *self) {
    PyObject_GC_UnTrack(self);
    message_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* T_OBJECT_EX: a deleted attribute raises AttributeError when read, as a slot does. */
#define MESSAGE_MEMBER(name, doc) {#name, T_OBJECT_EX, offsetof(RequestMessage, name), 0, doc}

static PyMemberDef message_members[] = {
    MESSAGE_MEMBER(url, "the request target as received (bytes)"),
    MESSAGE_MEMBER(headers, "the head's fields: (name, value) bytes pairs"),
    MESSAGE_MEMBER(head_done, "whether the head is parsed"),
    MESSAGE_MEMBER(chunks, "body pieces parsed and not yet read (a deque)"),
    MESSAGE_MEMBER(complete, "whether the whole request is parsed"),
    MESSAGE_MEMBER(keep_alive, "whether the client lets the connection go on"),
    MESSAGE_MEMBER(method, "the method (str)"),
    MESSAGE_MEMBER(version, "the version answered: \"1.1\" or \"1.0\""),
    MESSAGE_MEMBER(upgrade, "whether llhttp hands what follows the head over (Upgrade, CONNECT)"),
    MESSAGE_MEMBER(body_bytes, "body bytes parsed so far"),
    MESSAGE_MEMBER(chunk_count, "chunks parsed so far"),
    MESSAGE_MEMBER(framing_bytes, "bytes read while in the body: data and chunk framing"),
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject MessageType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gw.edge._requestfields.Message",
    .tp_doc = "Message(): gw.edge.request.Message in C: one request as llhttp reports it.",
    .tp_basicsize = sizeof(RequestMessage),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = message_new,
    .tp_traverse = (traverseproc)message_traverse,
    .tp_clear = (inquiry)message_clear,
    .tp_dealloc = (destructor)message_dealloc,
    .tp_members = message_members,
};

/* -- Callbacks: llhttp's callbacks for one connection's requests ---------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *conn;          /* the Connection: its _parsing, _parser and _last_request */
    PyObject *append;        /* the append of its deque of messages */
    PyObject *kept;          /* its collector, whose ``fields`` the head's fields go to */
    Py_ssize_t request_line; /* limits.request_line */
    Py_ssize_t field_size;   /* limits.field_size: one "Name: value" line and its CRLF */
    Py_ssize_t fields;       /* limits.fields */
    PyObject *python_url, *python_headers_complete, *python_message_complete; /* the judges */
} Callbacks;

static PyObject *attr_parsing, *attr_parser, *attr_last_request, *attr_fields, *get_method,
    *get_http_version, *should_keep_alive, *should_upgrade;

/* Whether the garbage collector has cleared the callbacks (then never called again): an error
   is set. */
static int cleared(Callbacks *self) {
    if (self->conn != NULL) return 0;
    PyErr_SetString(PyExc_RuntimeError, "cleared Callbacks were called");
    return 1;
}

/* The message llhttp is parsing (conn._parsing): a new reference, or NULL with an error set. */
static PyObject *parsing(Callbacks *self) {
    return cleared(self) ? NULL : PyObject_GetAttr(self->conn, attr_parsing);
}

/* The compiled message, or NULL (no error) when ``message`` is another object: the Python
   forms' then. */
static RequestMessage *compiled(PyObject *message) {
    return Py_IS_TYPE(message, &MessageType) ? (RequestMessage *)message : NULL;
}

/* kept.fields = fields. */
static int set_kept_fields(Callbacks *self, PyObject *fields) {
    if (!Py_IS_TYPE(self->kept, &CollectorType))
        return PyObject_SetAttr(self->kept, attr_fields, fields);
    Py_XSETREF(((Collector *)self->kept)->fields, Py_NewRef(fields));
    return 0;
}

/* Connection.on_message_begin, all of it: nothing in it is ever declined. */
static PyObject *on_message_begin(Callbacks *self, PyObject *unused) {
    if (cleared(self)) return NULL;
    PyObject *message = new_message();
    if (message == NULL) return NULL;
    PyObject *appended = NULL;
    int failed = PyObject_SetAttr(self->conn, attr_parsing, message) < 0 ||
                 (appended = PyObject_CallOneArg(self->append, message)) == NULL ||
                 set_kept_fields(self, ((RequestMessage *)message)->headers) < 0;
    Py_XDECREF(appended);
    Py_DECREF(message);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

/* Connection.on_url: the piece added to the target while within the request line's limit;
   reaching it is the Python form's (414). */
static PyObject *on_url(Callbacks *self, PyObject *piece) {
    PyObject *message = parsing(self);
    if (message == NULL) return NULL;
    RequestMessage *known = compiled(message);
    PyObject *url = known == NULL ? NULL : known->url;
    PyObject *result = NULL;
    if (url != NULL && PyBytes_CheckExact(url) && PyBytes_CheckExact(piece) &&
        PyBytes_GET_SIZE(url) + PyBytes_GET_SIZE(piece) <= self->request_line) {
        PyObject *longer = PySequence_Concat(url, piece);
        if (longer != NULL) {
            Py_SETREF(known->url, longer);
            result = Py_NewRef(Py_None);
        }
    } else {
        result = PyObject_CallOneArg(self->python_url, piece);
    }
    Py_DECREF(message);
    return result;
}

/* -- Callbacks: the end of the head --------------------------------------------------------- */

/* What the compiled on_headers_complete sets: the usual head's method, version, keep_alive. */
typedef struct {
    PyObject *method;     /* a new reference */
    PyObject *version;    /* version_11 or version_10, borrowed */
    PyObject *keep_alive; /* Py_True or Py_False, borrowed */
} Head;

/* The parser's answer to one of its getters: a new reference, or NULL with an error set. */
static PyObject *ask(PyObject *parser, PyObject *getter) {
    return PyObject_CallMethodNoArgs(parser, getter);
}

/* The served version of llhttp's (gw.edge.request.served_version), or NULL (no error) for a
   version other than 1.1 and 1.0: the Python form's (1.x served as 1.1, others refused). */
static PyObject *served(PyObject *version) {
    if (!PyUnicode_CheckExact(version)) return NULL;
    if (PyUnicode_CompareWithASCIIString(version, "1.1") == 0) return version_11;
    if (PyUnicode_CompareWithASCIIString(version, "1.0") == 0) return version_10;
    return NULL;
}

enum { SAYS_NO = 0, SAYS_YES = 2, SAYS_NOT_A_BOOL = 3 }; /* or FAILED */

/* What llhttp says of this head, asked with one of its bool getters. */
static int parser_says(PyObject *parser, PyObject *getter) {
    PyObject *answer = ask(parser, getter);
    if (answer == NULL) return FAILED;
    int said = answer == Py_True ? SAYS_YES : answer == Py_False ? SAYS_NO : SAYS_NOT_A_BOOL;
    Py_DECREF(answer);
    return said;
}

/* Whether a field is named with Transfer-Encoding's length (17): on HTTP/1.0 the Python form
   decides it (APPSEC: Transfer-Encoding is refused there). */
static int has_name_of_length_17(PyObject *headers) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *field = PyList_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(field, 0)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(field, 0)) == 17)
            return 1;
    }
    return 0;
}

/* The method as a str, when llhttp's name of it is ASCII bytes; NULL (no error) when not. */
static PyObject *method_of(PyObject *name) {
    if (!PyBytes_CheckExact(name)) return NULL;
    const char *bytes = PyBytes_AS_STRING(name);
    for (Py_ssize_t i = 0; i < PyBytes_GET_SIZE(name); i++)
        if ((unsigned char)bytes[i] >= 0x80) return NULL;
    return PyUnicode_DecodeASCII(bytes, PyBytes_GET_SIZE(name), NULL);
}

/* Read the head from llhttp when it is the usual one: version 1.1 or 1.0, no upgrade, no
   Transfer-Encoding on 1.0, the request line within its limit. DONE (``head`` filled),
   NOT_HERE or FAILED; nothing is set on the message either way. */
static int usual_head(Callbacks *self, RequestMessage *message, PyObject *parser, Head *head) {
    PyObject *version = ask(parser, get_http_version);
    if (version == NULL) return FAILED;
    head->version = served(version);
    Py_DECREF(version);
    if (head->version == NULL) return NOT_HERE;
    int upgrade = parser_says(parser, should_upgrade);
    if (upgrade != SAYS_NO) return upgrade == FAILED ? FAILED : NOT_HERE; /* check_upgrade's */
    if (message->url == NULL || !PyBytes_CheckExact(message->url) || message->headers == NULL ||
        !PyList_CheckExact(message->headers))
        return NOT_HERE;
    if (head->version == version_10 && has_name_of_length_17(message->headers)) return NOT_HERE;
    int keep_alive = parser_says(parser, should_keep_alive);
    if (keep_alive == FAILED || keep_alive == SAYS_NOT_A_BOOL)
        return keep_alive == FAILED ? FAILED : NOT_HERE;
    head->keep_alive = keep_alive == SAYS_YES ? Py_True : Py_False;
    PyObject *name = ask(parser, get_method);
    if (name == NULL) return FAILED;
    head->method = method_of(name);
    Py_DECREF(name);
    if (head->method == NULL) return PyErr_Occurred() ? FAILED : NOT_HERE;
    /* the request line as gunicorn counts it: method, target, " HTTP/1.1" and a CR */
    Py_ssize_t line = PyUnicode_GET_LENGTH(head->method) + PyBytes_GET_SIZE(message->url) + 10;
    if (line <= self->request_line) return DONE;
    Py_CLEAR(head->method);
    return NOT_HERE; /* 414: the Python form's RequestRefused */
}

/* Connection.on_headers_complete for the usual head; any other is the Python form's, which
   checks and refuses as before (nothing set here first). */
static PyObject *on_headers_complete(Callbacks *self, PyObject *unused) {
    PyObject *message = parsing(self);
    if (message == NULL) return NULL;
    RequestMessage *known = compiled(message);
    PyObject *parser = known == NULL ? NULL : PyObject_GetAttr(self->conn, attr_parser);
    Head head = {NULL, NULL, NULL};
    int found = known == NULL ? NOT_HERE : parser == NULL ? FAILED
                                                         : usual_head(self, known, parser, &head);
    Py_XDECREF(parser);
    PyObject *result = NULL;
    if (found == DONE) {
        Py_XSETREF(known->method, head.method);
        Py_XSETREF(known->version, Py_NewRef(head.version));
        Py_XSETREF(known->keep_alive, Py_NewRef(head.keep_alive));
        Py_XSETREF(known->upgrade, Py_NewRef(Py_False));
        Py_XSETREF(known->head_done, Py_NewRef(Py_True));
        /* a trailer field is on_header's */
        result = set_kept_fields(self, Py_None) < 0 ? NULL : Py_NewRef(Py_None);
    } else if (found == NOT_HERE) {
        result = PyObject_CallNoArgs(self->python_headers_complete);
    }
    Py_DECREF(message);
    return result;
}

/* Connection.on_message_complete, when the message says keep_alive with a bool. */
static PyObject *on_message_complete(Callbacks *self, PyObject *unused) {
    PyObject *message = parsing(self);
    if (message == NULL) return NULL;
    RequestMessage *known = compiled(message);
    PyObject *keep_alive = known == NULL ? NULL : known->keep_alive;
    PyObject *result = NULL;
    if (keep_alive == Py_True || keep_alive == Py_False) {
        Py_XSETREF(known->complete, Py_NewRef(Py_True));
        if (keep_alive == Py_True || PyObject_SetAttr(self->conn, attr_last_request, Py_True) == 0)
            result = Py_NewRef(Py_None);
    } else {
        result = PyObject_CallNoArgs(self->python_message_complete);
    }
    Py_DECREF(message);
    return result;
}

/* -- Callbacks: the usual request, read without llhttp ---------------------------------------- */

/* A character of an origin-form target as taken here: RFC 3986's unreserved and reserved
   characters (but '#', '[' and ']') and '%': nothing llhttp could read another way. */
static int is_target_char(unsigned char c) {
    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return 1;
    switch (c) { /* PERF: a bit test, not strchr (a call for every '/') */
    case '-': case '.': case '_': case '~': case '!': case '$': case '&': case '\'':
    case '(': case ')': case '*': case '+': case ',': case ';': case '=': case ':':
    case '@': case '/': case '?': case '%':
        return 1;
    default:
        return 0;
    }
}

/* A field llhttp reads itself (it frames the body or decides what the connection does next):
   the request is then llhttp's, but for ``Connection: keep-alive`` alone, which on HTTP/1.1
   changes nothing llhttp decides (browsers and many clients send it with every request). */
static int llhttp_reads(const unsigned char *name, Py_ssize_t size) {
    static const char *const read_by_llhttp[] = {"connection", "content-length",
                                                 "proxy-connection", "transfer-encoding",
                                                 "upgrade"};
    for (size_t i = 0; i < sizeof read_by_llhttp / sizeof read_by_llhttp[0]; i++)
        if (same_in_any_case(name, size, read_by_llhttp[i])) return 1;
    return 0;
}

/* The methods taken here: those whose request without framing fields has no body, as
   llhttp reads it, and gw serves as any other; each name made once (``usual_methods``). */
static const char *const USUAL_METHODS[] = {"GET", "HEAD", "DELETE", "OPTIONS"};
#define USUAL_METHOD_COUNT (sizeof USUAL_METHODS / sizeof USUAL_METHODS[0])
static PyObject *usual_methods[USUAL_METHOD_COUNT];

/* The method the request line starting at ``p`` names, followed by a space (borrowed), with
   ``*after`` past the space; NULL when it is not one taken here. */
static PyObject *usual_method(const unsigned char *p, const unsigned char *end,
                              const unsigned char **after) {
    for (size_t i = 0; i < USUAL_METHOD_COUNT; i++) {
        size_t n = strlen(USUAL_METHODS[i]);
        if ((size_t)(end - p) > n && memcmp(p, USUAL_METHODS[i], n) == 0 && p[n] == ' ') {
            *after = p + n + 1;
            return usual_methods[i];
        }
    }
    return NULL;
}

/* ``(name, value)``, two bytes (PERF: no format string read, as ``Py_BuildValue`` reads one). */
static PyObject *bytes_pair(const unsigned char *name, Py_ssize_t name_size,
                            const unsigned char *value, Py_ssize_t value_size) {
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) return NULL;
    PyObject *first = PyBytes_FromStringAndSize((const char *)name, name_size);
    PyTuple_SET_ITEM(pair, 0, first); /* a NULL item is allowed until it is returned */
    PyObject *second = first == NULL ? NULL
                                     : PyBytes_FromStringAndSize((const char *)value, value_size);
    PyTuple_SET_ITEM(pair, 1, second);
    if (second == NULL) Py_CLEAR(pair);
    return pair;
}

/* The fields from ``*at`` to the empty line, as (name, value) bytes pairs into ``fields``,
   within the limits; 1: read (``*at`` past the empty line), 0: llhttp's, -1: an error. */
static int usual_request_fields(Callbacks *self, const unsigned char **at,
                                const unsigned char *end, PyObject *fields) {
    const unsigned char *p = *at;
    for (;;) {
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') break;
        if (PyList_GET_SIZE(fields) >= self->fields) return 0; /* 431: on_header's */
        const unsigned char *name = p;
        while (p < end && is_token_char(*p)) p++;
        if (p == name || p == end || *p != ':') return 0;
        Py_ssize_t name_size = p - name;
        int keep_alive_only = 0; /* a Connection field: taken only as ``keep-alive`` */
        if (llhttp_reads(name, name_size)) {
            if (!same_in_any_case(name, name_size, "connection")) return 0;
            keep_alive_only = 1;
        }
        for (p++; p < end && (*p == ' ' || *p == '\t'); p++) {}
        const unsigned char *value = p;
        while (p < end && is_field_text(*p)) p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return 0;
        Py_ssize_t value_size = p - value;
        /* an empty value, or one with trailing whitespace (llhttp keeps it), is llhttp's */
        if (value_size == 0 || value[value_size - 1] == ' ' || value[value_size - 1] == '\t')
            return 0;
        if (name_size + value_size + 4 > self->field_size) return 0; /* 431: on_header's */
        if (keep_alive_only && !same_in_any_case(value, value_size, "keep-alive")) return 0;
        p += 2;
        PyObject *field = bytes_pair(name, name_size, value, value_size);
        int appended = field == NULL ? -1 : PyList_Append(fields, field);
        Py_XDECREF(field);
        if (appended < 0) return -1;
    }
    *at = p + 2;
    return 1;
}

/* ``take(data)``: see the Python form, ``Connection._take``. */
static PyObject *take(Callbacks *self, PyObject *data) {
    if (cleared(self)) return NULL;
    if (!PyBytes_CheckExact(data)) Py_RETURN_FALSE;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    const unsigned char *end = p + PyBytes_GET_SIZE(data);
    const unsigned char *target;
    PyObject *method = usual_method(p, end, &target);
    if (method == NULL) Py_RETURN_FALSE;
    p = target;
    if (p < end && *p == '/') /* origin form */
        while (p < end && is_target_char(*p)) p++;
    Py_ssize_t target_size = p - target;
    /* the request line as gunicorn counts it (on_headers_complete): method, target,
       " HTTP/1.1" and a CR; over its limit, a 414 is the Python form's */
    if (target_size == 0 || end - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0 ||
        PyUnicode_GET_LENGTH(method) + target_size + 10 > self->request_line)
        Py_RETURN_FALSE;
    p += 11;
    RequestMessage *message = (RequestMessage *)new_message();
    int read = message == NULL ? -1 : usual_request_fields(self, &p, end, message->headers);
    if (read == 1 && p != end) read = 0; /* a body, or the next request: llhttp's */
    PyObject *url = read == 1 ? PyBytes_FromStringAndSize((const char *)target, target_size)
                              : NULL;
    if (read == 1 && url == NULL) read = -1;
    PyObject *appended = NULL;
    if (read == 1) {
        Py_SETREF(message->url, url);
        Py_SETREF(message->method, Py_NewRef(method));
        /* version_11, upgrade False: as new_message made them */
        Py_SETREF(message->keep_alive, Py_NewRef(Py_True)); /* HTTP/1.1, no close */
        Py_SETREF(message->head_done, Py_NewRef(Py_True));
        Py_SETREF(message->complete, Py_NewRef(Py_True));
        if (PyObject_SetAttr(self->conn, attr_parsing, (PyObject *)message) < 0 ||
            (appended = PyObject_CallOneArg(self->append, (PyObject *)message)) == NULL)
            read = -1;
        Py_XDECREF(appended);
    }
    Py_XDECREF(message);
    if (read < 0) return NULL;
    return PyBool_FromLong(read == 1);
}

/* -- Callbacks: the type -------------------------------------------------------------------- */

static PyObject *callbacks_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"conn",       "messages", "kept",   "request_line",
                               "field_size", "fields",   "on_url", "on_headers_complete",
                               "on_message_complete", NULL};
    PyObject *conn, *messages, *kept, *python_url, *python_head, *python_complete;
    Py_ssize_t request_line, field_size, fields;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOnnn$OOO:Callbacks", keywords, &conn,
                                     &messages, &kept, &request_line, &field_size, &fields,
                                     &python_url, &python_head, &python_complete))
        return NULL;
    if (!PyCallable_Check(python_url) || !PyCallable_Check(python_head) ||
        !PyCallable_Check(python_complete)) {
        PyErr_SetString(PyExc_TypeError, "Callbacks: the Python forms must be callable");
        return NULL;
    }
    PyObject *append = PyObject_GetAttrString(messages, "append");
    if (append == NULL) return NULL;
    Callbacks *self = (Callbacks *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(append);
        return NULL;
    }
    self->conn = Py_NewRef(conn);
    self->append = append;
    self->kept = Py_NewRef(kept);
    self->request_line = request_line;
    self->field_size = field_size;
    self->fields = fields;
    self->python_url = Py_NewRef(python_url);
    self->python_headers_complete = Py_NewRef(python_head);
    self->python_message_complete = Py_NewRef(python_complete);
    return (PyObject *)self;
}

/* The callbacks refer to their connection, which holds them: a cycle, which the connection
   breaks when it is done, and the callbacks can also be collected. */
static int callbacks_traverse(Callbacks *self, visitproc visit, void *arg) {
    Py_VISIT(self->conn);
    Py_VISIT(self->append);
    Py_VISIT(self->kept);
    Py_VISIT(self->python_url);
    Py_VISIT(self->python_headers_complete);
    Py_VISIT(self->python_message_complete);
    return 0;
}

static int callbacks_clear(Callbacks *self) {
    Py_CLEAR(self->conn);
    Py_CLEAR(self->append);
    Py_CLEAR(self->kept);
    Py_CLEAR(self->python_url);
    Py_CLEAR(self->python_headers_complete);
    Py_CLEAR(self->python_message_complete);
    return 0;
}

static void callbacks_dealloc(Callbacks *self) {
    PyObject_GC_UnTrack(self);
    callbacks_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef callbacks_methods[] = {
    {"on_message_begin", (PyCFunction)on_message_begin, METH_NOARGS,
     "Start a message: Connection.on_message_begin."},
    {"on_url", (PyCFunction)on_url, METH_O, "Add a piece of the target: Connection.on_url."},
    {"on_headers_complete", (PyCFunction)on_headers_complete, METH_NOARGS,
     "End the head: Connection.on_headers_complete."},
    {"on_message_complete", (PyCFunction)on_message_complete, METH_NOARGS,
     "End the message: Connection.on_message_complete."},
    {"take", (PyCFunction)take, METH_O,
     "take(data) -> bool: read the usual request whole, without llhttp: Connection._take."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CallbacksType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gw.edge._requestfields.Callbacks",
    .tp_doc = "Callbacks(conn, messages, kept, request_line, *, on_url, on_headers_complete, "
              "on_message_complete): llhttp's callbacks for the requests of conn; what they "
              "do not do goes to the Python forms given.",
    .tp_basicsize = sizeof(Callbacks),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = callbacks_new,
    .tp_traverse = (traverseproc)callbacks_traverse,
    .tp_clear = (inquiry)callbacks_clear,
    .tp_dealloc = (destructor)callbacks_dealloc,
    .tp_methods = callbacks_methods,
};

static int make_callback_constants(void) {
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL) return -1;
    deque_type = PyObject_GetAttrString(collections, "deque");
    Py_DECREF(collections);
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    zero = PyLong_FromLong(0);
    method_get = PyUnicode_InternFromString("GET");
    for (size_t i = 0; i < USUAL_METHOD_COUNT; i++) {
        usual_methods[i] = PyUnicode_InternFromString(USUAL_METHODS[i]);
        if (usual_methods[i] == NULL) return -1;
    }
    version_11 = PyUnicode_InternFromString("1.1");
    version_10 = PyUnicode_InternFromString("1.0");
    attr_parsing = PyUnicode_InternFromString("_parsing");
    attr_parser = PyUnicode_InternFromString("_parser");
    attr_last_request = PyUnicode_InternFromString("_last_request");
    attr_fields = PyUnicode_InternFromString("fields");
    get_method = PyUnicode_InternFromString("get_method");
    get_http_version = PyUnicode_InternFromString("get_http_version");
    should_keep_alive = PyUnicode_InternFromString("should_keep_alive");
    should_upgrade = PyUnicode_InternFromString("should_upgrade");
    return deque_type && empty_bytes && zero && method_get && version_11 && version_10 &&
                   attr_parsing && attr_parser && attr_last_request && attr_fields &&
                   get_method && get_http_version && should_keep_alive && should_upgrade
               ? 0
               : -1;
}

/* The module with Message and Callbacks added. */
static PyObject *with_callbacks(PyObject *module) {
    if (module == NULL) return NULL;
    if (make_callback_constants() < 0 || PyType_Ready(&MessageType) < 0 ||
        PyType_Ready(&CallbacksType) < 0 ||
        PyModule_AddObjectRef(module, "Message", (PyObject *)&MessageType) < 0 ||
        PyModule_AddObjectRef(module, "Callbacks", (PyObject *)&CallbacksType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
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
    return with_callbacks(module_with_collector(&module_def));
}
