/* The socket calls that do not wait, compiled: gw.host.process's reads and writes
(``recv_now`` and ``send_now``; the Python forms are ``_recv_now_here`` and
``_send_now_here``) and gw.upstream.pool's check of an idle connection (``quiet``; the Python
form is ``_quiet_here``).

PERF: under gevent a socket's descriptor is non-blocking, and a read or write that cannot go on
at once waits in gevent's loop, not in the kernel. Yet ``socket.recv`` and ``socket.send`` parse
their arguments from a format string, go through the socket's timeout machinery, and release and
take back the GIL around the system call: about 1,700 instructions a call, four calls a proxied
request; a read that finds nothing raises ``BlockingIOError``. These make the one system call
(``MSG_DONTWAIT``: whatever the descriptor's mode, it never waits) and return None for "not
now" instead of raising.

The GIL is kept across the call: it cannot wait, and the only other threads of a worker are
background ones (the access-log flusher, the metrics publisher), which then wait one system
call longer. Errors are the socket module's: ``OSError`` with the ``errno`` (so
``ConnectionResetError``, ``BrokenPipeError``...), and a closed socket (``fileno()`` -1) is
``EBADF``, as ``recv`` on it reports. An interrupted call runs the signal handlers and goes
again (PEP 475), as the socket module does.

APPSEC: the descriptor is asked of the socket at every call (``fileno()``), never kept: a
number kept past a close could name another connection's socket by then. No Python code runs
between that question and the system call. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>

static PyObject *str_fileno;
static PyTypeObject *socket_type; /* _socket.socket, the base of every socket */
static PyObject *socket_fileno;   /* its fileno method */

/* The socket's descriptor now; -1 with an error set (OSError EBADF for a closed socket).

   PERF: for a socket of the socket module (gevent's OS socket is a subclass), its base's
   ``fileno`` is called directly, without looking the name up: it reads the descriptor the
   system calls here are made on. Anything else is asked its own ``fileno``. */
static int descriptor(PyObject *sock) {
    PyObject *number = PyObject_TypeCheck(sock, socket_type)
                           ? PyObject_Vectorcall(socket_fileno, &sock, 1, NULL)
                           : PyObject_CallMethodNoArgs(sock, str_fileno);
    if (number == NULL) return -1;
    long fd = PyLong_AsLong(number);
    Py_DECREF(number);
    if (fd == -1 && PyErr_Occurred()) return -1;
    if (fd < 0 || fd > INT_MAX) {
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return (int)fd;
}

/* Whether the failed call should go again (interrupted, and no signal handler raised); -1 with
   the error set when the handler raised. */
static int again_after_signal(void) {
    if (errno != EINTR) return 0;
    return PyErr_CheckSignals() < 0 ? -1 : 1;
}

static PyObject *recv_now(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_now(sock, size)");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred()) return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    int fd = descriptor(args[0]);
    if (fd < 0) return NULL;
    PyObject *data = PyBytes_FromStringAndSize(NULL, size);
    if (data == NULL) return NULL;
    for (;;) {
        ssize_t got = recv(fd, PyBytes_AS_STRING(data), (size_t)size, MSG_DONTWAIT);
        if (got >= 0) {
            if (got != size && _PyBytes_Resize(&data, (Py_ssize_t)got) < 0) return NULL;
            return data;
        }
        int again = again_after_signal();
        if (again == 1) continue;
        Py_DECREF(data);
        if (again < 0) return NULL;
        if (errno == EAGAIN || errno == EWOULDBLOCK) Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
}

static PyObject *send_now(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send_now(sock, data)");
        return NULL;
    }
    if (!PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "send_now: data must be bytes");
        return NULL;
    }
    int fd = descriptor(args[0]);
    if (fd < 0) return NULL;
    const char *bytes = PyBytes_AS_STRING(args[1]);
    size_t count = (size_t)PyBytes_GET_SIZE(args[1]);
    for (;;) {
        /* MSG_NOSIGNAL: a peer that left is EPIPE (BrokenPipeError), never SIGPIPE, whatever
           the process does with that signal (Python ignores it). */
        ssize_t sent = send(fd, bytes, count, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent >= 0) return PyLong_FromSsize_t((Py_ssize_t)sent);
        int again = again_after_signal();
        if (again == 1) continue;
        if (again < 0) return NULL;
        if (errno == EAGAIN || errno == EWOULDBLOCK) Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
}

/* gw.upstream.pool's ``quiet``: one poll(2) of the descriptor that does not wait, for what
   the Python form asks (readable or urgent data; an error, a hang-up and a closed descriptor
   are reported whatever is asked): True when it reports nothing. PERF: no poll object made,
   registered and freed. */
static PyObject *quiet(PyObject *module, PyObject *arg) {
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "quiet: not a file descriptor");
        return NULL;
    }
    struct pollfd one = {.fd = (int)fd, .events = POLLIN | POLLPRI, .revents = 0};
    for (;;) {
        int ready = poll(&one, 1, 0);
        if (ready >= 0) return PyBool_FromLong(ready == 0);
        int again = again_after_signal();
        if (again == 1) continue;
        return again < 0 ? NULL : PyErr_SetFromErrno(PyExc_OSError);
    }
}

static PyMethodDef methods[] = {
    {"recv_now", (PyCFunction)(void (*)(void))recv_now, METH_FASTCALL,
     "recv_now(sock, size) -> bytes | None: at most size bytes read now (b\"\" at the end), "
     "or None when none can be read without waiting."},
    {"send_now", (PyCFunction)(void (*)(void))send_now, METH_FASTCALL,
     "send_now(sock, data) -> int | None: how many bytes of data were sent now, or None when "
     "none can be sent without waiting."},
    {"quiet", quiet, METH_O,
     "quiet(fd) -> bool: whether a poll of the descriptor that does not wait reports nothing "
     "(no bytes to read, no error, no hang-up, not closed)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.host._io",
    .m_doc = "The socket calls that do not wait, compiled (gw.host.process, gw.upstream.pool).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__io(void) {
    str_fileno = PyUnicode_InternFromString("fileno");
    if (str_fileno == NULL) return NULL;
    PyObject *sockets = PyImport_ImportModule("_socket");
    if (sockets == NULL) return NULL;
    socket_type = (PyTypeObject *)PyObject_GetAttrString(sockets, "socket");
    Py_DECREF(sockets);
    if (socket_type == NULL) return NULL;
    if (!PyType_Check(socket_type)) {
        PyErr_SetString(PyExc_ImportError, "_socket.socket is not a type");
        return NULL;
    }
    socket_fileno = PyObject_GetAttr((PyObject *)socket_type, str_fileno);
    if (socket_fileno == NULL) return NULL;
    return PyModule_Create(&module_def);
}
