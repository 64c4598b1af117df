/*
 * Compiled fast path of tracker.QueryTracker (which execution owns each response).
 *
 * Why it exists: the tracker runs for every frontend message the driver forwards and for
 * every backend message other than DataRow. In the running gateway a pgbench -M prepared
 * transaction crosses it nine times (Bind, Describe, Execute, Sync, as libpq sends them;
 * BindComplete, RowDescription, CommandComplete, ReadyForQuery, and the head lookup for
 * the row run), several us of interpreted code per transaction with warm caches
 * (benchmarks/tracker_micro.py, docs/performance.md).
 *
 * Two types. ExecutionCore is the state of tracker.Execution (one per Query / Execute),
 * created here without running Python; its methods stay in tracker.py. TrackerCore holds
 * the tracker's state and answers the common messages without running Python: Bind
 * (parsed by the compiled Bind parser it is given), Describe, Execute of a bound portal,
 * a simple Query whose text the driver read (``query``),
 * Sync; ReadyForQuery, RowDescription, CommandComplete / EmptyQueryResponse /
 * PortalSuspended, ParseComplete / BindComplete / CloseComplete, NoData, CopyInResponse;
 * head_execution. frontend_run and backend_run feed the leading messages of one read of
 * that kind, the driver's loop for the common case. Everything else (Parse, Query, Close,
 * FunctionCall, ErrorResponse, an Execute of an unknown portal, a message whose body it
 * cannot read, the portal clean-up after a transaction) is handed, unchanged, to the pure-Python
 * methods of the same object (``frontend_py``, ``backend_py``, ``_drop_portals``), which
 * stay the reference and raise the protocol errors. The unit tests drive both
 * implementations with the same messages and reads and compare every observer call and
 * the state after each (tests/unit/test_pg_tracker_compiled.py).
 *
 * Layout (tracker.QueryTracker subclasses this type; its Python methods read and write
 * these names): observer, statements (dict name -> PreparedStatement), portals (dict name
 * -> Bind), _fifo (collections.deque of (kind, object) tuples), status (int), copy_in
 * (bool), _done_in_batch (int). The FIFO kinds are tracker.py's constants.
 *
 * Spec: PostgreSQL manual, "Message Flow" (Extended Query, Pipelining) and "Message
 * Formats": Execute is String portal, Int32 max rows; ReadyForQuery is Byte1 status.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define BAD_ENTRY "query tracker FIFO entry is not a (kind, object) pair"

/* FIFO kinds: tracker.py's _PARSE .. _DENIED_PARSE (the module checks they agree). */
enum { K_PARSE, K_BIND, K_DESCRIBE_S, K_DESCRIBE_P, K_EXECUTE, K_CLOSE, K_SYNC, K_QUERY,
       K_DENIED_QUERY, K_DENIED_PARSE };

typedef struct {
    PyObject_HEAD
    PyObject *observer;
    PyObject *statements; /* dict */
    PyObject *portals;    /* dict */
    PyObject *fifo;       /* collections.deque */
    int status;
    char copy_in;
    char skipping;       /* the server discards frontend messages up to the next Sync */
    PyObject *early_copy_end;   /* see tracker.py _copy_in_response (NULL: None) */
    PyObject *copy_dropped_for; /* see tracker.py _error (NULL: None) */
    Py_ssize_t done_in_batch;
} Core;

/* -- the execution ---------------------------------------------------------------------- */

/* tracker.Execution's state (its methods are Python, in tracker._ExecutionMethods). Every
   field is an object, as in the pure-Python class: the driver stores what it likes. */
typedef struct {
    PyObject_HEAD
    PyObject *path, *text, *statement_name, *portal, *bind, *row_description;
    PyObject *rows, *error, *skipped, *suspended, *context, *mask_plan, *budget;
    PyObject *bytes, *started, *finished, *decided, *_tag_bodies;
} Exec;

#define EXEC_FIELDS(X)                                                                      \
    X(path) X(text) X(statement_name) X(portal) X(bind) X(row_description) X(rows) X(error)  \
    X(skipped) X(suspended) X(context) X(mask_plan) X(budget) X(bytes) X(started)            \
    X(finished) X(decided) X(_tag_bodies)

static PyObject *zero_float;

/* The defaults of a new execution (tracker.ExecutionPy.__init__). */
static void exec_defaults(Exec *e) {
#define SET_NONE(f) Py_INCREF(Py_None); e->f = Py_None;
    EXEC_FIELDS(SET_NONE)
#undef SET_NONE
    PyObject *zero = PyLong_FromLong(0); /* a cached small int: cannot fail */
    Py_SETREF(e->rows, zero);
    Py_INCREF(zero);
    Py_SETREF(e->bytes, zero);
    Py_INCREF(Py_False);
    Py_SETREF(e->skipped, Py_False);
    Py_INCREF(Py_False);
    Py_SETREF(e->suspended, Py_False);
    Py_INCREF(zero_float);
    Py_SETREF(e->started, zero_float);
    Py_INCREF(zero_float);
    Py_SETREF(e->finished, zero_float);
}

/* The constructor's arguments: path, text, statement_name, portal, bind, row_description. */
static void exec_set_args(Exec *e, PyObject *const v[6]) {
    PyObject **slots[6] = {&e->path, &e->text, &e->statement_name, &e->portal, &e->bind,
                           &e->row_description};
    for (int i = 0; i < 6; i++) {
        Py_INCREF(v[i]);
        Py_XSETREF(*slots[i], v[i]);
    }
}

