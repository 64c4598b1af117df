/*
 * Compiled implementations of two per-message steps of the PostgreSQL hot path:
 * framing.MessageScanner's header walk and messages.parse_bind.
 *
 * Why it exists: both run on every round trip (the scanner once per read in each
 * direction, parse_bind once per extended-protocol execution). In-process, the pure-Python
 * scanner costs about 0.5 us per read of a few messages and parse_bind 1.2 us per Bind;
 * pgbench -S -M prepared -c 1 spends about 12 us of Python per transaction on the path
 * between reading a message and forwarding it (docs/performance.md). The pure-Python
 * functions stay the reference: framing.py and messages.py use these only when they
 * imported, and the unit tests run both against the same inputs (tests/unit/
 * test_pg_wire_compiled.py), including lying lengths.
 *
 * Interface (called by framing.py and messages.py, never directly):
 *
 *     scan(buf, limit, collapse) -> (entries, pos, bad)
 *         Walk complete messages of ``buf`` from offset 0. ``entries`` lists
 *         (type, start, stop, count) tuples as MessageScanner.feed documents; ``pos`` is
 *         where the incomplete tail starts. ``bad`` is -1, or the declared length (< 4
 *         or > ``limit``) of the message header at ``pos`` that stops the walk: the
 *         caller raises (it owns the exception types and the scanner's broken state).
 *
 *     parse_bind(bind_type, violation, body) -> bind_type instance
 *         Bind's fields (portal, statement, parameter_formats, parameters,
 *         result_formats) as a tuple of ``bind_type`` (messages.Bind, a NamedTuple);
 *         ``violation(message)`` builds the exception raised for a malformed Bind
 *         (PeerViolation); messages match messages.parse_bind_py.
 *
 * Spec: PostgreSQL manual, "Message Formats": every typed message is Byte1(type),
 * Int32 length (self included), body. Bind ('B'): String portal, String statement,
 * Int16 C + C x Int16 parameter format codes, Int16 P + P x (Int32 length (-1 = NULL),
 * bytes), Int16 R + R x Int16 result format codes.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define DATA_ROW 'D'
#define HEADER_SIZE 5

static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline int16_t be16s(const unsigned char *p) {
    return (int16_t)(((uint16_t)p[0] << 8) | p[1]);
}

static int append_entry(PyObject *entries, long mtype, Py_ssize_t start, Py_ssize_t stop,
                        Py_ssize_t count) {
    /* Built item by item: Py_BuildValue parses its format string on every call. */
    PyObject *t = PyTuple_New(4);
    if (t == NULL) {
        return -1;
    }
    PyObject *items[4] = {PyLong_FromLong(mtype), PyLong_FromSsize_t(start),
                          PyLong_FromSsize_t(stop), PyLong_FromSsize_t(count)};
    for (int i = 0; i < 4; i++) {
        if (items[i] == NULL) {
            for (int j = i; j < 4; j++) {
                Py_XDECREF(items[j]);
            }
            Py_DECREF(t);
            return -1;
        }
        PyTuple_SET_ITEM(t, i, items[i]);
    }
    int rc = PyList_Append(entries, t);
    Py_DECREF(t);
    return rc;
}

/* The header walk over b[0:n]: a new list of entries; *pos where the incomplete tail
   starts, *bad -1 or the invalid declared length of the header at *pos. */
