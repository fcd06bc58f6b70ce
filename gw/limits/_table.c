/* The compiled form of ``SharedTable.check`` (gw/limits/table.py) for a key in its home slot:
``Checker(fd, threads, frozen, clock, decision).check(words, stripe, home, h, emission,
capacity, limit, cost)``.

It does what the Python form does when both of the stripe's locks are free at the first try
(``StripeLocks.acquire``'s uncontended path, gw/host/locks.py) and the key sits in its home
slot or that slot was never used (``SharedTable.check``'s fast path): take the thread lock,
then the ``fcntl`` record lock on byte ``stripe`` of the lock file, read the clock, decide by
GCRA (``gw.core.gcra.assess``: the same integers, the same floats) and store the TAT before
the hash, then give both locks back. It returns the ``Decision``.

It returns None, with no lock held and nothing written, for everything else, and the Python
form then decides it all as before: a lock that is taken (the Python form waits, tells a
stopped holder from a busy one, and raises at its deadline), a lock the kernel refuses, a key
that is not in its home slot (the probe), a cost below 1, and numbers beyond what int64
arithmetic and doubles carry exactly.

PERF: the Python form runs about 200 bytecodes per rate-limited request (the check, the two
locks' acquire and release, GCRA) and the ``fcntl`` module's argument handling; this is two
calls into the thread lock, two ``fcntl`` system calls and the arithmetic.

APPSEC: nothing here decides who may wait or what a failed lock means: every lock that is not
free at once goes to the Python form, which keeps every guarantee of gw.host.locks (the
kernel drops a dead holder's record lock; a stopped holder is refused, never overtaken). The
record lock is the very one ``fcntl.lockf(fd, LOCK_EX | LOCK_NB, 1, stripe)`` takes.
``tests/limits/test_table_compiled.py`` compares the two forms. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>

#define NS_PER_SECOND 1000000000.0
#define EXACT_IN_A_DOUBLE (INT64_C(1) << 53)

typedef struct {
    PyObject_HEAD
    int fd;             /* the lock file's descriptor (gw.host.locks: one per process) */
    PyObject *threads;  /* the stripes' thread locks: a list renewed in place after a fork */
    PyObject *frozen;   /* the stripes whose holder was seen stopped: a dict (gw.host.locks) */
    PyObject *clock;    /* nanoseconds on the shared clock (the table's) */
    PyObject *decision; /* gw.core.gcra.Decision */
} Checker;

static PyObject *str_acquire, *str_release;

/* -- the two locks ------------------------------------------------------------------------ */

static int record_lock(int fd, long stripe, short type) {
    struct flock lock;
    memset(&lock, 0, sizeof lock);
    lock.l_type = type;
    lock.l_whence = SEEK_SET;
    lock.l_start = stripe;
    lock.l_len = 1;
    return fcntl(fd, F_SETLK, &lock);
}

/* 1: both locks are ours; 0: not both free at the first try (none held); -1: an error. */
static int take_both(Checker *self, PyObject *tlock, long stripe) {
    PyObject *no = Py_False;
    PyObject *args[2] = {tlock, no};
    PyObject *got = PyObject_VectorcallMethod(str_acquire, args,
                                              2, NULL);
    if (got == NULL) return -1;
    int taken = got == Py_True;
    Py_DECREF(got);
    if (!taken) return 0;
    if (record_lock(self->fd, stripe, F_WRLCK) == 0) return 1;
    PyObject *done = PyObject_VectorcallMethod(str_release, args,
                                               1, NULL);
    if (done == NULL) return -1;
    Py_DECREF(done);
    return 0; /* busy or refused: the Python form finds out which */
}

