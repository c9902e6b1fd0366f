/* The integer work of a DropBlock mask, in C: where the seeds' blocks are, how many units they
 * cover together, and zeroing them in a tensor's memory. The same work in NumPy and torch lives in
 * dropblock/masks.py, which uses this module when it was compiled and falls back otherwise.
 *
 * No torch or NumPy headers: arrays arrive through the buffer protocol (int64 / float64, C order)
 * and a tensor's memory as its address. The loops run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A C-contiguous buffer of int64 (kind 'i') or float64 (kind 'f'), or -1 with TypeError. */
static int get_array(PyObject *obj, Py_buffer *view, int writable, char kind, const char *name) {
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    const int ok = view->itemsize == 8 && f[1] == '\0' &&
                   (kind == 'f' ? *f == 'd' : (*f == 'q' || *f == 'l'));
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous %s array", name, kind == 'f' ? "float64" : "int64");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(gaps_to_corners_doc,
"gaps_to_corners(log_u, out, per_log, start, n, height, width, bh, bw) -> (written, next_start)\n\n"
"Turn logs of uniforms (float64) into Geometric failure counts floor(min(log_u * per_log, n)), then into\n"
"Bernoulli successes at flat seed-grid positions start - 1 + cumsum(gap + 1), and write each success\n"
"below n to ``out`` (int64) as the flat index of its block's top-left corner in the (planes, height,\n"
"width) map. Stops at the first position >= n (then next_start is n) or when the draws run out (then\n"
"next_start is the next undecided position).");

static PyObject *gaps_to_corners(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *gaps_obj, *out_obj;
    double per_log;
    long long start, n, height, width, bh, bw;
    if (!PyArg_ParseTuple(args, "OOdLLLLLL", &gaps_obj, &out_obj, &per_log, &start, &n, &height, &width, &bh, &bw))
        return NULL;
    if (bh < 1 || bw < 1 || bh > height || bw > width || start < 0) {
        PyErr_SetString(PyExc_ValueError, "gaps_to_corners: need 1 <= bh <= height, 1 <= bw <= width, start >= 0");
        return NULL;
    }
    Py_buffer gaps, out;
    if (get_array(gaps_obj, &gaps, 0, 'f', "log_u") < 0) return NULL;
    if (get_array(out_obj, &out, 1, 'i', "out") < 0) { PyBuffer_Release(&gaps); return NULL; }
    const double *g = (const double *)gaps.buf;
    int64_t *o = (int64_t *)out.buf;
    Py_ssize_t m = gaps.len / 8, cap = out.len / 8, k = 0;
    const int64_t ws = width - bw + 1, per = (int64_t)(height - bh + 1) * ws, hw = (int64_t)height * width;
    const double limit = (double)n;
    int64_t pos = start - 1, next = -1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m && k < cap; i++) {
        double gap = g[i] * per_log;
        if (!(gap < limit)) gap = limit;  /* inf, NaN or huge: past the end */
        pos += (int64_t)gap + 1;
        if (pos >= n) { next = n; break; }
        int64_t plane = pos / per, rest = pos - plane * per, row = rest / ws;
        o[k++] = plane * hw + row * width + (rest - row * ws);
    }
    Py_END_ALLOW_THREADS
    if (next < 0) next = pos + 1;
    PyBuffer_Release(&gaps);
    PyBuffer_Release(&out);
    return Py_BuildValue("nL", k, (long long)next);
}

static void set_bits(uint64_t *row, int64_t col, int64_t len) {
    while (len > 0) {
        int64_t word = col >> 6, off = col & 63, take = 64 - off < len ? 64 - off : len;
        uint64_t mask = take == 64 ? ~(uint64_t)0 : (((uint64_t)1 << take) - 1) << off;
        row[word] |= mask;
        col += take;
        len -= take;
    }
}

/* Set bits summed over n words; on x86-64 Linux with GCC, a clone uses the popcnt instruction where
 * the CPU has it (the baseline build would call a slower bit-trick routine). */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("popcnt", "default")))
#endif
static int64_t count_bits(const uint64_t *words, Py_ssize_t n) {
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
#if defined(__GNUC__) || defined(__clang__)
        total += __builtin_popcountll(words[i]);
#else
        for (uint64_t v = words[i]; v; v &= v - 1) total++;
#endif
    }
    return total;
}

PyDoc_STRVAR(union_size_doc,
"union_size(corners, height, width, bh, bw) -> int\n\n"
"Units covered by the union of the bh x bw blocks whose top-left corners are ``corners``: sorted\n"
"int64 flat indices into a (planes, height, width) map. A block alone in its plane counts bh * bw;\n"
"planes with several blocks are painted in a bitmap of one plane and counted.");