static PyObject *Exec_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Exec *e = (Exec *)type->tp_alloc(type, 0);
    if (e != NULL) {
        exec_defaults(e);
    }
    return (PyObject *)e;
}

static int Exec_init(Exec *e, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"path", "text", "statement_name", "portal", "bind",
                             "row_description", NULL};
    PyObject *v[6] = {NULL, NULL, Py_None, Py_None, Py_None, Py_None};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOOO:Execution", kwlist, &v[0], &v[1],
                                     &v[2], &v[3], &v[4], &v[5])) {
        return -1;
    }
    exec_set_args(e, v);
    return 0;
}

static int Exec_traverse(Exec *e, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(e->f);
    EXEC_FIELDS(VISIT) /* context, budget and decided are the driver's objects */
#undef VISIT
    return 0;
}

static int Exec_clear(Exec *e) {
#define CLEAR(f) Py_CLEAR(e->f);
    EXEC_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void Exec_dealloc(Exec *e) {
    PyObject_GC_UnTrack(e);
    Exec_clear(e);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMemberDef Exec_members[] = {
#define MEMBER(f) {#f, T_OBJECT_EX, offsetof(Exec, f), 0, NULL},
    EXEC_FIELDS(MEMBER)
#undef MEMBER
    {NULL, 0, 0, 0, NULL},
};

/* Attributes can be set but not deleted: the C code uses the object fields without
   checking for NULL, which a member descriptor's ``del`` would leave. (Members rather than
   getset descriptors: the interpreter reads and writes members in place, a hot path.) */
static int setattr_no_delete(PyObject *self, PyObject *name, PyObject *value) {
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "attribute %R cannot be deleted", name);
        return -1;
    }
    return PyObject_GenericSetAttr(self, name, value);
}

static PyTypeObject ExecType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "protocols.postgres._tracker.ExecutionCore",
    .tp_basicsize = sizeof(Exec),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "State of tracker.Execution.",
    .tp_new = Exec_new,
    .tp_init = (initproc)Exec_init,
    .tp_dealloc = (destructor)Exec_dealloc,
    .tp_traverse = (traverseproc)Exec_traverse,
    .tp_clear = (inquiry)Exec_clear,
    .tp_members = Exec_members,
    .tp_setattro = setattr_no_delete,
};

/* A new execution of ``type`` (a subclass of ExecutionCore) without running __init__. */
static PyObject *new_execution(PyTypeObject *type, PyObject *path, PyObject *text,
                               PyObject *name, PyObject *portal, PyObject *bind,
                               PyObject *row_description) {
    Exec *e = (Exec *)type->tp_alloc(type, 0);
    if (e == NULL) {
        return NULL;
    }
    exec_defaults(e);
    PyObject *const v[6] = {path, text, name, portal, bind, row_description};
    exec_set_args(e, v);
    return (PyObject *)e;
}

/* Set once by configure(): tracker.Execution, the compiled parse_bind (a callable taking
   the body), collections.deque, and the shared (kind, None) entries. */
static PyObject *execution_type, *parse_bind, *deque_type;
static PyObject *entry_bind, *entry_sync;
static PyObject *str_append, *str_popleft, *str_frontend_py, *str_backend_py, *str_query_py;
static PyObject *str_drop_portals, *str_execution_started;
static PyObject *str_execution_finished, *str_query, *str_row_description;
static PyObject *str_extended, *str_prepared, *str_simple, *empty_bytes, *str_result_described;

static PyObject *Core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (deque_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_tracker.configure() was not called");
        return NULL;
    }
    Core *self = (Core *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->statements = PyDict_New();
    self->portals = PyDict_New();
    self->fifo = PyObject_CallNoArgs(deque_type);
    if (self->statements == NULL || self->portals == NULL || self->fifo == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(Py_None);
    self->observer = Py_None;
    self->status = 'I';
    return (PyObject *)self;
}

static int Core_init(Core *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"observer", NULL};
    PyObject *observer;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:QueryTracker", kwlist, &observer)) {
        return -1;
    }
    Py_INCREF(observer);
    Py_SETREF(self->observer, observer);
    return 0;
}

static int Core_traverse(Core *self, visitproc visit, void *arg) {
    Py_VISIT(self->observer); /* the driver's observer holds the session, which holds us */
    Py_VISIT(self->statements);
    Py_VISIT(self->portals);
    Py_VISIT(self->fifo); /* executions carry the driver's context objects */
    Py_VISIT(self->early_copy_end);
    Py_VISIT(self->copy_dropped_for);
    return 0;
}

static int Core_clear(Core *self) {
    Py_CLEAR(self->observer);
    Py_CLEAR(self->statements);
    Py_CLEAR(self->portals);
    Py_CLEAR(self->fifo);
    Py_CLEAR(self->early_copy_end);
    Py_CLEAR(self->copy_dropped_for);
    return 0;
}

