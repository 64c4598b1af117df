/*
 * Compiled fast path of framing.PacketScanner (MySQL/MariaDB packet framing).
 *
 * Why it exists: the MySQL driver pulls packets one at a time (a MySQL packet has no type
 * byte, so whether the next packets are rows depends on the response state), and a point
 * select crosses the scanner seven or eight times: the command, the column count, the
 * column definition, EOF, the row run, the final EOF or OK. In a running gateway those
 * calls were about a quarter of the Python bytecode executed per query
 * (docs/performance.md). This type holds the scanner's state in C and answers the common
 * cases of ``feed``, ``next_packet`` and ``next_row_run`` without running Python.
 *
 * Everything else is left to the pure-Python methods, which stay the reference and run on
 * the same state: whenever this code meets anything but the common case (a logical packet
 * of 16 MiB or more, a length above the limit, a wrong sequence id, an incomplete tail to
 * stash, bytes left over from the last read, a broken scanner), it changes nothing and
 * calls ``feed_py`` / ``next_packet_py`` / ``next_row_run_py`` on the same object, which
 * then raise or stash exactly as they always did. The unit tests drive both
 * implementations with the same reads and calls (tests/unit/test_mysql_wire_compiled.py).
 *
 * Layout (framing.PacketScanner subclasses this type; its Python methods read and write
 * these names): _buf (bytes, the current read), _pos (next unconsumed offset), _acc
 * (bytearray: a partial tail being assembled, or None), _need, _broken (the exception the
 * scanner failed with, or None), max_payload, expected_seq (None, or the sequence id the
 * next physical packet must carry).
 *
 * Spec: MySQL Client/Server Protocol, page_protocol_basic_packets: int<3> payload_length,
 * int<1> sequence_id, payload; a length of 0xFFFFFF continues in the next packet.
 * page_protocol_basic_eof_packet / page_protocol_basic_err_packet: 0xFE / 0xFF headers.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define HEADER_SIZE 4
#define MAX_PHYSICAL 0xFFFFFF
#define ERR_HEADER 0xFF
#define EOF_HEADER 0xFE

typedef struct {
    PyObject_HEAD
    PyObject *buf;    /* bytes */
    Py_ssize_t pos;
    PyObject *acc;    /* bytearray or None */
    Py_ssize_t need;
    PyObject *broken; /* exception or None */
    Py_ssize_t max_payload;
    int expected_seq; /* -1: not checked (None) */
} Core;

static PyObject *str_feed_py, *str_next_packet_py, *str_next_row_run_py;

static inline Py_ssize_t le24(const unsigned char *p) {
    return (Py_ssize_t)p[0] | ((Py_ssize_t)p[1] << 8) | ((Py_ssize_t)p[2] << 16);
}