/* Give both back, the record lock first (``StripeLocks.release``); -1 with an error set. */
static int give_both(Checker *self, PyObject *tlock, long stripe) {
    int unlocked = record_lock(self->fd, stripe, F_UNLCK);
    int saved = errno;
    PyObject *args[1] = {tlock};
    PyObject *done = PyObject_VectorcallMethod(str_release, args,
                                               1, NULL);
    if (done == NULL) return -1;
    Py_DECREF(done);
    if (unlocked != 0) {
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* -- GCRA ----------------------------------------------------------------------------------- */

typedef struct {
    int64_t emission, capacity, cost; /* capacity: in tokens (the rate's burst) */
} Rate;

typedef struct {
    int allowed;
    int64_t remaining, wait, ahead_after; /* ahead_after: the answer's reset, in ns */
    int64_t tat;                          /* the TAT to store when allowed */
    int never;                            /* the cost exceeds the bucket: waiting never helps */
} Verdict;

/* ``gcra.assess`` on int64; 0 when a number does not fit (the Python form decides then). */
static int assess(int64_t stored, int held, int64_t now, Rate rate, Verdict *out) {
    int64_t ahead = held && stored > now ? stored - now : 0, capacity, step, after;
    if (__builtin_mul_overflow(rate.capacity, rate.emission, &capacity) ||
        __builtin_mul_overflow(rate.cost, rate.emission, &step) ||
        __builtin_add_overflow(ahead, step, &after))
        return 0;
    memset(out, 0, sizeof *out);
    if (after <= capacity) { /* admitted */
        if (__builtin_add_overflow(now, after, &out->tat) || after >= EXACT_IN_A_DOUBLE) return 0;
        out->allowed = 1;
        out->remaining = (capacity - after) / rate.emission;
        out->ahead_after = after;
        return 1;
    }
    /* refused (``_denial``): nothing to store */
    if (ahead >= EXACT_IN_A_DOUBLE || after - capacity >= EXACT_IN_A_DOUBLE) return 0;
    out->wait = after - capacity;
    out->remaining = capacity > ahead ? (capacity - ahead) / rate.emission : 0;
    out->ahead_after = ahead;
    out->never = rate.cost > rate.capacity;
    return 1;
}

/* Decision(allowed, limit, remaining, retry_after, reset_after), as ``gcra.assess`` makes it. */
static PyObject *decision_of(Checker *self, const Verdict *v, PyObject *limit) {
    double retry = v->never ? Py_HUGE_VAL : (double)v->wait / NS_PER_SECOND;
    PyObject *remaining = PyLong_FromLongLong(v->remaining);
    PyObject *retry_after = PyFloat_FromDouble(retry);
    PyObject *reset_after = PyFloat_FromDouble((double)v->ahead_after / NS_PER_SECOND);
    PyObject *decision = NULL;
    if (remaining != NULL && retry_after != NULL && reset_after != NULL) {
        PyObject *fields[5] = {v->allowed ? Py_True : Py_False, limit, remaining, retry_after,
                               reset_after};
        decision = PyObject_Vectorcall(self->decision, fields, 5, NULL);
    }
    Py_XDECREF(remaining);
    Py_XDECREF(retry_after);
    Py_XDECREF(reset_after);
    return decision;
}

/* -- check ---------------------------------------------------------------------------------- */

/* An int64 argument; 0 (no error set) when it does not fit. */
static int int64_arg(PyObject *value, int64_t *out) {
    if (!PyLong_CheckExact(value)) return 0;
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (n == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = n;
    return 1;
}

/* The slot's two words (TAT, hash) for the home slot ``home`` of ``h``: 1 and the verdict,
   0 when the key is elsewhere or a number does not fit, -1 with an error set. */
static int decide_in_home(Checker *self, PyObject *words, int64_t home, int64_t h, Rate rate,
                          Verdict *out) {
    PyObject *clock = PyObject_CallNoArgs(self->clock);
    if (clock == NULL) return -1;
    int64_t now;
    int fits = int64_arg(clock, &now);
    Py_DECREF(clock);
    if (!fits) return 0;
    Py_buffer view;
    if (PyObject_GetBuffer(words, &view, PyBUF_SIMPLE | PyBUF_WRITABLE) < 0) return -1;
    int result = 0;
    int64_t *slots = (int64_t *)view.buf, count = view.len / (Py_ssize_t)sizeof(int64_t);
    if (home >= 0 && home + 1 < count && (slots[home + 1] == h || slots[home + 1] == 0)) {
        int held = slots[home + 1] == h;
        result = assess(slots[home], held, now, rate, out);
        if (result && out->allowed) {
            slots[home] = out->tat; /* APPSEC: TAT before hash, as in the Python form */
            if (!held) slots[home + 1] = h;
        }
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *checker_check(Checker *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "check(words, stripe, home, h, emission, capacity, limit, cost)");
        return NULL;
    }
    int64_t stripe, home, h;
    Rate rate;
    if (!int64_arg(args[1], &stripe) || !int64_arg(args[2], &home) || !int64_arg(args[3], &h) ||
        !int64_arg(args[4], &rate.emission) || !int64_arg(args[5], &rate.capacity) ||
        !int64_arg(args[7], &rate.cost) || rate.cost < 1 || rate.emission < 1 ||
        rate.capacity < 1 || stripe < 0 || stripe >= PyList_GET_SIZE(self->threads) ||
        stripe > LONG_MAX)
        Py_RETURN_NONE;
    PyObject *tlock = Py_NewRef(PyList_GET_ITEM(self->threads, stripe));
    PyObject *result = NULL;
    int taken = take_both(self, tlock, (long)stripe);
    if (taken <= 0) {
        result = taken < 0 ? NULL : Py_NewRef(Py_None);
        goto done;
    }
    if (PyDict_GET_SIZE(self->frozen) > 0) { /* the stripe came free: its holder went on */
        PyObject *key = PyLong_FromLongLong(stripe);
        if (key == NULL || (PyDict_DelItem(self->frozen, key) < 0 &&
                            !PyErr_ExceptionMatches(PyExc_KeyError))) {
            Py_XDECREF(key);
            give_both(self, tlock, (long)stripe);
            goto done;
        }
        PyErr_Clear();
        Py_DECREF(key);
    }
    Verdict verdict;
    int decided = decide_in_home(self, args[0], home, h, rate, &verdict);
    if (give_both(self, tlock, (long)stripe) < 0 || decided < 0) goto done;
    result = decided ? decision_of(self, &verdict, args[6]) : Py_NewRef(Py_None);
done:
    Py_DECREF(tlock);
    return result;
}

/* -- the type ------------------------------------------------------------------------------- */

static PyObject *checker_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *keywords[] = {"fd", "threads", "frozen", "clock", "decision", NULL};
    int fd;
    PyObject *threads, *frozen, *clock, *decision;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO!O!OO:Checker", keywords, &fd, &PyList_Type,
                                     &threads, &PyDict_Type, &frozen, &clock, &decision))
        return NULL;
    Checker *self = (Checker *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->fd = fd;
    self->threads = Py_NewRef(threads);
    self->frozen = Py_NewRef(frozen);
    self->clock = Py_NewRef(clock);
    self->decision = Py_NewRef(decision);
    return (PyObject *)self;
}

static int checker_traverse(Checker *self, visitproc visit, void *arg) {
    Py_VISIT(self->threads);
    Py_VISIT(self->frozen);
    Py_VISIT(self->clock);
    Py_VISIT(self->decision);
    return 0;
}

static int checker_clear(Checker *self) {
    Py_CLEAR(self->threads);
    Py_CLEAR(self->frozen);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->decision);
    return 0;
}