static void Core_dealloc(Core *self) {
    PyObject_GC_UnTrack(self);
    Core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* -- the FIFO ------------------------------------------------------------------------- */

static int fifo_append(Core *self, PyObject *entry) {
    PyObject *r = PyObject_CallMethodOneArg(self->fifo, str_append, entry);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The head entry's kind and object (borrowed from a new reference to the entry, returned
   in *entry for the caller to release), or kind -1 when the FIFO is empty. */
static int fifo_head(Core *self, PyObject **entry, long *kind, PyObject **obj) {
    *entry = NULL;
    *kind = -1;
    *obj = NULL;
    Py_ssize_t n = PyObject_Size(self->fifo);
    if (n < 0) {
        return -1;
    }
    if (n == 0) {
        return 0;
    }
    PyObject *e = PySequence_GetItem(self->fifo, 0);
    if (e == NULL) {
        return -1;
    }
    if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 2) {
        Py_DECREF(e);
        PyErr_SetString(PyExc_TypeError, BAD_ENTRY);
        return -1;
    }
    long k = PyLong_AsLong(PyTuple_GET_ITEM(e, 0));
    if (k == -1 && PyErr_Occurred()) {
        Py_DECREF(e);
        return -1;
    }
    *entry = e;
    *kind = k;
    *obj = PyTuple_GET_ITEM(e, 1);
    return 0;
}

static PyObject *fifo_popleft(Core *self) {
    return PyObject_CallMethodNoArgs(self->fifo, str_popleft);
}

/* An execution of the FIFO as its C state (every one is a tracker.Execution, whose base
   is ExecutionCore: configure() insists); NULL with TypeError otherwise. */
static Exec *as_exec(PyObject *obj) {
    if (!PyObject_TypeCheck(obj, &ExecType)) {
        PyErr_SetString(PyExc_TypeError, "query tracker FIFO holds a non-Execution");
        return NULL;
    }
    return (Exec *)obj;
}

/* ex.<field> = True (skipped, suspended). */
static int set_true(PyObject *ex, size_t offset) {
    if (as_exec(ex) == NULL) {
        return -1;
    }
    PyObject **field = (PyObject **)((char *)ex + offset);
    Py_INCREF(Py_True);
    Py_XSETREF(*field, Py_True);
    return 0;
}