static PyObject *Core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Core *self = (Core *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->buf = PyBytes_FromStringAndSize(NULL, 0);
    if (self->buf == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(Py_None);
    self->acc = Py_None;
    Py_INCREF(Py_None);
    self->broken = Py_None;
    self->max_payload = 1;
    self->expected_seq = -1;
    return (PyObject *)self;
}

static int Core_traverse(Core *self, visitproc visit, void *arg) {
    Py_VISIT(self->buf);
    Py_VISIT(self->acc);
    /* The exception's traceback holds frames that hold this scanner. */
    Py_VISIT(self->broken);
    return 0;
}

static int Core_clear(Core *self) {
    Py_CLEAR(self->buf);
    Py_CLEAR(self->acc);
    Py_CLEAR(self->broken);
    return 0;
}

static void Core_dealloc(Core *self) {
    PyObject_GC_UnTrack(self);
    Core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The fast paths read _buf as exact bytes from offset _pos; the Python methods only ever
 * store bytes and an offset within them, but both attributes are writable, so anything
 * else goes to the Python path. */
static inline int usable(Core *self) {
    return self->broken == Py_None && self->buf != NULL && PyBytes_CheckExact(self->buf) &&
           self->pos >= 0 && self->pos <= PyBytes_GET_SIZE(self->buf);
}

static PyObject *Core_feed(Core *self, PyObject *data) {
    if (!usable(self) || self->acc != Py_None || !PyBytes_CheckExact(data) ||
        self->pos != PyBytes_GET_SIZE(self->buf)) {
        return PyObject_CallMethodOneArg((PyObject *)self, str_feed_py, data);
    }
    Py_INCREF(data);
    Py_SETREF(self->buf, data);
    self->pos = 0;
    Py_RETURN_NONE;
}

static PyObject *Core_next_packet(Core *self, PyObject *Py_UNUSED(ignored)) {
    if (!usable(self)) {
        return PyObject_CallMethodNoArgs((PyObject *)self, str_next_packet_py);
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(self->buf);
    Py_ssize_t n = PyBytes_GET_SIZE(self->buf);
    Py_ssize_t pos = self->pos;
    if (n - pos < HEADER_SIZE) {
        if (pos < n) { /* an incomplete header: stash it */
            return PyObject_CallMethodNoArgs((PyObject *)self, str_next_packet_py);
        }
        Py_RETURN_NONE;
    }
    Py_ssize_t length = le24(p + pos);
    Py_ssize_t stop = pos + HEADER_SIZE + length;
    if (length >= MAX_PHYSICAL || length > self->max_payload || stop > n ||
        (self->expected_seq >= 0 && p[pos + 3] != self->expected_seq)) {
        /* continued, too large, incomplete or out of order: the reference decides */
        return PyObject_CallMethodNoArgs((PyObject *)self, str_next_packet_py);
    }
    PyObject *start_obj = PyLong_FromSsize_t(pos);
    PyObject *stop_obj = PyLong_FromSsize_t(stop);
    if (start_obj == NULL || stop_obj == NULL) {
        Py_XDECREF(start_obj);
        Py_XDECREF(stop_obj);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, start_obj, stop_obj);
    Py_DECREF(start_obj);
    Py_DECREF(stop_obj);
    if (result == NULL) {
        return NULL;
    }
    if (self->expected_seq >= 0) {
        self->expected_seq = (self->expected_seq + 1) & 0xFF;
    }
    self->pos = stop;
    return result;
}

static PyObject *Core_next_row_run(Core *self, PyObject *Py_UNUSED(ignored)) {
    if (!usable(self)) {
        return PyObject_CallMethodNoArgs((PyObject *)self, str_next_row_run_py);
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(self->buf);
    Py_ssize_t n = PyBytes_GET_SIZE(self->buf);
    Py_ssize_t start = self->pos, pos = self->pos, count = 0;
    Py_ssize_t limit = self->max_payload;
    int seq = self->expected_seq;
    /* Nothing is stored until the walk is over, so falling back part-way is safe. */
    while (n - pos >= HEADER_SIZE) {
        Py_ssize_t length = le24(p + pos);
        if (length >= MAX_PHYSICAL || length > limit) {
            return PyObject_CallMethodNoArgs((PyObject *)self, str_next_row_run_py);
        }
        Py_ssize_t stop = pos + HEADER_SIZE + length;
        if (stop > n || length == 0) {
            break;
        }
        unsigned char first = p[pos + HEADER_SIZE];
        if (first == ERR_HEADER || first == EOF_HEADER) {
            break;
        }
        if (seq >= 0) {
            if (p[pos + 3] != seq) {
                return PyObject_CallMethodNoArgs((PyObject *)self, str_next_row_run_py);
            }
            seq = (seq + 1) & 0xFF;
        }
        count++;
        pos = stop;
    }
    if (count == 0 && pos < n) {
        /* No row: a terminator, an ERR or an empty packet is left for next_packet; an
         * incomplete packet is stashed by the reference. */
        if (n - pos < HEADER_SIZE || pos + HEADER_SIZE + le24(p + pos) > n) {
            return PyObject_CallMethodNoArgs((PyObject *)self, str_next_row_run_py);
        }
    }
    PyObject *result = Py_BuildValue("(nnn)", start, pos, count);
    if (result == NULL) {
        return NULL;
    }
    self->expected_seq = seq;
    self->pos = pos;
    return result;
}

static PyObject *Core_get_expected_seq(Core *self, void *Py_UNUSED(closure)) {
    if (self->expected_seq < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(self->expected_seq);
}

static int Core_set_expected_seq(Core *self, PyObject *value, void *Py_UNUSED(closure)) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete expected_seq");
        return -1;
    }
    if (value == Py_None) {
        self->expected_seq = -1;
        return 0;
    }
    long seq = PyLong_AsLong(value);
    if (seq == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (seq < 0 || seq > 0xFF) {
        /* Callers store ids already reduced mod 256; anything else is a bug. */
        PyErr_Format(PyExc_ValueError, "sequence id %ld out of range", seq);
        return -1;
    }
    self->expected_seq = (int)seq;
    return 0;
}

static PyMethodDef Core_methods[] = {
    {"feed", (PyCFunction)Core_feed, METH_O, "Append a read (see PacketScanner.feed)."},
    {"next_packet", (PyCFunction)Core_next_packet, METH_NOARGS,
     "Bounds of the next complete logical packet, or None (see PacketScanner.next_packet)."},
    {"next_row_run", (PyCFunction)Core_next_row_run, METH_NOARGS,
     "(start, stop, count) of the row packets at the head (see PacketScanner.next_row_run)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Core_members[] = {
    {"_buf", T_OBJECT_EX, offsetof(Core, buf), 0, NULL},
    {"_pos", T_PYSSIZET, offsetof(Core, pos), 0, NULL},
    {"_acc", T_OBJECT_EX, offsetof(Core, acc), 0, NULL},
    {"_need", T_PYSSIZET, offsetof(Core, need), 0, NULL},
    {"_broken", T_OBJECT_EX, offsetof(Core, broken), 0, NULL},
    {"max_payload", T_PYSSIZET, offsetof(Core, max_payload), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Core_getset[] = {
    {"expected_seq", (getter)Core_get_expected_seq, (setter)Core_set_expected_seq,
     "Sequence id the next physical packet must carry; None: not checked.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "protocols.mysql._wire.ScannerCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "State and fast paths of framing.PacketScanner.",
    .tp_new = Core_new,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_getset = Core_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_wire", "Compiled fast path of the MySQL packet scanner.", -1, NULL,
};

PyMODINIT_FUNC PyInit__wire(void) {
    str_feed_py = PyUnicode_InternFromString("feed_py");
    str_next_packet_py = PyUnicode_InternFromString("next_packet_py");
    str_next_row_run_py = PyUnicode_InternFromString("next_row_run_py");
    if (str_feed_py == NULL || str_next_packet_py == NULL || str_next_row_run_py == NULL) {
        return NULL;
    }
    if (PyType_Ready(&CoreType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "ScannerCore", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