static PyObject *union_size(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *corners_obj;
    long long height, width, bh, bw;
    if (!PyArg_ParseTuple(args, "OLLLL", &corners_obj, &height, &width, &bh, &bw)) return NULL;
    if (bh < 1 || bw < 1 || bh > height || bw > width) {
        PyErr_SetString(PyExc_ValueError, "union_size: need 1 <= bh <= height and 1 <= bw <= width");
        return NULL;
    }
    Py_buffer corners;
    if (get_array(corners_obj, &corners, 0, 'i', "corners") < 0) return NULL;
    const int64_t *c = (const int64_t *)corners.buf;
    const Py_ssize_t k = corners.len / 8;
    const int64_t hw = (int64_t)height * width, words_per_row = (width + 63) / 64;
    const Py_ssize_t plane_words = (Py_ssize_t)(height * words_per_row);
    uint64_t *bits = PyMem_RawMalloc((size_t)plane_words * sizeof(uint64_t));
    if (bits == NULL) { PyBuffer_Release(&corners); return PyErr_NoMemory(); }
    int64_t total = 0, bad = 0;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t i = 0;
    while (i < k) {
        int64_t plane = c[i] / hw;
        Py_ssize_t j = i + 1;
        while (j < k && c[j] / hw == plane) j++;
        if (j - i == 1) {
            total += (int64_t)bh * bw;
        } else {
            /* sorted corners: the first block has the top row, the last the bottom one */
            const int64_t top = (c[i] - plane * hw) / width, bottom = (c[j - 1] - plane * hw) / width + bh;
            if (top < 0 || bottom > height || bottom <= top) { bad = 1; break; }  /* out of range or unsorted */
            uint64_t *used = bits + top * words_per_row;
            const Py_ssize_t n_used = (Py_ssize_t)((bottom - top) * words_per_row);
            memset(used, 0, (size_t)n_used * sizeof(uint64_t));
            for (Py_ssize_t t = i; t < j; t++) {
                int64_t local = c[t] - plane * hw, row = local / width, col = local - row * width;
                if (local < 0 || row < top || row + bh > bottom || col + bw > width) { bad = 1; break; }
                if (words_per_row == 1) {  /* rows of up to 64 units: one word each, one OR per block row */
                    const uint64_t mask = (bw == 64 ? ~(uint64_t)0 : (((uint64_t)1 << bw) - 1)) << col;
                    for (int64_t r = row; r < row + bh; r++) bits[r] |= mask;
                } else {
                    for (int64_t r = row; r < row + bh; r++) set_bits(bits + r * words_per_row, col, bw);
                }
            }
            total += count_bits(used, n_used);
        }
        if (bad) break;
        i = j;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(bits);
    PyBuffer_Release(&corners);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "union_size: a block runs past its plane; corners must be sorted top-left corners");
        return NULL;
    }
    return PyLong_FromLongLong(total);
}

/* Zero n bytes at p. Block rows are a few dozen bytes, where a memset call costs more than the
 * stores: use 8-byte stores, the last one overlapping the end (zeros twice is harmless). Kept a loop
 * of stores rather than letting the compiler turn it back into a memset call. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static inline void zero_bytes(char *p, size_t n) {
    static const uint64_t zero = 0;
    if (n >= 256) {
        memset(p, 0, n);
    } else if (n >= 8) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) memcpy(p + i, &zero, 8);
        if (i < n) memcpy(p + n - 8, &zero, 8);
    } else if (n >= 4) {
        memcpy(p, &zero, 4);
        memcpy(p + n - 4, &zero, 4);
    } else if (n >= 2) {
        memcpy(p, &zero, 2);
        memcpy(p + n - 2, &zero, 2);
    } else if (n == 1) {
        *p = 0;
    }
}

PyDoc_STRVAR(zero_blocks_doc,
"zero_blocks(address, itemsize, numel, corners, width, bh, bw) -> None\n\n"
"Zero the bh x bw block at each flat top-left corner (int64) of the contiguous memory at ``address``\n"
"(numel items of itemsize bytes, rows of ``width`` items). All-zero bytes are 0 in every IEEE float\n"
"format and False in bool. Raises ValueError, writing nothing, if any block would leave the memory.");

static PyObject *zero_blocks(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long address;
    long long itemsize, numel, width, bh, bw;
    PyObject *corners_obj;
    if (!PyArg_ParseTuple(args, "KLLOLLL", &address, &itemsize, &numel, &corners_obj, &width, &bh, &bw))
        return NULL;
    if (itemsize < 1 || bh < 1 || bw < 1 || bw > width || numel < 0) {
        PyErr_SetString(PyExc_ValueError, "zero_blocks: need itemsize >= 1 and 1 <= bw <= width");
        return NULL;
    }
    Py_buffer corners;
    if (get_array(corners_obj, &corners, 0, 'i', "corners") < 0) return NULL;
    const int64_t *c = (const int64_t *)corners.buf;
    const Py_ssize_t k = corners.len / 8;
    const int64_t span = (bh - 1) * width + bw;
    for (Py_ssize_t i = 0; i < k; i++) {
        if (c[i] < 0 || c[i] > numel - span) {
            PyBuffer_Release(&corners);
            PyErr_Format(PyExc_ValueError, "zero_blocks: the block at %lld runs past the %lld items", (long long)c[i], numel);
            return NULL;
        }
    }
    char *base = (char *)(uintptr_t)address;
    if (bw == width) {  /* each block is bh whole rows: one contiguous run */
        bw *= bh;
        bh = 1;
    }
    const size_t row_bytes = (size_t)(bw * itemsize), stride = (size_t)(width * itemsize);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < k; i++) {
        char *p = base + (size_t)c[i] * (size_t)itemsize;
        for (int64_t r = 0; r < bh; r++, p += stride) zero_bytes(p, row_bytes);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&corners);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gaps_to_corners", gaps_to_corners, METH_VARARGS, gaps_to_corners_doc},
    {"union_size", union_size, METH_VARARGS, union_size_doc},
    {"zero_blocks", zero_blocks, METH_VARARGS, zero_blocks_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dropblock._cblocks",
    "DropBlock's block bookkeeping in C (optional; dropblock.masks falls back to NumPy/torch).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cblocks(void) { return PyModule_Create(&module); }