static int finish(Core *self, PyObject *ex) {
    self->done_in_batch++;
    PyObject *r = PyObject_CallMethodOneArg(self->observer, str_execution_finished, ex);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* -- frontend ------------------------------------------------------------------------- */

/* Execute: String portal, Int32 max rows (trailing bytes ignored, as parse_execute).
   Returns 1 if handled, 0 to leave the message to frontend_py, -1 on error. */
static int execute(Core *self, PyObject *body) {
    if (!PyBytes_CheckExact(body)) {
        return 0;
    }
    const char *b = PyBytes_AS_STRING(body);
    Py_ssize_t n = PyBytes_GET_SIZE(body);
    const char *nul = memchr(b, 0, (size_t)n);
    if (nul == NULL || (nul - b) + 5 > n) {
        return 0; /* malformed: the reference raises its error */
    }
    PyObject *portal = PyBytes_FromStringAndSize(b, nul - b);
    if (portal == NULL) {
        return -1;
    }
    PyObject *bind = PyDict_GetItemWithError(self->portals, portal); /* borrowed */
    if (bind == NULL) {
        Py_DECREF(portal);
        return PyErr_Occurred() ? -1 : 0; /* a SQL-level cursor: the reference's case */
    }
    if (!PyTuple_Check(bind) || PyTuple_GET_SIZE(bind) < 2) {
        Py_DECREF(portal);
        return 0;
    }
    /* Held while Python may run (the attribute reads, Execution()): it keeps `name`. */
    Py_INCREF(bind);
    PyObject *name = PyTuple_GET_ITEM(bind, 1);
    PyObject *stmt = PyDict_GetItemWithError(self->statements, name); /* borrowed */
    if (stmt == NULL && PyErr_Occurred()) {
        Py_DECREF(bind);
        Py_DECREF(portal);
        return -1;
    }
    PyObject *query = Py_None, *row_description = Py_None;
    Py_INCREF(query);
    Py_INCREF(row_description);
    if (stmt != NULL) {
        Py_INCREF(stmt); /* reading its attributes may run Python that drops it */
        Py_SETREF(query, PyObject_GetAttr(stmt, str_query));
        Py_SETREF(row_description, PyObject_GetAttr(stmt, str_row_description));
        Py_DECREF(stmt);
        if (query == NULL || row_description == NULL) {
            Py_XDECREF(query);
            Py_XDECREF(row_description);
            Py_DECREF(bind);
            Py_DECREF(portal);
            return -1;
        }
    }
    int unnamed = PyBytes_Check(name) && PyBytes_GET_SIZE(name) == 0;
    PyObject *path = unnamed ? str_extended : str_prepared;
    PyObject *ex = new_execution((PyTypeObject *)execution_type, path, query, name, portal,
                                 bind, row_description);
    Py_DECREF(query);
    Py_DECREF(row_description);
    Py_DECREF(bind);
    Py_DECREF(portal);
    if (ex == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(self->observer, str_execution_started, ex);
    if (r == NULL) {
        Py_DECREF(ex);
        return -1;
    }
    Py_DECREF(r);
    PyObject *kind = PyLong_FromLong(K_EXECUTE);
    if (kind == NULL) {
        Py_DECREF(ex);
        return -1;
    }
    PyObject *entry = PyTuple_Pack(2, kind, ex);
    Py_DECREF(kind);
    Py_DECREF(ex);
    if (entry == NULL) {
        return -1;
    }
    int rc = fifo_append(self, entry);
    Py_DECREF(entry);
    return rc < 0 ? -1 : 1;
}

/* Describe: Byte1 'S' or 'P', String name (trailing bytes ignored, as
   parse_describe_or_close). Returns 1 if handled, 0 to leave it to frontend_py. */
static int describe(Core *self, PyObject *body) {
    if (!PyBytes_CheckExact(body) || PyBytes_GET_SIZE(body) < 1) {
        return 0;
    }
    const char *b = PyBytes_AS_STRING(body);
    Py_ssize_t n = PyBytes_GET_SIZE(body);
    if (b[0] != 'S' && b[0] != 'P') {
        return 0; /* malformed: the reference raises its error */
    }
    const char *nul = memchr(b + 1, 0, (size_t)(n - 1));
    if (nul == NULL) {
        return 0;
    }
    PyObject *name = PyBytes_FromStringAndSize(b + 1, nul - b - 1);
    if (name == NULL) {
        return -1;
    }
    PyObject *kind = PyLong_FromLong(b[0] == 'S' ? K_DESCRIBE_S : K_DESCRIBE_P);
    PyObject *entry = kind == NULL ? NULL : PyTuple_Pack(2, kind, name);
    Py_XDECREF(kind);
    Py_DECREF(name);
    if (entry == NULL) {
        return -1;
    }
    int rc = fifo_append(self, entry);
    Py_DECREF(entry);
    return rc < 0 ? -1 : 1;
}

static PyObject *Core_frontend(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "frontend(mtype, body)");
        return NULL;
    }
    long mtype = PyLong_AsLong(args[0]);
    if (mtype == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *body = args[1];
    if (self->copy_in || self->skipping) {
        /* A copy-in, or the server discarding up to a Sync: the reference's. */
        PyObject *call[3] = {(PyObject *)self, args[0], body};
        return PyObject_VectorcallMethod(str_frontend_py, call, 3, NULL);
    }
    if (mtype == 'B') {
        /* Parsed (validated) here, not lazily: a Bind whose lengths lie is refused. */
        PyObject *bind = PyObject_CallOneArg(parse_bind, body);
        if (bind == NULL) {
            return NULL;
        }
        if (!PyTuple_Check(bind) || PyTuple_GET_SIZE(bind) < 1 ||
            PyDict_SetItem(self->portals, PyTuple_GET_ITEM(bind, 0), bind) < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "parse_bind did not return a Bind");
            }
            Py_DECREF(bind);
            return NULL;
        }
        Py_DECREF(bind);
        if (fifo_append(self, entry_bind) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (mtype == 'E') {
        int rc = execute(self, body);
        if (rc < 0) {
            return NULL;
        }
        if (rc > 0) {
            Py_RETURN_NONE;
        }
    } else if (mtype == 'S') {
        if (fifo_append(self, entry_sync) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    } else if (mtype == 'D') {
        int rc = describe(self, body);
        if (rc < 0) {
            return NULL;
        }
        if (rc > 0) {
            Py_RETURN_NONE;
        }
    }
    PyObject *call[3] = {(PyObject *)self, args[0], body};
    return PyObject_VectorcallMethod(str_frontend_py, call, 3, NULL);
}

/* query(text): tracker.QueryTracker.query_py, a simple Query whose text the driver read. */
static PyObject *Core_query(Core *self, PyObject *text) {
    if (self->copy_in || self->skipping) {
        PyObject *call[2] = {(PyObject *)self, text};
        return PyObject_VectorcallMethod(str_query_py, call, 2, NULL);
    }
    /* A simple query destroys the unnamed statement. */
    int has = PyDict_Contains(self->statements, empty_bytes);
    if (has < 0 || (has && PyDict_DelItem(self->statements, empty_bytes) < 0)) {
        return NULL;
    }
    PyObject *ex = new_execution((PyTypeObject *)execution_type, str_simple, text, Py_None,
                                 Py_None, Py_None, Py_None);
    if (ex == NULL) {
        return NULL;
    }
    PyObject *kind = PyLong_FromLong(K_QUERY);
    PyObject *entry = kind == NULL ? NULL : PyTuple_Pack(2, kind, ex);
    Py_XDECREF(kind);
    if (entry == NULL || fifo_append(self, entry) < 0) {
        Py_XDECREF(entry);
        Py_DECREF(ex);
        return NULL;
    }
    Py_DECREF(entry);
    PyObject *r = PyObject_CallMethodOneArg(self->observer, str_execution_started, ex);
    Py_DECREF(ex);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* -- backend -------------------------------------------------------------------------- */

static int ready_for_query(Core *self, PyObject *body) {
    if (!PyBytes_Check(body) || self->skipping) {
        return 0; /* the reference (while skipping: it refuses the answer) */
    }
    self->status = PyBytes_GET_SIZE(body) ? (unsigned char)PyBytes_AS_STRING(body)[0] : 'I';
    for (;;) {
        Py_ssize_t n = PyObject_Size(self->fifo);
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            break;
        }
        PyObject *entry = fifo_popleft(self);
        if (entry == NULL) {
            return -1;
        }
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) {
            Py_DECREF(entry);
            PyErr_SetString(PyExc_TypeError, BAD_ENTRY);
            return -1;
        }
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(entry, 0));
        PyObject *obj = PyTuple_GET_ITEM(entry, 1);
        int rc = 0, stop = 0;
        if (kind == -1 && PyErr_Occurred()) {
            rc = -1;
        } else if (kind == K_QUERY) {
            rc = finish(self, obj);
            stop = 1;
        } else if (kind == K_SYNC || kind == K_DENIED_QUERY) {
            stop = 1;
        } else if (kind == K_EXECUTE) {
            /* Should not happen (the server answers every Execute before Z). */
            rc = set_true(obj, offsetof(Exec, skipped));
            if (rc == 0) {
                rc = finish(self, obj);
            }
        }
        Py_DECREF(entry);
        if (rc < 0) {
            return -1;
        }
        if (stop) {
            break;
        }
    }
    self->copy_in = 0;
    self->done_in_batch = 0;
    if (self->status == 'I') {
        /* Named portals die with the transaction: the reference's clean-up, only when
           there is something to drop. */
        Py_ssize_t n = PyDict_GET_SIZE(self->portals);
        if (n > 1 || (n == 1 && !PyDict_Contains(self->portals, empty_bytes))) {
            PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self, str_drop_portals);
            if (r == NULL) {
                return -1;
            }
            Py_DECREF(r);
        }
    }
    return 1;
}