static PyObject *walk(const unsigned char *b, Py_ssize_t n, long long limit, int collapse,
                      Py_ssize_t *pos_out, long long *bad_out) {
    Py_ssize_t pos = 0;
    long long bad = -1;
    Py_ssize_t run_start = -1, run_count = 0;
    PyObject *entries = PyList_New(0);
    if (entries == NULL) {
        return NULL;
    }
    while (n - pos >= HEADER_SIZE) {
        unsigned char mtype = b[pos];
        uint32_t length = be32(b + pos + 1);
        /* The length is an Int32: values >= 2^31 are negative on the wire, so below 4 as
           the Python reference reads them unsigned ("!I") and compares; keep that. */
        if (length < 4 || (long long)length > limit) {
            bad = (long long)length;
            break;
        }
        Py_ssize_t stop = pos + 1 + (Py_ssize_t)length;
        if (stop > n) {
            break;
        }
        if (mtype == DATA_ROW && collapse) {
            if (run_count == 0) {
                run_start = pos;
            }
            run_count++;
        } else {
            if (run_count) {
                if (append_entry(entries, DATA_ROW, run_start, pos, run_count) < 0) {
                    goto fail;
                }
                run_count = 0;
            }
            if (append_entry(entries, mtype, pos, stop, 1) < 0) {
                goto fail;
            }
        }
        pos = stop;
    }
    if (run_count && append_entry(entries, DATA_ROW, run_start, pos, run_count) < 0) {
        goto fail;
    }
    *pos_out = pos;
    *bad_out = bad;
    return entries;

fail:
    Py_DECREF(entries);
    return NULL;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer in;
    long long limit;
    int collapse;
    if (!PyArg_ParseTuple(args, "y*Lp:scan", &in, &limit, &collapse)) {
        return NULL;
    }
    Py_ssize_t pos;
    long long bad;
    PyObject *entries = walk((const unsigned char *)in.buf, in.len, limit, collapse, &pos, &bad);
    PyBuffer_Release(&in);
    if (entries == NULL) {
        return NULL;
    }
    return Py_BuildValue("(NnL)", entries, pos, bad);
}

/* -- the scanner ---------------------------------------------------------------------- */

/* framing.MessageScannerPy's state and ``feed`` (its other methods are Python, in
   framing._ScannerMethods, and read and write these names). */
typedef struct {
    PyObject_HEAD
    PyObject *pending; /* bytes */
    PyObject *broken;  /* the exception raised again, or None */
    Py_ssize_t max_message_size;
    char collapse_data_rows;
} Scanner;

static PyObject *str_refuse;

