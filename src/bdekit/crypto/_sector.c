/* bdekit.crypto._sector: the non-AES work of BitLocker's sector modes, in C.
 *
 * The AES itself stays in OpenSSL (through the `cryptography` package, one ECB call over a
 * whole tile of sectors); this module does everything around it in one pass over the tile,
 * with the GIL released for tiles of 64 KiB and more:
 *
 *   counters          u128le(start + k*step) blocks (IVs, XTS tweaks, sector keys to encrypt)
 *   xts_xor           dst = src ^ (T_k * alpha^j) for block j of sector k (T_k: tweaks[k])
 *   cbc_decrypt       dst = ECB-decrypted ^ previous ciphertext block (IV for block 0)
 *   cbc_encrypt_step  one block index j of every sector of a tile (CBC encryption is
 *                     sequential inside a sector, so the tile advances one block at a time)
 *   diffuser_decrypt  CBC chaining XOR, Elephant diffuser B then A (decrypt direction) and
 *                     the 32-byte sector key XOR, sector by sector
 *   diffuser_encrypt  sector key XOR, diffuser A then B (encrypt direction)
 *   alias             how two buffers overlap (0 apart, 1 same start, 2 partly)
 *   all_zero          whether a buffer is all zero bytes (the output's hole test)
 *
 * Buffers come through the buffer protocol (bytes, bytearray, memoryview, numpy arrays), so
 * nothing is copied. Lengths are checked here; the Python layer (bdekit.crypto.native) checks
 * alignment of offsets and gives the semantics. The diffuser works on LANES sectors at once in
 * word-major order (word i of sector l at v[i][l]) so that each step is one vector operation.
 * Little-endian hosts only: elsewhere the build fails and the pure numpy path serves.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bdekit._sector supports little-endian hosts only"
#endif

/* Tiles at least this big are processed with the GIL released. */
#ifndef GIL_FREE_BYTES
#define GIL_FREE_BYTES 65536
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LANES 8
typedef uint32_t vec __attribute__((vector_size(LANES * 4)));
typedef uint32_t word_alias __attribute__((may_alias));
/* lane l of word i, as a plain 32-bit access (an element access of a vector in memory may
 * compile to a read-modify-write of the whole vector) */
#define LANE(v, i, l) (((word_alias *)(v))[(i) * LANES + (l)])
#else
#define LANES 1
typedef uint32_t vec;
#define LANE(v, i, l) ((v)[i])
#endif

#if defined(__GNUC__) || defined(__clang__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

/* On x86-64 with GCC or clang the diffuser also comes in AVX2 and AVX-512VL builds (same C,
 * other target attribute), picked at import time by what the CPU supports: AVX2 doubles the
 * speed of the 8-lane vectors and lets the sectors be transposed in registers; AVX-512VL adds
 * rotate instructions. Elsewhere the plain build serves. */
#if LANES == 8 && defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 8)
#define TRANSPOSED 1
#endif

/* rotate left by r in [0, 32): the second shift is masked so that r == 0 gives x | x */
#define ROTL(x, r) (((x) << (r)) | ((x) >> ((32 - (r)) & 31)))

static const int ROT_A[4] = {9, 0, 13, 0};
static const int ROT_B[4] = {0, 10, 0, 25};

static inline uint64_t ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void st64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* -- kernels (no Python API: they run without the GIL) ------------------------------------ */

static void
counters_run(uint8_t *out, size_t count, uint64_t start, uint64_t step, uint64_t high,
             int twin)
{
    uint64_t lo = start;
    for (size_t k = 0; k < count; k++, lo += step) {
        if (twin) {
            st64(out, lo); st64(out + 8, 0);
            st64(out + 16, lo); st64(out + 24, high);
            out += 32;
        } else {
            st64(out, lo); st64(out + 8, high);
            out += 16;
        }
    }
}

