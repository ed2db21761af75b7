/* bdekit.crypto._stretch: BitLocker's key stretch on the CPU's SHA-256 instructions.
 *
 * The stretch (bdekit.crypto.keys.stretch_key) is 1,048,576 rounds of SHA-256 over an 88-byte
 * buffer: last hash (32) | initial hash (32) | salt (16) | counter (u64 LE). In Python each
 * round is a call into hashlib (about 0.6 s in all); here the whole loop runs in C with the GIL
 * released, on the x86 SHA extensions (SHA-NI) when the CPU has them. Without them this module
 * offers nothing (`available()` is false) and the hashlib loop serves: a portable C SHA-256 is
 * no faster than OpenSSL's called from Python.
 *
 * The buffer is two SHA-256 blocks and never exists as bytes: block 1 is the previous digest's
 * eight state words followed by the initial hash's (big-endian words), block 2 the salt, the
 * counter, the 0x80 pad and the bit length 704. A digest's words are the next round's first
 * message words, so nothing is serialised between rounds.
 *
 * SHA-NI register layout (as the instructions want it): one register holds state words
 * (A, B, E, F) from lane 3 down to lane 0, the other (C, D, G, H).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_SHANI_BUILD 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#define STRETCH_BYTES 88

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

static const uint32_t H256[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
    0x5be0cd19,
};

static uint32_t
be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

#ifdef HAVE_SHANI_BUILD

#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

/* Words 4i..4i+3 of the message schedule from the previous sixteen (m[0..3], oldest first). */
SHANI static inline __m128i
schedule(__m128i w16, __m128i w12, __m128i w8, __m128i w4)
{
    __m128i t = _mm_sha256msg1_epu32(w16, w12);
    t = _mm_add_epi32(t, _mm_alignr_epi8(w4, w8, 4));
    return _mm_sha256msg2_epu32(t, w4);
}

/* One compression of the block whose sixteen words are m[0..3] (host order, word 4i+j in lane
 * j of m[i]) into the state (abef, cdgh). */
SHANI static inline void
compress(__m128i *abef, __m128i *cdgh, const __m128i m_in[4])
{
    __m128i m[4] = {m_in[0], m_in[1], m_in[2], m_in[3]};
    __m128i s0 = *abef, s1 = *cdgh;
    for (int g = 0; g < 16; g++) {
        if (g >= 4)
            m[g & 3] = schedule(m[g & 3], m[(g + 1) & 3], m[(g + 2) & 3], m[(g + 3) & 3]);
        __m128i k = _mm_add_epi32(m[g & 3], _mm_loadu_si128((const __m128i *)&K256[4 * g]));
        s1 = _mm_sha256rnds2_epu32(s1, s0, k);
        s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(k, 0x0E));
    }
    *abef = _mm_add_epi32(*abef, s0);
    *cdgh = _mm_add_epi32(*cdgh, s1);
}

/* (a, b, c, d), (e, f, g, h) in lanes 0..3 -> the (A, B, E, F), (C, D, G, H) registers */
SHANI static inline void
to_rounds_layout(__m128i abcd, __m128i efgh, __m128i *abef, __m128i *cdgh)
{
    __m128i badc = _mm_shuffle_epi32(abcd, 0xB1);
    __m128i hgfe = _mm_shuffle_epi32(efgh, 0x1B);
    *abef = _mm_alignr_epi8(badc, hgfe, 8);
    *cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);
}

/* the inverse of to_rounds_layout */
SHANI static inline void
from_rounds_layout(__m128i abef, __m128i cdgh, __m128i *abcd, __m128i *efgh)
{
    __m128i abef_lo = _mm_shuffle_epi32(abef, 0x1B);
    __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);
    *abcd = _mm_blend_epi16(abef_lo, ghcd, 0xF0);
    *efgh = _mm_alignr_epi8(ghcd, abef_lo, 8);
}