static void checker_dealloc(Checker *self) {
    PyObject_GC_UnTrack(self);
    checker_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef checker_methods[] = {
    {"check", (PyCFunction)(void (*)(void))checker_check, METH_FASTCALL,
     "check(words, stripe, home, h, emission, capacity, limit, cost): the Decision, or None "
     "(nothing taken, no lock held) where the Python form must decide."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CheckerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gw.limits._table.Checker",
    .tp_doc = "Checker(fd, threads, frozen, clock, decision): SharedTable.check for a key in "
              "its home slot, when both of the stripe's locks are free at once.",
    .tp_basicsize = sizeof(Checker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = checker_new,
    .tp_traverse = (traverseproc)checker_traverse,
    .tp_clear = (inquiry)checker_clear,
    .tp_dealloc = (destructor)checker_dealloc,
    .tp_methods = checker_methods,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gw.limits._table",
    .m_doc = "The compiled form of SharedTable.check's uncontended path (gw/limits/table.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__table(void) {
    str_acquire = PyUnicode_InternFromString("acquire");
    str_release = PyUnicode_InternFromString("release");
    if (str_acquire == NULL || str_release == NULL || PyType_Ready(&CheckerType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    if (PyModule_AddObjectRef(module, "Checker", (PyObject *)&CheckerType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