static void
xts_run(const uint8_t *src, uint8_t *dst, const uint8_t *tweaks, size_t nbytes, size_t ss)
{
    for (size_t off = 0; off < nbytes; off += ss, tweaks += 16) {
        uint64_t lo = ld64(tweaks), hi = ld64(tweaks + 8);
        const uint8_t *s = src + off;
        uint8_t *d = dst + off;
        for (size_t j = 0; j < ss; j += 16) {
            st64(d + j, ld64(s + j) ^ lo);
            st64(d + j + 8, ld64(s + j + 8) ^ hi);
            uint64_t carry = (uint64_t)((int64_t)hi >> 63) & 0x87;  /* x^128 = x^7+x^2+x+1 */
            hi = (hi << 1) | (lo >> 63);
            lo = (lo << 1) ^ carry;
        }
    }
}

/* One sector: dst = ecb ^ (ct shifted by one block, iv first); backwards, so dst may be ct. */
static inline void
cbc_sector(const uint8_t *e, const uint8_t *c, const uint8_t *iv, uint8_t *d, size_t ss)
{
    for (size_t j = ss - 16; j > 0; j -= 16) {
        st64(d + j, ld64(e + j) ^ ld64(c + j - 16));
        st64(d + j + 8, ld64(e + j + 8) ^ ld64(c + j - 8));
    }
    st64(d, ld64(e) ^ ld64(iv));
    st64(d + 8, ld64(e + 8) ^ ld64(iv + 8));
}

static void
cbc_decrypt_run(const uint8_t *ecb, const uint8_t *ct, const uint8_t *ivs, uint8_t *dst,
                size_t nbytes, size_t ss)
{
    for (size_t off = 0; off < nbytes; off += ss, ivs += 16)
        cbc_sector(ecb + off, ct + off, ivs, dst + off, ss);
}

static void
cbc_encrypt_step_run(uint8_t *row, const uint8_t *src, uint8_t *dst, const uint8_t *ivs,
                     size_t sectors, size_t j, size_t ss)
{
    size_t blocks = ss / 16;
    for (size_t k = 0; k < sectors; k++) {
        uint8_t *r = row + 16 * k;
        if (j > 0)
            memcpy(dst + k * ss + 16 * (j - 1), r, 16);
        if (j < blocks) {
            const uint8_t *p = src + k * ss + 16 * j;
            const uint8_t *prev = j ? r : ivs + 16 * k;
            st64(r, ld64(p) ^ ld64(prev));
            st64(r + 8, ld64(p + 8) ^ ld64(prev + 8));
        }
    }
}

#include "_sector_diffuser.h"

/* -- Python bindings ------------------------------------------------------------------------ */

/* Checks shared by the sector functions: ss a positive multiple of `unit`, nbytes a whole
 * number of sectors. Returns the sector count, or -1 with an exception set. */
static Py_ssize_t
sectors_of(Py_ssize_t nbytes, Py_ssize_t ss, Py_ssize_t unit)
{
    if (ss <= 0 || ss % unit) {
        PyErr_Format(PyExc_ValueError, "sector size %zd is not a positive multiple of %zd",
                     ss, unit);
        return -1;
    }
    if (nbytes % ss) {
        PyErr_Format(PyExc_ValueError, "%zd bytes are not a whole number of %zd-byte sectors",
                     nbytes, ss);
        return -1;
    }
    return nbytes / ss;
}

static int
at_least(const Py_buffer *b, Py_ssize_t need, const char *what)
{
    if (b->len < need) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, %zd needed", what, b->len, need);
        return 0;
    }
    return 1;
}

#define RUN(nbytes, call)                                   \
    do {                                                    \
        if ((nbytes) >= GIL_FREE_BYTES) {                   \
            Py_BEGIN_ALLOW_THREADS call; Py_END_ALLOW_THREADS \
        } else {                                            \
            call;                                           \
        }                                                   \
    } while (0)

PyDoc_STRVAR(counters_doc,
"counters(out, start, step, high=0, twin=False)\n--\n\n"
"Fill ``out`` with 16-byte blocks u128le(start + k*step) whose high 64 bits are ``high``; with\n"
"``twin``, each value twice: once with high 0, once with ``high`` (32 bytes per value).");