/* CommandComplete 'C', EmptyQueryResponse 'I', PortalSuspended 's'. */
static int result_end(Core *self, long mtype, PyObject *body) {
    PyObject *entry;
    long kind;
    PyObject *ex;
    if (fifo_head(self, &entry, &kind, &ex) < 0) {
        return -1;
    }
    if (kind != K_EXECUTE && kind != K_QUERY) {
        Py_XDECREF(entry);
        return 1;
    }
    int rc = 0;
    if (mtype == 'C') {
        /* Execution.add_tag, on the C fields */
        Exec *e = as_exec(ex);
        if (e == NULL) {
            rc = -1;
        } else if (e->_tag_bodies == Py_None) {
            PyObject *list = PyList_New(1);
            if (list == NULL) {
                rc = -1;
            } else {
                Py_INCREF(body);
                PyList_SET_ITEM(list, 0, body);
                Py_SETREF(e->_tag_bodies, list);
            }
        } else if (e->_tag_bodies != NULL && PyList_CheckExact(e->_tag_bodies)) {
            rc = PyList_Append(e->_tag_bodies, body);
        } else {
            PyObject *r = PyObject_CallMethod(ex, "add_tag", "O", body);
            rc = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
    } else if (mtype == 's') {
        rc = set_true(ex, offsetof(Exec, suspended));
    }
    self->copy_in = 0;
    if (rc == 0 && kind == K_EXECUTE) {
        PyObject *popped = fifo_popleft(self);
        if (popped == NULL) {
            rc = -1;
        } else {
            Py_DECREF(popped);
            rc = finish(self, ex); /* ex is still alive: `entry` holds it */
        }
    }
    Py_DECREF(entry);
    return rc < 0 ? -1 : 1;
}

/* The first queued Execute (after the head, which the caller popped) matching `name`:
   by statement name when `by_statement` (every one still undescribed gets `body`), else
   by portal (the first one gets it). */
static int describe_queued(Core *self, PyObject *name, PyObject *body, int by_statement) {
    PyObject *it = PyObject_GetIter(self->fifo);
    if (it == NULL) {
        return -1;
    }
    PyObject *entry;
    int rc = 0;
    while ((entry = PyIter_Next(it)) != NULL) {
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) {
            PyErr_SetString(PyExc_TypeError, BAD_ENTRY);
            rc = -1;
        } else {
            long kind = PyLong_AsLong(PyTuple_GET_ITEM(entry, 0));
            PyObject *obj = PyTuple_GET_ITEM(entry, 1);
            if (kind == -1 && PyErr_Occurred()) {
                rc = -1;
            } else if (kind == K_EXECUTE && PyObject_TypeCheck(obj, &ExecType)) {
                Exec *e = (Exec *)obj;
                PyObject *key = by_statement ? e->statement_name : e->portal;
                int same = PyObject_RichCompareBool(key, name, Py_EQ);
                if (same < 0) {
                    rc = -1;
                } else if (same && (!by_statement || e->row_description == Py_None)) {
                    Py_INCREF(body);
                    Py_SETREF(e->row_description, body);
                    if (!by_statement) {
                        rc = 1; /* the first one only */
                    }
                }
            }
        }
        Py_DECREF(entry);
        if (rc != 0) {
            break;
        }
    }
    Py_DECREF(it);
    if (rc == 0 && PyErr_Occurred()) {
        rc = -1;
    }
    return rc < 0 ? -1 : 1;
}