static PyObject *Scanner_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Scanner *self = (Scanner *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->pending = PyBytes_FromStringAndSize(NULL, 0);
    if (self->pending == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(Py_None);
    self->broken = Py_None;
    self->collapse_data_rows = 1;
    return (PyObject *)self;
}

static int Scanner_traverse(Scanner *self, visitproc visit, void *arg) {
    Py_VISIT(self->pending);
    Py_VISIT(self->broken);
    return 0;
}

static int Scanner_clear(Scanner *self) {
    Py_CLEAR(self->pending);
    Py_CLEAR(self->broken);
    return 0;
}

static void Scanner_dealloc(Scanner *self) {
    PyObject_GC_UnTrack(self);
    Scanner_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Raise ``exc`` as the reference's ``raise exc`` would (a TypeError for anything that is
   not an exception instance). Returns NULL. */
static PyObject *raise_instance(PyObject *exc) {
    if (PyExceptionInstance_Check(exc)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    } else {
        PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
    }
    return NULL;
}

/* feed(data) -> (buf, end, entries): framing.MessageScannerPy.feed. */
static PyObject *Scanner_feed(Scanner *self, PyObject *data) {
    if (self->broken != NULL && self->broken != Py_None) {
        return raise_instance(self->broken);
    }
    if (self->pending == NULL || !PyBytes_Check(self->pending)) {
        PyErr_SetString(PyExc_TypeError, "_pending must be bytes");
        return NULL;
    }
    PyObject *buf;
    if (PyBytes_GET_SIZE(self->pending) == 0) {
        buf = data; /* the read itself: nothing is copied */
        Py_INCREF(buf);
    } else {
        /* A message straddled two reads. ``data``'s ``__radd__`` may run first and may
           replace ``_pending``: hold the bytes being added. */
        PyObject *pending = Py_NewRef(self->pending);
        buf = PyNumber_Add(pending, data);
        Py_DECREF(pending);
        if (buf == NULL) {
            return NULL;
        }
    }
    Py_buffer in;
    if (PyObject_GetBuffer(buf, &in, PyBUF_SIMPLE) < 0) {
        Py_DECREF(buf);
        return NULL;
    }
    Py_ssize_t pos;
    long long bad;
    PyObject *entries = walk((const unsigned char *)in.buf, in.len,
                             (long long)self->max_message_size, self->collapse_data_rows,
                             &pos, &bad);
    Py_ssize_t n = in.len;
    PyBuffer_Release(&in);
    if (entries == NULL) {
        Py_DECREF(buf);
        return NULL;
    }
    if (bad >= 0) {
        /* The reference builds the exception and breaks the scanner: framing's _refuse. */
        Py_DECREF(entries);
        Py_DECREF(buf);
        PyObject *length = PyLong_FromLongLong(bad);
        if (length == NULL) {
            return NULL;
        }
        PyObject *exc = PyObject_CallMethodOneArg((PyObject *)self, str_refuse, length);
        Py_DECREF(length);
        if (exc != NULL) {
            raise_instance(exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    PyObject *rest = pos < n ? PySequence_GetSlice(buf, pos, n) : PyBytes_FromStringAndSize(NULL, 0);
    if (rest == NULL) {
        Py_DECREF(entries);
        Py_DECREF(buf);
        return NULL;
    }
    if (!PyBytes_Check(rest)) { /* a read that is not bytes: the tail is held as bytes */
        Py_SETREF(rest, PyBytes_FromObject(rest));
        if (rest == NULL) {
            Py_DECREF(entries);
            Py_DECREF(buf);
            return NULL;
        }
    }
    Py_SETREF(self->pending, rest);
    PyObject *out = PyTuple_New(3);
    PyObject *end = PyLong_FromSsize_t(pos);
    if (out == NULL || end == NULL) {
        Py_XDECREF(out);
        Py_XDECREF(end);
        Py_DECREF(entries);
        Py_DECREF(buf);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, buf);
    PyTuple_SET_ITEM(out, 1, end);
    PyTuple_SET_ITEM(out, 2, entries);
    return out;
}

static PyMethodDef Scanner_methods[] = {
    {"feed", (PyCFunction)Scanner_feed, METH_O,
     "feed(data) -> (buf, end, entries): see framing.MessageScannerPy.feed."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Scanner_members[] = {
    {"_pending", T_OBJECT_EX, offsetof(Scanner, pending), 0, NULL},
    {"_broken", T_OBJECT, offsetof(Scanner, broken), 0, NULL},
    {"max_message_size", T_PYSSIZET, offsetof(Scanner, max_message_size), 0, NULL},
    {"collapse_data_rows", T_BOOL, offsetof(Scanner, collapse_data_rows), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "protocols.postgres._wire.ScannerCore",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "State and feed of framing.MessageScanner.",
    .tp_new = Scanner_new,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_traverse = (traverseproc)Scanner_traverse,
    .tp_clear = (inquiry)Scanner_clear,
    .tp_methods = Scanner_methods,
    .tp_members = Scanner_members,
};

static PyObject *raise_violation(PyObject *violation, const char *message) {
    PyObject *exc = PyObject_CallFunction(violation, "s", message);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* An Int16 count and that many Int16 values, as a tuple; NULL with *err set to the
   message when the body is too short or the count negative. */
static PyObject *read_i16_array(const unsigned char *b, Py_ssize_t n, Py_ssize_t *pos,
                                const char **err) {
    if (*pos + 2 > n) {
        *err = "malformed Bind message";
        return NULL;
    }
    int16_t count = be16s(b + *pos);
    *pos += 2;
    if (count < 0 || *pos + 2 * (Py_ssize_t)count > n) {
        *err = "malformed Bind message";
        return NULL;
    }
    PyObject *t = PyTuple_New(count);
    if (t == NULL) {
        return NULL;
    }
    for (int16_t i = 0; i < count; i++) {
        PyObject *v = PyLong_FromLong(be16s(b + *pos));
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
        *pos += 2;
    }
    return t;
}

static PyObject *parse_bind(PyObject *self, PyObject *args) {
    PyObject *bind_type, *violation;
    Py_buffer in;
    if (!PyArg_ParseTuple(args, "OOy*:parse_bind", &bind_type, &violation, &in)) {
        return NULL;
    }
    if (!PyType_Check(bind_type) || !PyType_IsSubtype((PyTypeObject *)bind_type, &PyTuple_Type)) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_TypeError, "bind_type must be a tuple subclass");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)in.buf;
    Py_ssize_t n = in.len;
    const char *err = NULL;
    PyObject *portal = NULL, *statement = NULL, *formats = NULL, *params = NULL;
    PyObject *results = NULL, *out = NULL;

    const unsigned char *z1 = memchr(b, 0, (size_t)n);
    const unsigned char *z2 = z1 != NULL ? memchr(z1 + 1, 0, (size_t)(n - (z1 + 1 - b))) : NULL;
    if (z2 == NULL) {
        err = "unterminated string in message";
        goto done;
    }
    portal = PyBytes_FromStringAndSize((const char *)b, z1 - b);
    statement = PyBytes_FromStringAndSize((const char *)z1 + 1, z2 - z1 - 1);
    if (portal == NULL || statement == NULL) {
        goto done;
    }
    Py_ssize_t pos = z2 + 1 - b;
    formats = read_i16_array(b, n, &pos, &err);
    if (formats == NULL) {
        goto done;
    }
    if (pos + 2 > n) {
        err = "malformed Bind message";
        goto done;
    }
    int16_t nparams = be16s(b + pos);
    pos += 2;
    Py_ssize_t nformats = PyTuple_GET_SIZE(formats);
    if (nparams < 0 || (nformats > 1 && nformats != nparams)) {
        err = "malformed Bind message";
        goto done;
    }
    params = PyTuple_New(nparams);
    if (params == NULL) {
        goto done;
    }
    for (int16_t i = 0; i < nparams; i++) {
        if (pos + 4 > n) {
            err = "malformed Bind message";
            goto done;
        }
        int32_t length = (int32_t)be32(b + pos);
        pos += 4;
        PyObject *v;
        if (length == -1) {
            v = Py_None;
            Py_INCREF(v);
        } else {
            if (length < 0 || pos + (Py_ssize_t)length > n) {
                err = "malformed Bind parameter length";
                goto done;
            }
            v = PyBytes_FromStringAndSize((const char *)b + pos, length);
            if (v == NULL) {
                goto done;
            }
            pos += length;
        }
        PyTuple_SET_ITEM(params, i, v);
    }
    results = read_i16_array(b, n, &pos, &err);
    if (results == NULL) {
        goto done;
    }
    if (pos != n) {
        err = "trailing bytes in Bind message";
        goto done;
    }
    /* A NamedTuple's layout is a tuple's: allocate the subclass and fill it, as
       tuple.__new__ does for subclasses, without the generated Python __new__. */
    out = ((PyTypeObject *)bind_type)->tp_alloc((PyTypeObject *)bind_type, 5);
    if (out == NULL) {
        goto done;
    }
    PyTuple_SET_ITEM(out, 0, portal);
    PyTuple_SET_ITEM(out, 1, statement);
    PyTuple_SET_ITEM(out, 2, formats);
    PyTuple_SET_ITEM(out, 3, params);
    PyTuple_SET_ITEM(out, 4, results);
    portal = statement = formats = params = results = NULL; /* owned by out */

done:
    Py_XDECREF(portal);
    Py_XDECREF(statement);
    Py_XDECREF(formats);
    Py_XDECREF(params);
    Py_XDECREF(results);
    PyBuffer_Release(&in);
    if (err != NULL && !PyErr_Occurred()) {
        Py_XDECREF(out);
        return raise_violation(violation, err);
    }
    return out;
}


/* -- the read pump ------------------------------------------------------------------- */

/* pump.ReadPumpPy in C: one read of one direction, from the scanner to the forwarded
   bytes, without running Python when the tracker alone handles every message of it. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *scanner, *tracker, *write, *slow, *failed, *rows, *unless, *unless_attr;
    char backend, run;
} Pump;

static PyObject *str_feed, *str_frontend_run, *str_backend_run;

static int Pump_traverse(Pump *self, visitproc visit, void *arg) {
    Py_VISIT(self->scanner);
    Py_VISIT(self->tracker);
    Py_VISIT(self->write);
    Py_VISIT(self->slow);
    Py_VISIT(self->failed);
    Py_VISIT(self->rows);
    Py_VISIT(self->unless);
    Py_VISIT(self->unless_attr);
    return 0;
}

static int Pump_clear(Pump *self) {
    Py_CLEAR(self->scanner);
    Py_CLEAR(self->tracker);
    Py_CLEAR(self->write);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->rows);
    Py_CLEAR(self->unless);
    Py_CLEAR(self->unless_attr);
    return 0;
}

static void Pump_dealloc(Pump *self) {
    PyObject_GC_UnTrack(self);
    Pump_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Whether the tracker's walk runs for this read: ``run``, and ``unless``'s attribute
   ``unless_attr`` false (-1 on error). */
static int pump_walks(Pump *self) {
    if (!self->run) {
        return 0;
    }
    if (self->unless_attr == Py_None) { /* no ``unless`` given (its name is a str) */
        return 1;
    }
    PyObject *flag = PyObject_GetAttr(self->unless, self->unless_attr);
    if (flag == NULL) {
        return -1;
    }
    int set = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    return set < 0 ? -1 : !set;
}

/* The tracker's walk over the leading entries: the index of the first one left. */
static Py_ssize_t pump_walk(Pump *self, PyObject *buf, PyObject *entries) {
    PyObject *r;
    if (self->backend) {
        PyObject *args[4] = {self->tracker, buf, entries, self->rows};
        r = PyObject_VectorcallMethod(str_backend_run, args, 4, NULL);
        if (r == NULL) {
            return -1;
        }
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "backend_run must return (index, idle)");
            return -1;
        }
        Py_ssize_t done = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 0));
        Py_DECREF(r);
        return done;
    }
    PyObject *args[3] = {self->tracker, buf, entries};
    r = PyObject_VectorcallMethod(str_frontend_run, args, 3, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_ssize_t done = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    return done;
}

/* The scanner or the tracker raised (an Exception, not a KeyboardInterrupt...): the
   driver's ``failed(exc)`` answers, as its loop's ``except`` would. */
static PyObject *pump_failed(Pump *self) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    /* Called as from the reference's ``except`` block: sys.exc_info() is the exception,
       and one raised by ``failed`` has it as its __context__. */
    PyObject *handled = PyErr_GetHandledException();
    PyErr_SetHandledException(value);
    PyObject *r = PyObject_CallOneArg(self->failed, value);
    PyErr_SetHandledException(handled);
    Py_XDECREF(handled);
    if (r != NULL) { /* the pump returns None, whatever ``failed`` returns */
        Py_SETREF(r, Py_NewRef(Py_None));
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return r;
}

static PyObject *Pump_vectorcall(Pump *self, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "ReadPump(data) takes one positional argument");
        return NULL;
    }
    if (self->scanner == NULL) { /* cleared by the cycle collector */
        PyErr_SetString(PyExc_RuntimeError, "ReadPump is cleared");
        return NULL;
    }
    PyObject *feed_args[2] = {self->scanner, args[0]};
    PyObject *fed = PyObject_VectorcallMethod(str_feed, feed_args, 2, NULL);
    if (fed == NULL) {
        return pump_failed(self);
    }
    if (!PyTuple_Check(fed) || PyTuple_GET_SIZE(fed) != 3 ||
        !PyList_Check(PyTuple_GET_ITEM(fed, 2))) {
        Py_DECREF(fed);
        PyErr_SetString(PyExc_TypeError, "feed must return (buf, end, entries: list)");
        return NULL;
    }
    PyObject *buf = PyTuple_GET_ITEM(fed, 0), *end = PyTuple_GET_ITEM(fed, 1);
    PyObject *entries = PyTuple_GET_ITEM(fed, 2);
    Py_ssize_t n = PyList_GET_SIZE(entries);
    PyObject *result = NULL;
    if (n == 0) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    Py_ssize_t done = 0;
    int walks = pump_walks(self);
    if (walks < 0) {
        goto done;
    }
    if (walks) {
        done = pump_walk(self, buf, entries);
        if (done < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "negative run index");
            }
            result = pump_failed(self);
            goto done;
        }
    }
    if (done < n) {
        PyObject *slow_args[4] = {buf, end, entries, NULL};
        slow_args[3] = PyLong_FromSsize_t(done);
        if (slow_args[3] == NULL) {
            goto done;
        }
        result = PyObject_Vectorcall(self->slow, slow_args, 4, NULL);
        Py_DECREF(slow_args[3]);
        goto done;
    }
    /* Every message went through the tracker alone: forward buf[:end]. */
    Py_ssize_t stop = PyLong_AsSsize_t(end);
    Py_ssize_t size = PyObject_Length(buf);
    if (stop < 0 || size < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "feed returned a negative end");
        }
        goto done;
    }
    PyObject *out;
    if (stop == size) {
        out = buf;
        Py_INCREF(out);
    } else {
        PyObject *view = PyMemoryView_FromObject(buf);
        if (view == NULL) {
            goto done;
        }
        out = PySequence_GetSlice(view, 0, stop);
        Py_DECREF(view);
        if (out == NULL) {
            goto done;
        }
    }
    result = PyObject_CallOneArg(self->write, out);
    Py_DECREF(out);
    if (result != NULL) {
        Py_SETREF(result, Py_None);
        Py_INCREF(result);
    }
