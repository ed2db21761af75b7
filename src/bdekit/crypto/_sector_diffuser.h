/* bdekit.crypto._sector: the Elephant diffuser kernels (included once, by _sector.c).
 *
 * A sector is n = sector_size / 4 little-endian u32 words; diffuser A (5 cycles) and B (3
 * cycles) update each word from two others of the same sector, in sequence. Sectors are
 * independent, so LANES of them are processed at once in word-major order (word i of sector
 * l at v[i][l]): every step is one vector operation. With 8 lanes on x86-64, sectors move in
 * and out of that layout 8 words at a time through an 8x8 transpose in registers, in AVX2 and
 * AVX-512VL builds of the same code; the plain build moves one word at a time. pick_isa()
 * chooses the build at import. Needs from _sector.c: vec, LANES, LANE, INLINE, TRANSPOSED,
 * ROTL, ROT_A, ROT_B, ld32, st32.
 */

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