/* RowDescription 'T': tracker.QueryTracker._row_description. */
static int row_description(Core *self, PyObject *body) {
    PyObject *entry;
    long kind;
    PyObject *obj;
    if (fifo_head(self, &entry, &kind, &obj) < 0) {
        return -1;
    }
    int rc = 1;
    if (kind == K_DESCRIBE_S || kind == K_DESCRIBE_P) {
        if (kind == K_DESCRIBE_S) {
            PyObject *stmt = PyDict_GetItemWithError(self->statements, obj); /* borrowed */
            if (stmt == NULL) {
                rc = PyErr_Occurred() ? -1 : 1;
            } else {
                Py_INCREF(stmt); /* setattr may run Python */
                rc = PyObject_SetAttr(stmt, str_row_description, body) < 0 ? -1 : 1;
                Py_DECREF(stmt);
            }
        }
        if (rc > 0) {
            PyObject *popped = fifo_popleft(self);
            if (popped == NULL) {
                rc = -1;
            } else {
                Py_DECREF(popped);
                /* Executions queued behind (pipelined) were created before this
                   description arrived. `entry` keeps the name alive. */
                rc = describe_queued(self, obj, body, kind == K_DESCRIBE_S);
            }
        }
    } else if (kind == K_EXECUTE || kind == K_QUERY) {
        Exec *e = as_exec(obj);
        if (e == NULL) {
            rc = -1;
        } else {
            Py_INCREF(body);
            Py_SETREF(e->row_description, body);
            Py_INCREF(Py_None);
            Py_SETREF(e->mask_plan, Py_None);
            PyObject *r = PyObject_CallMethodOneArg(self->observer, str_result_described, obj);
            rc = r == NULL ? -1 : 1;
            Py_XDECREF(r);
        }
    }
    Py_XDECREF(entry);
    return rc;
}

/* Pops the head if its kind is a or b (responses that only acknowledge). */
static int acknowledge(Core *self, long a, long b, long c) {
    PyObject *entry;
    long kind;
    PyObject *obj;
    if (fifo_head(self, &entry, &kind, &obj) < 0) {
        return -1;
    }
    Py_XDECREF(entry);
    if (kind >= 0 && (kind == a || kind == b || kind == c)) {
        PyObject *popped = fifo_popleft(self);
        if (popped == NULL) {
            return -1;
        }
        Py_DECREF(popped);
    }
    return 1;
}

static PyObject *Core_backend(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "backend(mtype, body)");
        return NULL;
    }
    long mtype = PyLong_AsLong(args[0]);
    if (mtype == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *body = args[1];
    int rc = 0;
    switch (mtype) {
    case 'Z':
        rc = ready_for_query(self, body);
        break;
    case 'C':
    case 'I':
    case 's':
        rc = result_end(self, mtype, body);
        break;
    case '1':
    case '2':
    case '3': /* ParseComplete, BindComplete, CloseComplete */
        rc = acknowledge(self, K_PARSE, K_BIND, K_CLOSE);
        break;
    case 'n': /* NoData */
        rc = acknowledge(self, K_DESCRIBE_S, K_DESCRIBE_P, -2);
        break;
    case 'G': /* CopyInResponse: the reference (it checks what stands behind the COPY) */
        rc = 0;
        break;
    case 'T':
        rc = PyBytes_CheckExact(body) ? row_description(self, body) : 0;
        break;
    case 'E':
        rc = 0; /* ErrorResponse: the reference */
        break;
    default:
        rc = 1; /* ParameterDescription, copy responses, notices...: nothing to track */
    }
    if (rc < 0) {
        return NULL;
    }
    if (rc > 0) {
        Py_RETURN_NONE;
    }
    PyObject *call[3] = {(PyObject *)self, args[0], body};
    return PyObject_VectorcallMethod(str_backend_py, call, 3, NULL);
}

static PyObject *Core_head_execution(Core *self, PyObject *unused) {
    PyObject *entry;
    long kind;
    PyObject *obj;
    if (fifo_head(self, &entry, &kind, &obj) < 0) {
        return NULL;
    }
    if (kind == K_EXECUTE || kind == K_QUERY) {
        Py_INCREF(obj);
        Py_DECREF(entry);
        return obj;
    }
    Py_XDECREF(entry);
    Py_RETURN_NONE;
}

/* -- runs of a read ------------------------------------------------------------------ */

/* One scanner entry (type, start, stop, count) of a read, as C values; 0 if malformed. */
static int entry_fields(PyObject *entry, long *mtype, Py_ssize_t *start, Py_ssize_t *stop,
                        Py_ssize_t *count) {
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4) {
        return 0;
    }
    /* Exact ints, as the scanner makes them: reading them runs no Python code that could
       drop the borrowed entry (anything else is the driver's loop's). */
    for (Py_ssize_t k = 0; k < 4; k++) {
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(entry, k))) {
            return 0;
        }
    }
    *mtype = PyLong_AsLong(PyTuple_GET_ITEM(entry, 0));
    *start = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 1));
    *stop = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
    *count = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 3));
    if (PyErr_Occurred()) {
        return -1;
    }
    return 1;
}

/* Call a METH_FASTCALL method of ours with (mtype, body of buf[start + 5:stop]). */
static PyObject *feed_one(Core *self, PyObject *(*method)(Core *, PyObject *const *, Py_ssize_t),
                          PyObject *buf, long mtype, Py_ssize_t start, Py_ssize_t stop) {
    PyObject *args[2];
    args[0] = PyLong_FromLong(mtype);
    if (args[0] == NULL) {
        return NULL;
    }
    args[1] = PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + start + 5, stop - start - 5);
    if (args[1] == NULL) {
        Py_DECREF(args[0]);
        return NULL;
    }
    PyObject *r = method(self, args, 2);
    Py_DECREF(args[0]);
    Py_DECREF(args[1]);
    return r;
}