SHANI static void
stretch_shani(const uint32_t initial[8], const uint32_t salt[4], uint64_t rounds,
              uint32_t out[8])
{
    __m128i iv_abef, iv_cdgh, abcd = _mm_setzero_si128(), efgh = _mm_setzero_si128();
    to_rounds_layout(_mm_loadu_si128((const __m128i *)&H256[0]),
                     _mm_loadu_si128((const __m128i *)&H256[4]), &iv_abef, &iv_cdgh);
    __m128i init_lo = _mm_loadu_si128((const __m128i *)&initial[0]);
    __m128i init_hi = _mm_loadu_si128((const __m128i *)&initial[4]);
    __m128i salt_w = _mm_loadu_si128((const __m128i *)salt);
    for (uint64_t counter = 0; counter < rounds; counter++) {
        __m128i abef = iv_abef, cdgh = iv_cdgh;
        __m128i block1[4] = {abcd, efgh, init_lo, init_hi};
        compress(&abef, &cdgh, block1);
        uint32_t lo = __builtin_bswap32((uint32_t)counter);
        uint32_t hi = __builtin_bswap32((uint32_t)(counter >> 32));
        __m128i block2[4] = {
            salt_w,
            _mm_setr_epi32((int)lo, (int)hi, (int)0x80000000u, 0),
            _mm_setzero_si128(),
            _mm_setr_epi32(0, 0, 0, STRETCH_BYTES * 8),
        };
        compress(&abef, &cdgh, block2);
        from_rounds_layout(abef, cdgh, &abcd, &efgh);
    }
    _mm_storeu_si128((__m128i *)&out[0], abcd);
    _mm_storeu_si128((__m128i *)&out[4], efgh);
}

static int
cpu_has_shani(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1;
}

#else
static int cpu_has_shani(void) { return 0; }
#endif

static int have_shani;

PyDoc_STRVAR(stretch_doc,
"stretch(initial_hash, salt, rounds)\n--\n\n"
"The final 32-byte hash of ``rounds`` stretch rounds (see the module). RuntimeError when the\n"
"CPU has no SHA extensions (check ``available()`` first).");

static PyObject *
py_stretch(PyObject *self, PyObject *args)
{
    Py_buffer initial, salt;
    unsigned long long rounds;
    if (!PyArg_ParseTuple(args, "y*y*K:stretch", &initial, &salt, &rounds))
        return NULL;
    PyObject *result = NULL;
    if (initial.len != 32 || salt.len != 16) {
        PyErr_Format(PyExc_ValueError, "the initial hash has 32 bytes and the salt 16, got %zd "
                     "and %zd", initial.len, salt.len);
    } else if (!have_shani) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has no SHA extensions");
    } else {
#ifdef HAVE_SHANI_BUILD
        uint32_t init_w[8], salt_w[4], out_w[8];
        uint8_t digest[32];
        for (int i = 0; i < 8; i++)
            init_w[i] = be32((const uint8_t *)initial.buf + 4 * i);
        for (int i = 0; i < 4; i++)
            salt_w[i] = be32((const uint8_t *)salt.buf + 4 * i);
        Py_BEGIN_ALLOW_THREADS
        stretch_shani(init_w, salt_w, rounds, out_w);
        Py_END_ALLOW_THREADS
        for (int i = 0; i < 8; i++) {
            digest[4 * i] = (uint8_t)(out_w[i] >> 24);
            digest[4 * i + 1] = (uint8_t)(out_w[i] >> 16);
            digest[4 * i + 2] = (uint8_t)(out_w[i] >> 8);
            digest[4 * i + 3] = (uint8_t)out_w[i];
        }
        result = PyBytes_FromStringAndSize((const char *)digest, 32);
#endif
    }
    PyBuffer_Release(&initial);
    PyBuffer_Release(&salt);
    return result;
}

PyDoc_STRVAR(available_doc,
"available()\n--\n\n"
"Whether this CPU has the SHA extensions the stretch runs on.");

static PyObject *
py_available(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(have_shani);
}

static PyMethodDef methods[] = {
    {"stretch", py_stretch, METH_VARARGS, stretch_doc},
    {"available", py_available, METH_NOARGS, available_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_stretch",
    "BitLocker's SHA-256 key stretch on the CPU's SHA extensions (see the C source's header).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__stretch(void)
{
    have_shani = cpu_has_shani();
    return PyModule_Create(&module);
}
