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

#ifdef TRANSPOSED
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUF(a, b, ...) __builtin_shuffle(a, b, (vec){__VA_ARGS__})
#endif

/* 8x8 transpose of 32-bit words: r[l][i] -> r[i][l] (its own inverse) */
INLINE void
transpose8(vec r[8])
{
    vec t0 = SHUF(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13);
    vec t1 = SHUF(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
    vec t2 = SHUF(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13);
    vec t3 = SHUF(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
    vec t4 = SHUF(r[4], r[5], 0, 8, 1, 9, 4, 12, 5, 13);
    vec t5 = SHUF(r[4], r[5], 2, 10, 3, 11, 6, 14, 7, 15);
    vec t6 = SHUF(r[6], r[7], 0, 8, 1, 9, 4, 12, 5, 13);
    vec t7 = SHUF(r[6], r[7], 2, 10, 3, 11, 6, 14, 7, 15);
    vec u0 = SHUF(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
    vec u1 = SHUF(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
    vec u2 = SHUF(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
    vec u3 = SHUF(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
    vec u4 = SHUF(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
    vec u5 = SHUF(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
    vec u6 = SHUF(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
    vec u7 = SHUF(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
    r[0] = SHUF(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11);
    r[4] = SHUF(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15);
    r[1] = SHUF(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11);
    r[5] = SHUF(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15);
    r[2] = SHUF(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11);
    r[6] = SHUF(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15);
    r[3] = SHUF(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11);
    r[7] = SHUF(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15);
}
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

/* Elephant diffuser over n words (n a multiple of 8, >= 8) of LANES sectors at once.
 * A: d[i] += d[i-2] ^ rotl(d[i-5], ROT_A[i%4]), i ascending, 5 cycles (decrypt direction)
 * B: d[i] += d[i+2] ^ rotl(d[i+5], ROT_B[i%4]), i ascending, 3 cycles (decrypt direction)
 * The encrypt direction runs i descending and subtracts. Indices are mod n: the first (A) or
 * last (B) 8 steps of a cycle take the general path, the rest is unrolled by 4 so that the
 * rotations are constants. */
INLINE void
diffuser_a_decrypt(vec *v, size_t n)
{
    for (int c = 0; c < 5; c++) {
        size_t i;
        for (i = 0; i < 8; i++)
            v[i] += v[(i + n - 2) % n] ^ ROTL(v[(i + n - 5) % n], ROT_A[i & 3]);
        for (; i < n; i += 4) {
            v[i] += v[i - 2] ^ ROTL(v[i - 5], 9);
            v[i + 1] += v[i - 1] ^ v[i - 4];
            v[i + 2] += v[i] ^ ROTL(v[i - 3], 13);
            v[i + 3] += v[i + 1] ^ v[i - 2];
        }
    }
}

INLINE void
diffuser_b_decrypt(vec *v, size_t n)
{
    for (int c = 0; c < 3; c++) {
        size_t i;
        for (i = 0; i < n - 8; i += 4) {
            v[i] += v[i + 2] ^ v[i + 5];
            v[i + 1] += v[i + 3] ^ ROTL(v[i + 6], 10);
            v[i + 2] += v[i + 4] ^ v[i + 7];
            v[i + 3] += v[i + 5] ^ ROTL(v[i + 8], 25);
        }
        for (; i < n; i++)
            v[i] += v[(i + 2) % n] ^ ROTL(v[(i + 5) % n], ROT_B[i & 3]);
    }
}

INLINE void
diffuser_a_encrypt(vec *v, size_t n)
{
    for (int c = 0; c < 5; c++) {
        size_t i = n;
        while (i > 8) {
            i -= 4;
            v[i + 3] -= v[i + 1] ^ v[i - 2];
            v[i + 2] -= v[i] ^ ROTL(v[i - 3], 13);
            v[i + 1] -= v[i - 1] ^ v[i - 4];
            v[i] -= v[i - 2] ^ ROTL(v[i - 5], 9);
        }
        for (i = 8; i-- > 0;)
            v[i] -= v[(i + n - 2) % n] ^ ROTL(v[(i + n - 5) % n], ROT_A[i & 3]);
    }
}

INLINE void
diffuser_b_encrypt(vec *v, size_t n)
{
    for (int c = 0; c < 3; c++) {
        size_t i;
        for (i = n; i-- > n - 8;)
            v[i] -= v[(i + 2) % n] ^ ROTL(v[(i + 5) % n], ROT_B[i & 3]);
        for (i = n - 8; i > 0;) {
            i -= 4;
            v[i + 3] -= v[i + 5] ^ ROTL(v[i + 8], 25);
            v[i + 2] -= v[i + 4] ^ v[i + 7];
            v[i + 1] -= v[i + 3] ^ ROTL(v[i + 6], 10);
            v[i] -= v[i + 2] ^ v[i + 5];
        }
    }
}

#ifdef TRANSPOSED
/* With 8 lanes, sectors move in and out of the word-major layout 8 words at a time: the
 * words [i0, i0+8) of the group's 8 sectors are 8 vectors, transposed in registers. */

INLINE void
diffuser_decrypt_t(const uint8_t *ecb, const uint8_t *ct, const uint8_t *ivs,
                     const uint8_t *keys, uint8_t *dst, size_t nbytes, size_t ss, vec *v)
{
    size_t n = ss / 4, sectors = nbytes / ss;
    for (size_t k0 = 0; k0 < sectors; k0 += LANES) {
        size_t cnt = sectors - k0 < LANES ? sectors - k0 : LANES;
        /* all of the group's ciphertext is read before any of its output is written */
        for (size_t i0 = 0; i0 < n; i0 += 8) {
            vec r[8];
            for (size_t l = 0; l < 8; l++) {
                vec x, prev;
                if (l >= cnt) {
                    r[l] = (vec){0};
                    continue;
                }
                const uint8_t *c = ct + (k0 + l) * ss + 4 * i0;
                memcpy(&x, ecb + (k0 + l) * ss + 4 * i0, 32);
                if (i0 == 0) {
                    memcpy(&prev, ivs + 16 * (k0 + l), 16);
                    memcpy((uint8_t *)&prev + 16, c, 16);
                } else {
                    memcpy(&prev, c - 16, 32);
                }
                r[l] = x ^ prev;
            }
            transpose8(r);
            memcpy(&v[i0], r, sizeof r);
        }
        diffuser_b_decrypt(v, n);
        diffuser_a_decrypt(v, n);
        for (size_t i0 = 0; i0 < n; i0 += 8) {
            vec r[8];
            memcpy(r, &v[i0], sizeof r);
            transpose8(r);
            for (size_t l = 0; l < cnt; l++) {
                vec key;
                memcpy(&key, keys + 32 * (k0 + l), 32);
                r[l] ^= key;
                memcpy(dst + (k0 + l) * ss + 4 * i0, &r[l], 32);
            }
        }
    }
}

INLINE void
diffuser_encrypt_t(const uint8_t *src, const uint8_t *keys, uint8_t *dst, size_t nbytes,
                     size_t ss, vec *v)
{
    size_t n = ss / 4, sectors = nbytes / ss;
    for (size_t k0 = 0; k0 < sectors; k0 += LANES) {
        size_t cnt = sectors - k0 < LANES ? sectors - k0 : LANES;
        for (size_t i0 = 0; i0 < n; i0 += 8) {
            vec r[8];
            for (size_t l = 0; l < 8; l++) {
                vec key;
                if (l >= cnt) {
                    r[l] = (vec){0};
                    continue;
                }
                memcpy(&r[l], src + (k0 + l) * ss + 4 * i0, 32);
                memcpy(&key, keys + 32 * (k0 + l), 32);
                r[l] ^= key;
            }
            transpose8(r);
            memcpy(&v[i0], r, sizeof r);
        }
        diffuser_a_encrypt(v, n);
        diffuser_b_encrypt(v, n);
        for (size_t i0 = 0; i0 < n; i0 += 8) {
            vec r[8];
            memcpy(r, &v[i0], sizeof r);
            transpose8(r);
            for (size_t l = 0; l < cnt; l++)
                memcpy(dst + (k0 + l) * ss + 4 * i0, &r[l], 32);
        }
    }
}

#define DEC_ARGS const uint8_t *ecb, const uint8_t *ct, const uint8_t *ivs, \
    const uint8_t *keys, uint8_t *dst, size_t nbytes, size_t ss, vec *v
#define ENC_ARGS const uint8_t *src, const uint8_t *keys, uint8_t *dst, size_t nbytes, \
    size_t ss, vec *v

__attribute__((target("avx2"))) static void
diffuser_decrypt_avx2(DEC_ARGS) { diffuser_decrypt_t(ecb, ct, ivs, keys, dst, nbytes, ss, v); }
__attribute__((target("avx2"))) static void
diffuser_encrypt_avx2(ENC_ARGS) { diffuser_encrypt_t(src, keys, dst, nbytes, ss, v); }
__attribute__((target("avx2,avx512f,avx512vl"))) static void
diffuser_decrypt_avx512(DEC_ARGS) { diffuser_decrypt_t(ecb, ct, ivs, keys, dst, nbytes, ss, v); }
__attribute__((target("avx2,avx512f,avx512vl"))) static void
diffuser_encrypt_avx512(ENC_ARGS) { diffuser_encrypt_t(src, keys, dst, nbytes, ss, v); }
#endif

/* The plain build: sectors move in and out of the word-major layout a word at a time. */
static void
diffuser_decrypt_plain(const uint8_t *ecb, const uint8_t *ct, const uint8_t *ivs,
                     const uint8_t *keys, uint8_t *dst, size_t nbytes, size_t ss, vec *v)
{
    size_t n = ss / 4, sectors = nbytes / ss;
    memset(v, 0, n * sizeof(vec));
    for (size_t k0 = 0; k0 < sectors; k0 += LANES) {
        size_t cnt = sectors - k0 < LANES ? sectors - k0 : LANES;
        /* all of the group's ciphertext is read before any of its output is written */
        for (size_t l = 0; l < cnt; l++) {
            const uint8_t *e = ecb + (k0 + l) * ss, *c = ct + (k0 + l) * ss;
            const uint8_t *iv = ivs + 16 * (k0 + l);
            for (size_t i = 0; i < 4; i++)
                LANE(v, i, l) = ld32(e + 4 * i) ^ ld32(iv + 4 * i);
            for (size_t i = 4; i < n; i++)
                LANE(v, i, l) = ld32(e + 4 * i) ^ ld32(c + 4 * i - 16);
        }
        diffuser_b_decrypt(v, n);
        diffuser_a_decrypt(v, n);
        for (size_t l = 0; l < cnt; l++) {
            uint8_t *d = dst + (k0 + l) * ss;
            const uint8_t *key = keys + 32 * (k0 + l);
            for (size_t i = 0; i < n; i++)
                st32(d + 4 * i, LANE(v, i, l) ^ ld32(key + 4 * (i & 7)));
        }
    }
}

static void
diffuser_encrypt_plain(const uint8_t *src, const uint8_t *keys, uint8_t *dst, size_t nbytes,
                       size_t ss, vec *v)
{
    size_t n = ss / 4, sectors = nbytes / ss;
    memset(v, 0, n * sizeof(vec));
    for (size_t k0 = 0; k0 < sectors; k0 += LANES) {
        size_t cnt = sectors - k0 < LANES ? sectors - k0 : LANES;
        for (size_t l = 0; l < cnt; l++) {
            const uint8_t *s = src + (k0 + l) * ss;
            const uint8_t *key = keys + 32 * (k0 + l);
            for (size_t i = 0; i < n; i++)
                LANE(v, i, l) = ld32(s + 4 * i) ^ ld32(key + 4 * (i & 7));
        }
        diffuser_a_encrypt(v, n);
        diffuser_b_encrypt(v, n);
        for (size_t l = 0; l < cnt; l++) {
            uint8_t *d = dst + (k0 + l) * ss;
            for (size_t i = 0; i < n; i++)
                st32(d + 4 * i, LANE(v, i, l));
        }
    }
}

typedef void (*decrypt_fn)(const uint8_t *, const uint8_t *, const uint8_t *, const uint8_t *,
                           uint8_t *, size_t, size_t, vec *);
typedef void (*encrypt_fn)(const uint8_t *, const uint8_t *, uint8_t *, size_t, size_t, vec *);
static decrypt_fn diffuser_decrypt_run = diffuser_decrypt_plain;
static encrypt_fn diffuser_encrypt_run = diffuser_encrypt_plain;
static const char *isa = "plain";

/* Use the best build the CPU runs, no better than `cap` ("avx512vl", "avx2" or "plain"). */
static void
pick_isa(const char *cap)
{
    diffuser_decrypt_run = diffuser_decrypt_plain;
    diffuser_encrypt_run = diffuser_encrypt_plain;
    isa = "plain";
#ifdef TRANSPOSED
    __builtin_cpu_init();
    if (strcmp(cap, "avx512vl") == 0 && __builtin_cpu_supports("avx512f")
            && __builtin_cpu_supports("avx512vl")) {
        diffuser_decrypt_run = diffuser_decrypt_avx512;
        diffuser_encrypt_run = diffuser_encrypt_avx512;
        isa = "avx512vl";
    } else if (strcmp(cap, "plain") != 0 && __builtin_cpu_supports("avx2")) {
        diffuser_decrypt_run = diffuser_decrypt_avx2;
        diffuser_encrypt_run = diffuser_encrypt_avx2;
        isa = "avx2";
    }
#else
    (void)cap;
#endif
}

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