static PyObject *
py_counters(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"out", "start", "step", "high", "twin", NULL};
    Py_buffer out;
    unsigned long long start, step, high = 0;
    int twin = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "w*KK|Kp:counters", names, &out, &start,
                                     &step, &high, &twin))
        return NULL;
    Py_ssize_t unit = twin ? 32 : 16;
    if (out.len % unit) {
        PyErr_Format(PyExc_ValueError, "counters: %zd bytes are not whole %zd-byte records",
                     out.len, unit);
        PyBuffer_Release(&out);
        return NULL;
    }
    counters_run((uint8_t *)out.buf, (size_t)(out.len / unit), start, step, high, twin);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(xts_xor_doc,
"xts_xor(src, dst, tweaks, sector_size)\n--\n\n"
"dst[:len(src)] = src ^ the XTS masks: block j of sector k is XORed with tweaks[k] * alpha^j\n"
"in GF(2^128). ``tweaks`` holds one encrypted 16-byte tweak per sector; dst may be src.");

static PyObject *
py_xts_xor(PyObject *self, PyObject *args)
{
    Py_buffer src, dst, tw;
    Py_ssize_t ss, sectors;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*w*y*n:xts_xor", &src, &dst, &tw, &ss))
        return NULL;
    sectors = sectors_of(src.len, ss, 16);
    if (sectors >= 0 && at_least(&dst, src.len, "destination")
            && at_least(&tw, 16 * sectors, "tweaks")) {
        RUN(src.len, xts_run(src.buf, dst.buf, tw.buf, (size_t)src.len, (size_t)ss));
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&tw);
    return result;
}

PyDoc_STRVAR(cbc_decrypt_doc,
"cbc_decrypt(ecb, ct, ivs, dst, sector_size)\n--\n\n"
"Finish CBC decryption of the sectors of ``ct``: ``ecb`` is ct ECB-decrypted; block 0 of\n"
"sector k is XORed with ivs[k], block j with block j-1 of ct. dst may be ecb or ct.");

static PyObject *
py_cbc_decrypt(PyObject *self, PyObject *args)
{
    Py_buffer ecb, ct, ivs, dst;
    Py_ssize_t ss, sectors;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*w*n:cbc_decrypt", &ecb, &ct, &ivs, &dst, &ss))
        return NULL;
    sectors = sectors_of(ct.len, ss, 16);
    if (sectors >= 0 && at_least(&ecb, ct.len, "ECB output")
            && at_least(&dst, ct.len, "destination") && at_least(&ivs, 16 * sectors, "IVs")) {
        RUN(ct.len, cbc_decrypt_run(ecb.buf, ct.buf, ivs.buf, dst.buf, (size_t)ct.len,
                                    (size_t)ss));
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&ecb);
    PyBuffer_Release(&ct);
    PyBuffer_Release(&ivs);
    PyBuffer_Release(&dst);
    return result;
}

PyDoc_STRVAR(cbc_encrypt_step_doc,
"cbc_encrypt_step(row, src, dst, ivs, j, sector_size)\n--\n\n"
"One step of CBC encryption over the sectors of ``src``: ``row`` (16 bytes per sector) holds\n"
"the encrypted block j-1 of every sector; it is stored into dst, then row becomes plaintext\n"
"block j XORed with it (with ivs[k] for j = 0), ready to be ECB-encrypted in place. j runs\n"
"from 0 to sector_size/16 inclusive (the last call only stores). dst may be src.");

