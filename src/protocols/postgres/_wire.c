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

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer in;
    long long limit;
    int collapse;
    if (!PyArg_ParseTuple(args, "y*Lp:scan", &in, &limit, &collapse)) {
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)in.buf;
    Py_ssize_t n = in.len;
    Py_ssize_t pos = 0;
    long long bad = -1;
    Py_ssize_t run_start = -1, run_count = 0;
    PyObject *entries = PyList_New(0);
    if (entries == NULL) {
        goto fail;
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
    PyBuffer_Release(&in);
    return Py_BuildValue("(NnL)", entries, pos, bad);

fail:
    Py_XDECREF(entries);
    PyBuffer_Release(&in);
    return NULL;
}

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

PyMODINIT_FUNC PyInit__wire(void) { return PyModule_Create(&module); }