/* frontend_run(buf, entries) -> index: tracker.QueryTracker.frontend_run_py. */
static PyObject *Core_frontend_run(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "frontend_run(buf, entries: list)");
        return NULL;
    }
    PyObject *buf = args[0], *entries = args[1];
    Py_ssize_t i = 0;
    if (!PyBytes_CheckExact(buf) || self->copy_in || self->skipping) {
        return PyLong_FromSsize_t(0);
    }
    for (; i < PyList_GET_SIZE(entries); i++) {
        long mtype;
        Py_ssize_t start, stop, count;
        int ok = entry_fields(PyList_GET_ITEM(entries, i), &mtype, &start, &stop, &count);
        if (ok < 0) {
            return NULL;
        }
        if (!ok || (mtype != 'B' && mtype != 'D' && mtype != 'E' && mtype != 'S') || start < 0 ||
            stop > PyBytes_GET_SIZE(buf) || stop - start < 5) {
            break;
        }
        PyObject *r = feed_one(self, Core_frontend, buf, mtype, start, stop);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    return PyLong_FromSsize_t(i);
}

/* backend_run(buf, entries, rows) -> (index, idle): tracker.QueryTracker.backend_run_py. */
static PyObject *Core_backend_run(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "backend_run(buf, entries: list, rows)");
        return NULL;
    }
    PyObject *buf = args[0], *entries = args[1], *rows = args[2];
    Py_ssize_t i = 0;
    int idle = 0;
    if (PyBytes_CheckExact(buf)) {
        for (; i < PyList_GET_SIZE(entries); i++) {
            long mtype;
            Py_ssize_t start, stop, count;
            PyObject *entry = PyList_GET_ITEM(entries, i);
            int ok = entry_fields(entry, &mtype, &start, &stop, &count);
            if (ok < 0) {
                return NULL;
            }
            if (!ok || start < 0 || stop > PyBytes_GET_SIZE(buf) || stop - start < 5) {
                break;
            }
            if (mtype == 'D') {
                PyObject *ex = Core_head_execution(self, NULL);
                if (ex == NULL) {
                    return NULL;
                }
                if (ex == Py_None) {
                    /* Rows nothing asked for: the driver's (it ends the session). */
                    Py_DECREF(ex);
                    break;
                }
                /* Its fields go to Python (``+=`` on ex.rows, the rows callback), which may
                   drop the list's reference to it. */
                Py_INCREF(entry);
                if (ex != Py_None) {
                    /* ex.rows += count */
                    PyObject *n = PyTuple_GET_ITEM(entry, 3);
                    Exec *e = as_exec(ex);
                    PyObject *sum = e == NULL ? NULL : PyNumber_InPlaceAdd(e->rows, n);
                    if (sum == NULL) {
                        Py_DECREF(ex);
                        Py_DECREF(entry);
                        return NULL;
                    }
                    Py_SETREF(e->rows, sum);
                    if (rows == Py_None) {
                        /* ex.bytes += stop - start (the rows callback counts them itself) */
                        PyObject *n_bytes = PyLong_FromSsize_t(stop - start);
                        PyObject *total =
                            n_bytes == NULL ? NULL : PyNumber_InPlaceAdd(e->bytes, n_bytes);
                        Py_XDECREF(n_bytes);
                        if (total == NULL) {
                            Py_DECREF(ex);
                            Py_DECREF(entry);
                            return NULL;
                        }
                        Py_SETREF(e->bytes, total);
                    } else {
                        PyObject *call[5] = {ex, buf, PyTuple_GET_ITEM(entry, 1),
                                             PyTuple_GET_ITEM(entry, 2), n};
                        PyObject *r = PyObject_Vectorcall(rows, call, 5, NULL);
                        if (r == NULL) {
                            Py_DECREF(ex);
                            Py_DECREF(entry);
                            return NULL;
                        }
                        Py_DECREF(r);
                    }
                }
                Py_DECREF(ex);
                Py_DECREF(entry);
                continue;
            }
            if (mtype <= 0 || mtype > 127 || mtype == 'E' ||
                strchr("TCZIsn123t", (int)mtype) == NULL) {
                break; /* errors, copy data, settings, notices...: the driver's loop */
            }
            if (mtype != 't') { /* ParameterDescription: nothing to track */
                PyObject *r = feed_one(self, Core_backend, buf, mtype, start, stop);
                if (r == NULL) {
                    return NULL;
                }
                Py_DECREF(r);
            }
            if (mtype == 'Z') {
                Py_ssize_t n = PyObject_Size(self->fifo);
                if (n < 0) {
                    return NULL;
                }
                if (n == 0) {
                    idle = 1;
                }
            }
        }
    }
    return Py_BuildValue("(nO)", i, idle ? Py_True : Py_False);
}