static PyObject *
py_cbc_encrypt_step(PyObject *self, PyObject *args)
{
    Py_buffer row, src, dst, ivs;
    Py_ssize_t j, ss, sectors;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "w*y*w*y*nn:cbc_encrypt_step", &row, &src, &dst, &ivs, &j,
                          &ss))
        return NULL;
    sectors = sectors_of(src.len, ss, 16);
    if (sectors >= 0 && (j < 0 || j > ss / 16)) {
        PyErr_Format(PyExc_ValueError, "block index %zd out of range", j);
        sectors = -1;
    }
    if (sectors >= 0 && at_least(&row, 16 * sectors, "row") && at_least(&dst, src.len,
            "destination") && at_least(&ivs, 16 * sectors, "IVs")) {
        RUN(16 * sectors, cbc_encrypt_step_run(row.buf, src.buf, dst.buf, ivs.buf,
                                               (size_t)sectors, (size_t)j, (size_t)ss));
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&row);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&ivs);
    return result;
}

/* word-major scratch of LANES sectors, aligned for the vector type */
static vec *
lanes_alloc(size_t n, void **raw)
{
    *raw = PyMem_RawMalloc(n * sizeof(vec) + 64);
    if (*raw == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    return (vec *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
}

PyDoc_STRVAR(diffuser_decrypt_doc,
"diffuser_decrypt(ecb, ct, ivs, keys, dst, sector_size)\n--\n\n"
"Finish decryption of AES-CBC + Elephant diffuser sectors: the CBC chaining of\n"
"cbc_decrypt, diffuser B then A (decrypt direction), then XOR with the 32-byte sector key\n"
"keys[k]. dst may be ct.");

static PyObject *
py_diffuser_decrypt(PyObject *self, PyObject *args)
{
    Py_buffer ecb, ct, ivs, keys, dst;
    Py_ssize_t ss, sectors;
    PyObject *result = NULL;
    void *raw = NULL;
    vec *v;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*n:diffuser_decrypt", &ecb, &ct, &ivs, &keys, &dst,
                          &ss))
        return NULL;
    sectors = sectors_of(ct.len, ss, 32);
    if (sectors >= 0 && at_least(&ecb, ct.len, "ECB output")
            && at_least(&dst, ct.len, "destination") && at_least(&ivs, 16 * sectors, "IVs")
            && at_least(&keys, 32 * sectors, "sector keys")
            && (v = lanes_alloc((size_t)ss / 4, &raw)) != NULL) {
        RUN(ct.len, diffuser_decrypt_run(ecb.buf, ct.buf, ivs.buf, keys.buf, dst.buf,
                                         (size_t)ct.len, (size_t)ss, v));
        result = Py_None;
        Py_INCREF(result);
    }
    PyMem_RawFree(raw);
    PyBuffer_Release(&ecb);
    PyBuffer_Release(&ct);
    PyBuffer_Release(&ivs);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&dst);
    return result;
}

PyDoc_STRVAR(diffuser_encrypt_doc,
"diffuser_encrypt(src, keys, dst, sector_size)\n--\n\n"
"The diffuser half of encryption: XOR with the sector key keys[k], diffuser A then B\n"
"(encrypt direction), into dst (which may be src). CBC encryption follows.");

static PyObject *
py_diffuser_encrypt(PyObject *self, PyObject *args)
{
    Py_buffer src, keys, dst;
    Py_ssize_t ss, sectors;
    PyObject *result = NULL;
    void *raw = NULL;
    vec *v;
    if (!PyArg_ParseTuple(args, "y*y*w*n:diffuser_encrypt", &src, &keys, &dst, &ss))
        return NULL;
    sectors = sectors_of(src.len, ss, 32);
    if (sectors >= 0 && at_least(&dst, src.len, "destination")
            && at_least(&keys, 32 * sectors, "sector keys")
            && (v = lanes_alloc((size_t)ss / 4, &raw)) != NULL) {
        RUN(src.len, diffuser_encrypt_run(src.buf, keys.buf, dst.buf, (size_t)src.len,
                                          (size_t)ss, v));
        result = Py_None;
        Py_INCREF(result);
    }
    PyMem_RawFree(raw);
    PyBuffer_Release(&src);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&dst);
    return result;
}

PyDoc_STRVAR(alias_doc,
"alias(a, b)\n--\n\n"
"0 when the buffers do not overlap, 1 when they start at the same address, 2 otherwise.");