done:
    Py_DECREF(fed);
    if (result != NULL && result != Py_None) { /* slow's: the pump returns None */
        Py_SETREF(result, Py_NewRef(Py_None));
    }
    return result;
}

static PyObject *Pump_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"scanner", "tracker", "write",  "slow", "failed", "backend",
                             "run",     "rows",    "unless", NULL};
    PyObject *scanner, *tracker, *write, *slow, *failed, *rows = Py_None, *unless = Py_None;
    int backend = -1, run = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO|$ppOO:ReadPump", kwlist, &scanner,
                                     &tracker, &write, &slow, &failed, &backend, &run, &rows,
                                     &unless)) {
        return NULL;
    }
    if (backend < 0) {
        PyErr_SetString(PyExc_TypeError, "ReadPump() missing keyword argument 'backend'");
        return NULL;
    }
    PyObject *owner = Py_None, *attr = Py_None;
    if (unless != Py_None) {
        if (!PyTuple_Check(unless) || PyTuple_GET_SIZE(unless) != 2 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(unless, 1))) {
            PyErr_SetString(PyExc_TypeError, "unless must be (object, attribute name) or None");
            return NULL;
        }
        owner = PyTuple_GET_ITEM(unless, 0);
        attr = PyTuple_GET_ITEM(unless, 1);
    }
    Pump *self = (Pump *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)Pump_vectorcall;
    PyObject **slots[8] = {&self->scanner, &self->tracker, &self->write, &self->slow,
                           &self->failed,  &self->rows,    &self->unless, &self->unless_attr};
    PyObject *values[8] = {scanner, tracker, write, slow, failed, rows, owner, attr};
    for (int i = 0; i < 8; i++) {
        Py_INCREF(values[i]);
        *slots[i] = values[i];
    }
    self->backend = (char)backend;
    self->run = (char)run;
    return (PyObject *)self;
}

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "protocols.postgres._wire.ReadPump",
    .tp_basicsize = sizeof(Pump),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "One direction's reads, scanner to forwarded bytes (see pump.ReadPumpPy).",
    .tp_new = Pump_new,
    .tp_dealloc = (destructor)Pump_dealloc,
    .tp_traverse = (traverseproc)Pump_traverse,
    .tp_clear = (inquiry)Pump_clear,
    .tp_vectorcall_offset = offsetof(Pump, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(buf, limit, collapse) -> (entries, pos, bad)\n\n"
     "The compiled header walk of protocols.postgres.framing.MessageScanner.feed."},
    {"parse_bind", parse_bind, METH_VARARGS,
     "parse_bind(bind_type, violation, body) -> Bind\n\n"
     "The compiled body of protocols.postgres.messages.parse_bind."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "protocols.postgres._wire",
    "Compiled message scanning and Bind parsing (see framing.py, messages.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    str_refuse = PyUnicode_InternFromString("_refuse");
    if (str_refuse == NULL || PyType_Ready(&ScannerType) < 0) {
        return NULL;
    }
    str_feed = PyUnicode_InternFromString("feed");
    str_frontend_run = PyUnicode_InternFromString("frontend_run");
    str_backend_run = PyUnicode_InternFromString("backend_run");
    if (str_feed == NULL || str_frontend_run == NULL || str_backend_run == NULL ||
        PyType_Ready(&PumpType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "ScannerCore", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&PumpType);
    if (PyModule_AddObject(m, "ReadPump", (PyObject *)&PumpType) < 0) {
        Py_DECREF(&PumpType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
