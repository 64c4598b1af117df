/*
 * Compiled implementation of gateway.masking.detectors.card_number_ok.
 *
 * Why it exists: the content detectors test every card-shaped match in a result, and the
 * pure-Python check (digits, length, issuer prefix, Luhn, placeholder) cost about 0.5
 * microseconds per match, a third of what masking a card column cost per row
 * (benchmarks/masking_compare.py, docs/performance.md). The Python function stays the
 * reference: detectors.py uses this one only when it imported, and the unit tests compare
 * the two on random input (tests/unit/test_masking_detectors.py).
 *
 * Interface: card_number_ok(text: str) -> bool, where text is what the card pattern
 * matched: ASCII digits, spaces and hyphens. Any other character makes it False (the
 * pattern never produces one).
 *
 * Spec: ISO/IEC 7812-1 (the Luhn check digit); issuer prefixes as in detectors.py.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_DIGITS 19

static PyObject *card_number_ok(PyObject *self, PyObject *arg) {
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "card_number_ok() takes a str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(arg)) {
        Py_RETURN_FALSE;
    }
    const Py_UCS1 *text = PyUnicode_1BYTE_DATA(arg);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    unsigned char digits[MAX_DIGITS];
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char ch = text[i];
        if (ch == ' ' || ch == '-') {
            continue;
        }
        if (ch < '0' || ch > '9' || count == MAX_DIGITS) {
            Py_RETURN_FALSE; /* not a card match, or more than 19 digits */
        }
        digits[count++] = (unsigned char)(ch - '0');
    }
    if (count < 13) {
        Py_RETURN_FALSE;
    }
    /* A bare run of digits must carry an issuer prefix (see _has_issuer_prefix). */
    if (count == n) {
        const int first = digits[0];
        int prefix = first >= 4 && first <= 6;
        if (first == 3) {
            const int second = digits[1];
            prefix = second == 0 || (second >= 4 && second <= 8);
        } else if (first == 2) {
            const int four = digits[0] * 1000 + digits[1] * 100 + digits[2] * 10 + digits[3];
            prefix = four >= 2221 && four <= 2720;
        }
        if (!prefix) {
            Py_RETURN_FALSE;
        }
    }
    /* Luhn: from the right, every second digit doubled, a doubled digit above 9 less 9. */
    int sum = 0;
    for (Py_ssize_t i = count - 1, k = 0; i >= 0; i--, k++) {
        int d = digits[i];
        if (k & 1) {
            d *= 2;
            if (d > 9) {
                d -= 9;
            }
        }
        sum += d;
    }
    if (sum % 10 != 0) {
        Py_RETURN_FALSE;
    }
    /* One digit repeated (0000000000000) passes Luhn but is a placeholder. */
    for (Py_ssize_t i = 1; i < count; i++) {
        if (digits[i] != digits[0]) {
            Py_RETURN_TRUE;
        }
    }
    Py_RETURN_FALSE;
}

static PyMethodDef methods[] = {
    {"card_number_ok", card_number_ok, METH_O,
     "card_number_ok(text) -> bool\n\n"
     "The compiled body of gateway.masking.detectors.card_number_ok."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "gateway.masking._cards",
    "Compiled card-number check for the content detectors (see detectors.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__cards(void) { return PyModule_Create(&module); }
