/*
 * Compiled implementation of protocols.postgres.rows.rewrite_data_rows.
 *
 * Why it exists: masking rewrites every DataRow of a masked result, and the pure-Python
 * loop costs about 3 microseconds per row with three masked columns (profiled with
 * benchmarks/suite.py --only wide-masked), several times what forwarding the row costs.
 * This module does the same walk in C. The pure-Python function stays the reference:
 * rows.py uses this one only when it imported, and the unit tests run both against the
 * same inputs (tests/unit/test_pg_rows.py), including lying lengths.
 *
 * Interface (called by rows.py, never directly):
 *
 *     rewrite(buf, start, stop, columns, constant_type, screened_type, violation)
 *         -> bytearray
 *
 * ``columns`` is a sequence of (index, rewrite) in increasing index order; ``rewrite`` is
 * called with the value's bytes (never for NULL) and returns bytes or None (NULL). A
 * rewrite of type ``constant_type`` (rows.ConstantValue) is not called: its ``value``
 * attribute is written for every non-NULL value. A rewrite of type ``screened_type``
 * (rows.ScreenedValue) has its byte screen run here, in a first pass over the rows, and
 * its ``rewrite(values, hits)`` is called once with the values the screen selected
 * (content detectors: most text holds nothing to find, and a Python call per value cost
 * more than the rest of the row); the second pass writes the rows.
 * ``violation(message)`` builds the exception raised for a malformed row (PeerViolation);
 * messages match rows.py.
 *
 * Spec: PostgreSQL manual, "Message Formats", DataRow ('D'): Byte1('D'), Int32 length
 * (self included), Int16 column count, then per column Int32 length (-1 = NULL) and
 * that many bytes.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Out;

static int out_reserve(Out *out, Py_ssize_t extra) {
    if (out->len + extra <= out->cap) {
        return 0;
    }
    Py_ssize_t cap = out->cap ? out->cap : 4096;
    while (cap < out->len + extra) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_Realloc(out->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->data = data;
    out->cap = cap;
    return 0;
}

static int out_put(Out *out, const char *src, Py_ssize_t n) {
    if (n <= 0) {
        return 0;
    }
    if (out_reserve(out, n) < 0) {
        return -1;
    }
    memcpy(out->data + out->len, src, (size_t)n);
    out->len += n;
    return 0;
}

static int out_put_i32(Out *out, int32_t v) {
    unsigned char b[4];
    uint32_t u = (uint32_t)v;
    b[0] = (unsigned char)(u >> 24);
    b[1] = (unsigned char)(u >> 16);
    b[2] = (unsigned char)(u >> 8);
    b[3] = (unsigned char)u;
    return out_put(out, (const char *)b, 4);
}

static inline int32_t read_i32(const unsigned char *p) {
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                     (uint32_t)p[3]);
}

static inline int16_t read_i16(const unsigned char *p) {
    return (int16_t)(((uint16_t)p[0] << 8) | (uint16_t)p[1]);
}

/* Raise violation(message); always returns -1. */
static int raise_violation(PyObject *violation, PyObject *message) {
    if (message == NULL) {
        return -1;
    }
    PyObject *exc = PyObject_CallOneArg(violation, message);
    Py_DECREF(message);
    if (exc == NULL) {
        return -1;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return -1;
}

static int violation_str(PyObject *violation, const char *text) {
    return raise_violation(violation, PyUnicode_FromString(text));
}

#define MAX_NEEDLES 64 /* rows.MAX_NEEDLES */

/* One needle of a ScreenedValue's screen (see rows.ScreenedValue). */
typedef struct {
    int table; /* index into the screen's tables; -1: the value itself */
    int guard; /* an earlier needle that must have been found; -1: none */
    const char *text; /* borrowed from the needle's bytes (kept alive by Column.screen_obj) */
    Py_ssize_t len;
    long bits;
    int at_start; /* the text must begin the value, not just occur in it */
} Needle;

typedef struct {
    Py_ssize_t min_length;
    int ntables;
    const unsigned char **tables; /* ntables translate tables of 256 bytes */
    int nneedles;
    Needle needles[MAX_NEEDLES];
} Screen;

/* One masked column of the plan. */
typedef struct {
    Py_ssize_t index;
    PyObject *rewrite;  /* borrowed from ``columns`` (kept alive by the caller's tuple) */
    int constant;       /* 1: write ``value`` without calling */
    const char *value;  /* the constant's bytes; NULL with constant = 1 means SQL NULL */
    Py_ssize_t value_len;
    PyObject *value_obj; /* owned reference to the constant's bytes object */
    Screen *screen;      /* ScreenedValue: the screen; NULL otherwise */
    PyObject *screen_obj; /* owned: (rewrite, tables, needles) of the ScreenedValue */
    /* ScreenedValue batch: the values the screen selected (collect pass), their hits, the
     * rewrite's results, and where each selected value starts in ``buf``. */
    PyObject *batch_values, *batch_hits, *results;
    Py_ssize_t *selected, nselected, cap_selected, next;
} Column;

/* Scratch space for translated copies of one value, reused across values. */
typedef struct {
    unsigned char *data;
    Py_ssize_t cap;
} Scratch;

/* Whether ``needle`` occurs in ``hay``. The copies a screen searches are short and made of
 * a few distinct bytes ("aaaaa-9-aaaa-9999-99-99"): a plain loop on the first byte beats
 * memmem, whose setup costs more than such a search (measured: 30% of a screen's time). */
static int contains(const unsigned char *hay, Py_ssize_t n, const unsigned char *needle,
                    Py_ssize_t len) {
    const unsigned char first = needle[0];
    if (len == 1) {
        return memchr(hay, first, (size_t)n) != NULL;
    }
    const unsigned char second = needle[1];
    for (Py_ssize_t i = 0, last = n - len; i <= last; i++) {
        if (hay[i] != first || hay[i + 1] != second) {
            continue;
        }
        Py_ssize_t k = 2;
        while (k < len && hay[i + k] == needle[k]) {
            k++;
        }
        if (k == len) {
            return 1;
        }
    }
    return 0;
}

/* The screen's hits for one value (rows.ScreenedValue.hits); -1 on memory error. */
static long screen_hits(const Screen *sc, Scratch *scratch, const unsigned char *value,
                        Py_ssize_t n) {
    if (n < sc->min_length) {
        return 0;
    }
    if (sc->ntables > 0 && scratch->cap < n * sc->ntables) {
        unsigned char *data = PyMem_Realloc(scratch->data, (size_t)(n * sc->ntables));
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        scratch->data = data;
        scratch->cap = n * sc->ntables;
    }
    unsigned int translated = 0; /* bit t: table t's copy is in scratch */
    char found[MAX_NEEDLES];
    long hits = 0;
    for (int i = 0; i < sc->nneedles; i++) {
        const Needle *nd = &sc->needles[i];
        found[i] = 0;
        if ((nd->guard >= 0 && !found[nd->guard]) || nd->len > n) {
            continue; /* a needle longer than the value: spare the translation too */
        }
        const unsigned char *hay = value;
        if (nd->table >= 0) {
            unsigned char *copy = scratch->data + (Py_ssize_t)nd->table * n;
            if (!(translated & (1u << nd->table))) {
                const unsigned char *t = sc->tables[nd->table];
                for (Py_ssize_t k = 0; k < n; k++) {
                    copy[k] = t[value[k]];
                }
                translated |= 1u << nd->table;
            }
            hay = copy;
        }
        const unsigned char *text = (const unsigned char *)nd->text;
        if (nd->at_start ? memcmp(hay, text, (size_t)nd->len) == 0
                         : contains(hay, n, text, nd->len)) {
            found[i] = 1;
            hits |= nd->bits;
        }
    }
    return hits;
}

/* Read a ScreenedValue's screen into ``c``; -1 with an exception if it is malformed. */
static int load_screen(Column *c) {
    PyObject *obj = c->rewrite;
    PyObject *rewrite = PyObject_GetAttrString(obj, "rewrite");
    PyObject *tables = PyObject_GetAttrString(obj, "tables");
    PyObject *needles = PyObject_GetAttrString(obj, "needles");
    PyObject *min_length = PyObject_GetAttrString(obj, "min_length");
    int rc = -1;
    if (rewrite == NULL || tables == NULL || needles == NULL || min_length == NULL) {
        goto done;
    }
    if (!PyTuple_Check(tables) || !PyTuple_Check(needles) ||
        PyTuple_GET_SIZE(tables) > 16 || PyTuple_GET_SIZE(needles) > MAX_NEEDLES) {
        PyErr_SetString(PyExc_TypeError, "a screen needs tuples of tables and needles");
        goto done;
    }
    Screen *sc = PyMem_Calloc(1, sizeof(Screen) + sizeof(char *) * 16);
    if (sc == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    c->screen = sc;
    sc->tables = (const unsigned char **)(sc + 1);
    sc->min_length = PyNumber_AsSsize_t(min_length, PyExc_OverflowError);
    if (sc->min_length == -1 && PyErr_Occurred()) {
        goto done;
    }
    sc->ntables = (int)PyTuple_GET_SIZE(tables);
    for (int t = 0; t < sc->ntables; t++) {
        PyObject *table = PyTuple_GET_ITEM(tables, t);
        if (!PyBytes_Check(table) || PyBytes_GET_SIZE(table) != 256) {
            PyErr_SetString(PyExc_TypeError, "a screen table must be 256 bytes");
            goto done;
        }
        sc->tables[t] = (const unsigned char *)PyBytes_AS_STRING(table);
    }
    sc->nneedles = (int)PyTuple_GET_SIZE(needles);
    for (int i = 0; i < sc->nneedles; i++) {
        PyObject *item = PyTuple_GET_ITEM(needles, i);
        Needle *nd = &sc->needles[i];
        PyObject *text;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 5 ||
            !PyBytes_Check(text = PyTuple_GET_ITEM(item, 1)) || PyBytes_GET_SIZE(text) == 0) {
            PyErr_SetString(PyExc_TypeError,
                            "a screen needle is (table, bytes, bits, guard, at_start)");
            goto done;
        }
        nd->at_start = PyObject_IsTrue(PyTuple_GET_ITEM(item, 4));
        if (nd->at_start < 0) {
            goto done;
        }
        /* Range-checked as longs, before narrowing (2**32 must not pass as 0). */
        long table = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        nd->bits = PyLong_AsLong(PyTuple_GET_ITEM(item, 2));
        long guard = PyLong_AsLong(PyTuple_GET_ITEM(item, 3));
        if (PyErr_Occurred()) {
            goto done;
        }
        if (table < -1 || table >= sc->ntables || guard < -1 || guard >= i || nd->bits < 0) {
            PyErr_SetString(PyExc_ValueError, "a screen needle is malformed");
            goto done;
        }
        nd->table = (int)table;
        nd->guard = (int)guard;
        nd->text = PyBytes_AS_STRING(text);
        nd->len = PyBytes_GET_SIZE(text);
    }
    c->screen_obj = PyTuple_Pack(3, rewrite, tables, needles);
    if (c->screen_obj == NULL) {
        goto done;
    }
    c->rewrite = rewrite; /* called as rewrite(values, hits); kept alive by screen_obj */
    rc = 0;
done:
    Py_XDECREF(rewrite);
    Py_XDECREF(tables);
    Py_XDECREF(needles);
    Py_XDECREF(min_length);
    return rc;
}

/* Append a rewrite's result (bytes-like or None for NULL); steals ``res``. */
static int put_result(Out *out, PyObject *res) {
    if (res == NULL) {
        return -1;
    }
    if (res == Py_None) {
        Py_DECREF(res);
        return out_put_i32(out, -1);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(res, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(res);
        return -1;
    }
    int rc = 0;
    if (view.len > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "masked value longer than a DataRow column can be");
        rc = -1;
    } else if (out_put_i32(out, (int32_t)view.len) < 0 ||
               out_put(out, (const char *)view.buf, view.len) < 0) {
        rc = -1;
    }
    PyBuffer_Release(&view);
    Py_DECREF(res);
    return rc;
}

/* Collect pass, one screened value: remember it (and its hits) if the screen selects it. */
static int collect(Column *c, Scratch *scratch, const unsigned char *value, Py_ssize_t n,
                   Py_ssize_t at) {
    long hits = screen_hits(c->screen, scratch, value, n);
    if (hits <= 0) {
        return (int)hits; /* 0: kept as it is; -1: error */
    }
    if (c->nselected == c->cap_selected) {
        Py_ssize_t cap = c->cap_selected ? c->cap_selected * 2 : 64;
        Py_ssize_t *grown = PyMem_Realloc(c->selected, (size_t)cap * sizeof(Py_ssize_t));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->selected = grown;
        c->cap_selected = cap;
    }
    PyObject *item = PyBytes_FromStringAndSize((const char *)value, n);
    if (item == NULL) {
        return -1;
    }
    int rc = PyList_Append(c->batch_values, item);
    Py_DECREF(item);
    if (rc < 0) {
        return -1;
    }
    PyObject *bits = PyLong_FromLong(hits);
    if (bits == NULL) {
        return -1;
    }
    rc = PyList_Append(c->batch_hits, bits);
    Py_DECREF(bits);
    if (rc < 0) {
        return -1;
    }
    c->selected[c->nselected++] = at;
    return 0;
}

/* Write pass: append the rewritten value (or NULL) for one non-NULL input value that
 * starts at ``at`` in the buffer. */
static int put_rewritten(Out *out, Column *c, const unsigned char *value, Py_ssize_t n,
                         Py_ssize_t at) {
    if (c->constant) {
        if (c->value == NULL) {
            return out_put_i32(out, -1);
        }
        if (out_put_i32(out, (int32_t)c->value_len) < 0) {
            return -1;
        }
        return out_put(out, c->value, c->value_len);
    }
    if (c->screen != NULL) {
        if (c->next < c->nselected && c->selected[c->next] == at) {
            PyObject *res = PyTuple_GET_ITEM(c->results, c->next);
            c->next++;
            Py_INCREF(res);
            return put_result(out, res);
        }
        /* not selected: nothing the rewrite could change, the value as it came */
        if (out_put_i32(out, (int32_t)n) < 0) {
            return -1;
        }
        return out_put(out, (const char *)value, n);
    }
    PyObject *arg = PyBytes_FromStringAndSize((const char *)value, n);
    if (arg == NULL) {
        return -1;
    }
    PyObject *res = PyObject_CallOneArg(c->rewrite, arg);
    Py_DECREF(arg);
    return put_result(out, res);
}

/* Walk the DataRows of buf[start:stop]. With ``out`` NULL, the collect pass: screened
 * columns' selected values are gathered, nothing is written, and a malformed row just
 * ends the pass (the write pass reports it). With ``out``, the write pass. */
static int walk(const unsigned char *b, Py_ssize_t start, Py_ssize_t stop, Column *cols,
                Py_ssize_t ncols, Out *out, Scratch *scratch, PyObject *violation) {
    const Py_ssize_t last = cols[ncols - 1].index;
    const int collecting = out == NULL;
    Py_ssize_t pos = start;
    while (pos < stop) {
        if (stop - pos < 5) {
            return collecting ? 0 : violation_str(violation, "DataRow truncated");
        }
        int32_t length = read_i32(b + pos + 1);
        Py_ssize_t end = pos + 1 + (Py_ssize_t)length;
        if (length < 6 || end > stop) {
            return collecting ? 0 : violation_str(violation, "DataRow truncated");
        }
        int16_t count = read_i16(b + pos + 5);
        if (count <= last) {
            return collecting
                       ? 0
                       : raise_violation(
                             violation,
                             PyUnicode_FromFormat(
                                 "DataRow has %d columns; the RowDescription promised more",
                                 (int)count));
        }
        Py_ssize_t row_at = 0;
        if (!collecting) {
            row_at = out->len;
            if (out_put(out, (const char *)b + pos, 7) < 0) {
                return -1;
            }
        }
        Py_ssize_t copied = pos + 7, p = pos + 7, col = 0;
        for (Py_ssize_t i = 0; i < ncols; i++) {
            Column *c = &cols[i];
            while (col < c->index) {
                if (p + 4 > end) {
                    return collecting
                               ? 0
                               : violation_str(violation,
                                               "DataRow column lengths exceed the message");
                }
                int32_t n = read_i32(b + p);
                p += n > 0 ? 4 + (Py_ssize_t)n : 4;
                col++;
            }
            if (p + 4 > end) {
                return collecting
                           ? 0
                           : violation_str(violation, "DataRow column lengths exceed the message");
            }
            int32_t n = read_i32(b + p);
            col++;
            if (n < 0) { /* SQL NULL stays NULL */
                p += 4;
                continue;
            }
            Py_ssize_t value_at = p + 4, value_end = value_at + (Py_ssize_t)n;
            if (value_end > end) {
                return collecting ? 0
                                  : raise_violation(
                                        violation,
                                        PyUnicode_FromFormat(
                                            "DataRow column length %d exceeds the message",
                                            (int)n));
            }
            if (collecting) {
                if (c->screen != NULL &&
                    collect(c, scratch, b + value_at, (Py_ssize_t)n, value_at) < 0) {
                    return -1;
                }
            } else if (out_put(out, (const char *)b + copied, p - copied) < 0 ||
                       put_rewritten(out, c, b + value_at, (Py_ssize_t)n, value_at) < 0) {
                return -1;
            }
            copied = p = value_end;
        }
        if (p > end) {
            return collecting
                       ? 0
                       : violation_str(violation, "DataRow column lengths exceed the message");
        }
        if (!collecting) {
            if (out_put(out, (const char *)b + copied, end - copied) < 0) {
                return -1;
            }
            Py_ssize_t row_len = out->len - row_at - 1;
            if (row_len > INT32_MAX) {
                PyErr_SetString(PyExc_ValueError, "masked DataRow longer than a message can be");
                return -1;
            }
            uint32_t u = (uint32_t)row_len;
            unsigned char *lp = (unsigned char *)out->data + row_at + 1;
            lp[0] = (unsigned char)(u >> 24);
            lp[1] = (unsigned char)(u >> 16);
            lp[2] = (unsigned char)(u >> 8);
            lp[3] = (unsigned char)u;
        }
        pos = end;
    }
    return 0;
}

/* Between the passes: each screened column's rewrite, called once with all the values its
 * screen selected; it must return one result per value. */
static int rewrite_batches(Column *cols, Py_ssize_t ncols) {
    for (Py_ssize_t i = 0; i < ncols; i++) {
        Column *c = &cols[i];
        if (c->screen == NULL || c->nselected == 0) {
            continue;
        }
        PyObject *call_args[2] = {c->batch_values, c->batch_hits};
        PyObject *res = PyObject_Vectorcall(c->rewrite, call_args, 2, NULL);
        if (res == NULL) {
            return -1;
        }
        if (!PyList_CheckExact(res) || PyList_GET_SIZE(res) != c->nselected) {
            Py_DECREF(res);
            PyErr_SetString(PyExc_TypeError,
                            "a screened rewrite must return a list with one result per value");
            return -1;
        }
        /* Held as a tuple of our own: the list is the rewrite's, which may keep it and
           change it while later columns' rewrites run. */
        c->results = PyList_AsTuple(res);
        Py_DECREF(res);
        if (c->results == NULL) {
            return -1;
        }
    }
    return 0;
}

static PyObject *rewrite(PyObject *self, PyObject *args) {
    PyObject *bufobj, *columns, *constant_type, *screened_type, *violation;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "OnnOOOO:rewrite", &bufobj, &start, &stop, &columns,
                          &constant_type, &screened_type, &violation)) {
        return NULL;
    }
    Py_buffer in;
    if (PyObject_GetBuffer(bufobj, &in, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    Column *cols = NULL;
    Py_ssize_t ncols = 0;
    Out out = {NULL, 0, 0};
    Scratch scratch = {NULL, 0};
    /* A tuple of our own (the caller's if it is one): it keeps every (index, rewrite) and
       so every rewrite alive while Python code runs, even if ``columns`` is a list that
       code changes. */
    PyObject *seq = PySequence_Tuple(columns);
    if (seq == NULL) {
        goto done;
    }
    ncols = PyTuple_GET_SIZE(seq);
    if (ncols == 0) {
        PyErr_SetString(PyExc_ValueError, "no columns to rewrite");
        goto done;
    }
    if (start < 0 || stop > in.len || start > stop) {
        PyErr_SetString(PyExc_ValueError, "start/stop outside the buffer");
        goto done;
    }
    cols = PyMem_Calloc((size_t)ncols, sizeof(Column));
    if (cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < ncols; i++) {
        PyObject *item = PyTuple_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "columns must hold (index, rewrite) tuples");
            goto done;
        }
        Py_ssize_t index = PyNumber_AsSsize_t(PyTuple_GET_ITEM(item, 0), PyExc_OverflowError);
        if (index == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (index < 0 || (i > 0 && index <= cols[i - 1].index)) {
            PyErr_SetString(PyExc_ValueError, "column indexes must increase");
            goto done;
        }
        cols[i].index = index;
        cols[i].rewrite = PyTuple_GET_ITEM(item, 1);
        if (Py_TYPE(cols[i].rewrite) == (PyTypeObject *)constant_type) {
            PyObject *value = PyObject_GetAttrString(cols[i].rewrite, "value");
            if (value == NULL) {
                goto done;
            }
            cols[i].constant = 1;
            cols[i].value_obj = value;
            if (value != Py_None) {
                if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) > INT32_MAX) {
                    PyErr_SetString(PyExc_TypeError, "a constant mask value must be bytes");
                    goto done;
                }
                cols[i].value = PyBytes_AS_STRING(value);
                cols[i].value_len = PyBytes_GET_SIZE(value);
            }
        } else if (Py_TYPE(cols[i].rewrite) == (PyTypeObject *)screened_type &&
                   load_screen(&cols[i]) < 0) {
            goto done;
        }
    }
    const unsigned char *b = (const unsigned char *)in.buf;
    int screened = 0;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (cols[i].screen != NULL) {
            screened = 1;
            cols[i].batch_values = PyList_New(0);
            cols[i].batch_hits = PyList_New(0);
            if (cols[i].batch_values == NULL || cols[i].batch_hits == NULL) {
                goto done;
            }
        }
    }
    if (screened && (walk(b, start, stop, cols, ncols, NULL, &scratch, violation) < 0 ||
                     rewrite_batches(cols, ncols) < 0)) {
        goto done;
    }
    if (out_reserve(&out, stop - start + 64) < 0 ||
        walk(b, start, stop, cols, ncols, &out, &scratch, violation) < 0) {
        goto done;
    }
    result = PyByteArray_FromStringAndSize(out.data, out.len);

done:
    if (cols != NULL) {
        for (Py_ssize_t i = 0; i < ncols; i++) {
            Py_XDECREF(cols[i].value_obj);
            Py_XDECREF(cols[i].screen_obj);
            PyMem_Free(cols[i].screen);
            Py_XDECREF(cols[i].batch_values);
            Py_XDECREF(cols[i].batch_hits);
            Py_XDECREF(cols[i].results);
            PyMem_Free(cols[i].selected);
        }
        PyMem_Free(cols);
    }
    PyMem_Free(out.data);
    PyMem_Free(scratch.data);
    Py_XDECREF(seq);
    PyBuffer_Release(&in);
    return result;
}

static PyMethodDef methods[] = {
    {"rewrite", rewrite, METH_VARARGS,
     "rewrite(buf, start, stop, columns, constant_type, screened_type, violation)"
     " -> bytearray\n\n"
     "The compiled body of protocols.postgres.rows.rewrite_data_rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "protocols.postgres._rows",
    "Compiled DataRow rewriting for masking (see rows.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__rows(void) { return PyModule_Create(&module); }