static PyObject *
py_alias(PyObject *self, PyObject *args)
{
    Py_buffer a, b;
    if (!PyArg_ParseTuple(args, "y*y*:alias", &a, &b))
        return NULL;
    uintptr_t a0 = (uintptr_t)a.buf, b0 = (uintptr_t)b.buf;
    long kind;
    if (a.len == 0 || b.len == 0 || a0 + (uintptr_t)a.len <= b0 || b0 + (uintptr_t)b.len <= a0)
        kind = 0;
    else
        kind = a0 == b0 ? 1 : 2;
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return PyLong_FromLong(kind);
}

PyDoc_STRVAR(all_zero_doc,
"all_zero(buf)\n--\n\n"
"Whether every byte of ``buf`` is zero (the output's hole test; stops at the first nonzero\n"
"64-byte block, GIL released for large buffers).");

/* OR of 64-byte blocks: returns at the first block with a set bit, so data (not zeros) costs
 * one block; a zero chunk is read once at memory speed. */
static int
zero_bytes(const uint8_t *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t acc = 0;
        for (int k = 0; k < 8; k++)
            acc |= ld64(p + i + 8 * k);
        if (acc)
            return 0;
    }
    for (; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static PyObject *
py_all_zero(PyObject *self, PyObject *args)
{
    Py_buffer b;
    int zero;
    if (!PyArg_ParseTuple(args, "y*:all_zero", &b))
        return NULL;
    const uint8_t *p = b.buf;
    if (b.len > 0 && (p[0] || p[b.len - 1]))
        zero = 0;  /* the common case, data: no thread switch */
    else
        RUN(b.len, zero = zero_bytes(p, b.len));
    PyBuffer_Release(&b);
    return PyBool_FromLong(zero);
}

PyDoc_STRVAR(set_isa_doc,
"set_isa(cap)\n--\n\n"
"Run the diffuser on the best build this CPU supports up to ``cap`` (\"avx512vl\", \"avx2\"\n"
"or \"plain\"); returns the build now in use. For tests and benchmarks: not thread-safe.");

static PyObject *
py_set_isa(PyObject *self, PyObject *args)
{
    const char *cap;
    if (!PyArg_ParseTuple(args, "s:set_isa", &cap))
        return NULL;
    if (strcmp(cap, "avx512vl") && strcmp(cap, "avx2") && strcmp(cap, "plain")) {
        PyErr_Format(PyExc_ValueError, "unknown instruction set %s", cap);
        return NULL;
    }
    pick_isa(cap);
    return PyUnicode_FromString(isa);
}

static PyMethodDef methods[] = {
    {"counters", (PyCFunction)(void (*)(void))py_counters, METH_VARARGS | METH_KEYWORDS,
     counters_doc},
    {"xts_xor", py_xts_xor, METH_VARARGS, xts_xor_doc},
    {"cbc_decrypt", py_cbc_decrypt, METH_VARARGS, cbc_decrypt_doc},
    {"cbc_encrypt_step", py_cbc_encrypt_step, METH_VARARGS, cbc_encrypt_step_doc},
    {"diffuser_decrypt", py_diffuser_decrypt, METH_VARARGS, diffuser_decrypt_doc},
    {"diffuser_encrypt", py_diffuser_encrypt, METH_VARARGS, diffuser_encrypt_doc},
    {"alias", py_alias, METH_VARARGS, alias_doc},
    {"all_zero", py_all_zero, METH_VARARGS, all_zero_doc},
    {"set_isa", py_set_isa, METH_VARARGS, set_isa_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sector",
    "Non-AES work of BitLocker's sector modes over whole tiles, GIL released (see the C "
    "source's header).", -1, methods,
};

PyMODINIT_FUNC
PyInit__sector(void)
{
    PyObject *m;
    pick_isa("avx512vl");
    m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "LANES", LANES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (m != NULL && PyModule_AddStringConstant(m, "ISA", isa) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (m != NULL && PyModule_AddIntConstant(m, "GIL_FREE_BYTES", GIL_FREE_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