static PyMethodDef Core_methods[] = {
    {"frontend", (PyCFunction)(void (*)(void))Core_frontend, METH_FASTCALL,
     "Feed one frontend message (see QueryTracker.frontend_py)."},
    {"backend", (PyCFunction)(void (*)(void))Core_backend, METH_FASTCALL,
     "Feed one backend message other than DataRow (see QueryTracker.backend_py)."},
    {"query", (PyCFunction)Core_query, METH_O,
     "A simple Query, its text already read (see QueryTracker.query_py)."},
    {"head_execution", (PyCFunction)Core_head_execution, METH_NOARGS,
     "The execution the next DataRows belong to, if any."},
    {"frontend_run", (PyCFunction)(void (*)(void))Core_frontend_run, METH_FASTCALL,
     "Feed the leading Bind/Describe/Execute/Sync entries of a read (see frontend_run_py)."},
    {"backend_run", (PyCFunction)(void (*)(void))Core_backend_run, METH_FASTCALL,
     "Feed the leading entries of a read the tracker alone handles (see backend_run_py)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Core_members[] = {
    {"observer", T_OBJECT_EX, offsetof(Core, observer), 0, NULL},
    {"statements", T_OBJECT_EX, offsetof(Core, statements), 0, NULL},
    {"portals", T_OBJECT_EX, offsetof(Core, portals), 0, NULL},
    {"_fifo", T_OBJECT_EX, offsetof(Core, fifo), READONLY, NULL},
    {"status", T_INT, offsetof(Core, status), 0, NULL},
    {"copy_in", T_BOOL, offsetof(Core, copy_in), 0, NULL},
    {"skipping", T_BOOL, offsetof(Core, skipping), 0, NULL},
    {"early_copy_end", T_OBJECT, offsetof(Core, early_copy_end), 0, NULL},
    {"copy_dropped_for", T_OBJECT, offsetof(Core, copy_dropped_for), 0, NULL},
    {"_done_in_batch", T_PYSSIZET, offsetof(Core, done_in_batch), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "protocols.postgres._tracker.TrackerCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "State and fast paths of tracker.QueryTracker.",
    .tp_new = Core_new,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_setattro = setattr_no_delete,
};

/* configure(execution_type, parse_bind, deque_type, kinds): called once by tracker.py,
   which owns these; ``kinds`` is its tuple of FIFO kind constants, checked against ours. */
static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *ex_type, *bind_fn, *dq, *kinds;
    if (!PyArg_ParseTuple(args, "OOOO!:configure", &ex_type, &bind_fn, &dq, &PyTuple_Type,
                          &kinds)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(kinds) != K_DENIED_PARSE + 1) {
        PyErr_SetString(PyExc_ValueError, "FIFO kinds differ from the compiled tracker's");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kinds); i++) {
        long k = PyLong_AsLong(PyTuple_GET_ITEM(kinds, i));
        if (k != i) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "FIFO kinds differ from the compiled tracker's");
            }
            return NULL;
        }
    }
    PyObject *bind_kind = PyLong_FromLong(K_BIND), *sync_kind = PyLong_FromLong(K_SYNC);
    if (bind_kind == NULL || sync_kind == NULL) {
        Py_XDECREF(bind_kind);
        Py_XDECREF(sync_kind);
        return NULL;
    }
    PyObject *eb = PyTuple_Pack(2, bind_kind, Py_None);
    PyObject *es = PyTuple_Pack(2, sync_kind, Py_None);
    Py_DECREF(bind_kind);
    Py_DECREF(sync_kind);
    if (eb == NULL || es == NULL) {
        Py_XDECREF(eb);
        Py_XDECREF(es);
        return NULL;
    }
    Py_XSETREF(entry_bind, eb);
    Py_XSETREF(entry_sync, es);
    if (!PyType_Check(ex_type) || !PyType_IsSubtype((PyTypeObject *)ex_type, &ExecType)) {
        PyErr_SetString(PyExc_TypeError, "execution_type must subclass ExecutionCore");
        return NULL;
    }
    Py_INCREF(ex_type);
    Py_XSETREF(execution_type, ex_type);
    Py_INCREF(bind_fn);
    Py_XSETREF(parse_bind, bind_fn);
    Py_INCREF(dq);
    Py_XSETREF(deque_type, dq);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(execution_type, parse_bind, deque_type, kinds): set once by tracker.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "protocols.postgres._tracker",
    "Compiled fast path of the PostgreSQL query tracker (see tracker.py).", -1, module_methods,
};

static int intern(PyObject **slot, const char *s) {
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__tracker(void) {
    if (intern(&str_append, "append") < 0 || intern(&str_popleft, "popleft") < 0 ||
        intern(&str_frontend_py, "frontend_py") < 0 || intern(&str_query_py, "query_py") < 0 || intern(&str_backend_py, "backend_py") < 0 ||
        intern(&str_drop_portals, "_drop_portals") < 0 ||
        intern(&str_execution_started, "execution_started") < 0 ||
        intern(&str_execution_finished, "execution_finished") < 0 ||
        intern(&str_query, "query") < 0 || intern(&str_row_description, "row_description") < 0 ||
        intern(&str_extended, "extended") < 0 || intern(&str_simple, "simple") < 0 ||
        intern(&str_result_described, "result_described") < 0 ||
        intern(&str_prepared, "prepared") < 0) {
        return NULL;
    }
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (empty_bytes == NULL) {
        return NULL;
    }
    zero_float = PyFloat_FromDouble(0.0);
    if (zero_float == NULL || PyType_Ready(&CoreType) < 0 || PyType_Ready(&ExecType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "TrackerCore", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ExecType);
    if (PyModule_AddObject(m, "ExecutionCore", (PyObject *)&ExecType) < 0) {
        Py_DECREF(&ExecType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
