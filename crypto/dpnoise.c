/* dpnoise.c: the fast DP-SGD noise of dpnoise.h. The construction, its
 * parameters and the bound on its distance to the Gaussian the accountants
 * assume are in docs/privacy.md ("Fast DP-SGD noise"); this file follows it:
 *
 *  - grid: g = 2^e, s = stddev / g in [2^20, 2^21);
 *  - combination (Micciancio-Walter 2017 after Peikert 2010): Z = K X1 + X2
 *    with K = floor(sqrt(s/2 - 1)), X1, X2 ~ D(sigma0), sigma0^2 = s^2 /
 *    (1 + K^2), so Var Z = s^2 and the residual width s / (1 + K^2) >= 2;
 *  - base sampler: D(sigma0) cut at |x| <= ceil(13.5 sigma0), as |x| from an
 *    alias table of 2^15 columns plus a sign bit; each column's threshold
 *    has 240 bits, of which a sample compares the top 48 (the rest only on
 *    an exact tie, probability 2^-48); the table is built by Vose's method
 *    on exact integers, so the sampler realises its integer weights exactly;
 *  - randomness: AES-256-CTR keystream, 8 bytes per base draw. */
#include "dpnoise.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#if LDBL_MANT_DIG < 64
#error "dpnoise.c needs a long double with a 64-bit (or wider) mantissa"
#endif

#define IDX_BITS 15
#define NCOL (1u << IDX_BITS) /* alias columns; the base support must fit */
#define HOT_SHIFT 16          /* hot entry = (top 48 threshold bits) << 16 | alias */
#define THR48_MAX ((UINT64_C(1) << 48) - 1)
#define TAIL 13.5L     /* base support |x| <= ceil(TAIL sigma0): mass outside < 2^-128 */
#define SIGMA_STAR 2.0 /* s / (1 + K^2) >= 2: the combination is 2^-112 close */
#define CHUNK 1024     /* samples per keystream refill: 16 KiB of AES-CTR */
#define REKEY_BYTES (UINT64_C(1) << 30)
#define KEYIV_BYTES 48                  /* AES-256 key + 128-bit initial counter */
#define KEYMAT_BYTES (KEYIV_BYTES + 32) /* a vector's keys: main stream, tie stream */

/* ================================ 256-bit integers ======================== */

/* Little-endian limbs. Only what the table construction needs. */
typedef struct u256 {
    uint64_t w[4];
} u256;

static u256 u256_add(u256 a, u256 b) {
    u256 r;
    unsigned c = 0;
    for (int i = 0; i < 4; i++) {
        uint64_t s = a.w[i] + b.w[i];
        unsigned c1 = s < a.w[i];
        r.w[i] = s + c;
        c = c1 | (r.w[i] < s);
    }
    return r;
}

static u256 u256_sub(u256 a, u256 b) {
    u256 r;
    unsigned br = 0;
    for (int i = 0; i < 4; i++) {
        uint64_t d = a.w[i] - b.w[i];
        unsigned b1 = a.w[i] < b.w[i];
        r.w[i] = d - br;
        br = b1 | (d < (uint64_t)br);
    }
    return r;
}

static int u256_cmp(u256 a, u256 b) {
    for (int i = 3; i >= 0; i--)
        if (a.w[i] != b.w[i]) return a.w[i] < b.w[i] ? -1 : 1;
    return 0;
}

static u256 u256_pow2(int k) {
    u256 r = {{0, 0, 0, 0}};
    r.w[k / 64] = UINT64_C(1) << (k % 64);
    return r;
}

/* floor(v 2^shift) for finite v >= 0 whose result is below 2^256. Exact:
 * the 64-bit mantissa of v is placed, never rounded. */
static u256 u256_from_ld(long double v, int shift) {
    u256 r = {{0, 0, 0, 0}};
    if (!(v > 0.0L)) return r;
    int ex;
    long double fr = frexpl(v, &ex); /* v = fr 2^ex, fr in [0.5, 1) */
    uint64_t mant = (uint64_t)ldexpl(fr, 64);
    int b = ex - 64 + shift; /* v 2^shift = mant 2^b */
    if (b < 0) {
        if (b <= -64) return r;
        r.w[0] = mant >> -b;
        return r;
    }
    int limb = b / 64, off = b % 64;
    if (limb >= 4) return r; /* outside the contract; never reached */
    r.w[limb] = mant << off;
    if (off && limb + 1 < 4) r.w[limb + 1] = mant >> (64 - off);
    return r;
}

static long double u256_to_ld(u256 a) {
    long double v = 0.0L;
    for (int i = 3; i >= 0; i--)
        v += ldexpl((long double)a.w[i], 64 * i);
    return v;
}

/* ================================ sampler tables ========================== */

/* The sampler for one s. Public data (a function of stddev alone). */
typedef struct dp_table {
    double s;
    int32_t k, support;
    long double sigma0;
    uint64_t hot[NCOL];     /* (threshold >> 192) << 16 | alias; saturated when full */
    uint64_t cold[NCOL][3]; /* threshold bits 191..0, most significant limb first */
    uint8_t full[NCOL];     /* threshold == 2^240: the column is all its own */
} dp_table;

static const long double PI_L = 3.141592653589793238462643383279502884L;

/* Integer weights W[0..NCOL) of |X| for X ~ D(sigma0) cut at the support,
 * summing to exactly 2^255, each within a relative 2^-55 of the ideal
 * probability (docs/privacy.md). p (NCOL long doubles) is scratch. */
static void base_weights(u256 *W, long double *p, long double s0sq, int32_t support) {
    long double norm = sqrtl(2.0L * PI_L * s0sq); /* sum over Z of rho, to 2^-10^6 */
    for (uint32_t j = 0; j < NCOL; j++) {
        p[j] = 0.0L;
        W[j] = u256_from_ld(0.0L, 0);
    }
    for (int32_t k = 0; k <= support; k++) {
        long double kk = (long double)k * (long double)k;
        p[k] = (k ? 2.0L : 1.0L) * expl(-kk / (2.0L * s0sq)) / norm;
        W[k] = u256_from_ld(p[k], 255);
    }
    /* Normalise exactly: spread the residual 2^255 - sum W in proportion
     * to p (every weight moves by the same relative amount, about 2^-60),
     * then put what rounding leaves (a few units in 2^255) on W[0]. */
    const u256 total = u256_pow2(255);
    for (int pass = 0; pass < 2; pass++) {
        u256 sum = {{0, 0, 0, 0}};
        for (int32_t k = 0; k <= support; k++)
            sum = u256_add(sum, W[k]);
        int c = u256_cmp(sum, total);
        if (c == 0) return;
        u256 res = c < 0 ? u256_sub(total, sum) : u256_sub(sum, total);
        if (pass == 1) {
            W[0] = c < 0 ? u256_add(W[0], res) : u256_sub(W[0], res);
            return;
        }
        long double r = u256_to_ld(res);
        for (int32_t k = 0; k <= support; k++) {
            u256 adj = u256_from_ld(r * p[k], 0);
            W[k] = c < 0 ? u256_add(W[k], adj) : u256_sub(W[k], adj);
        }
    }
}

/* Vose's alias method on exact integers: column j keeps T[j] / 2^240 of
 * its mass for outcome j and gives the rest to alias[j]. Consumes W. */
static int vose(u256 *T, uint16_t *alias, u256 *W, int32_t *stack) {
    const u256 cap = u256_pow2(240); /* column mass: 2^255 / NCOL */
    int32_t *small = stack, *large = stack + NCOL;
    int ns = 0, nl = 0;
    for (uint32_t j = 0; j < NCOL; j++) {
        alias[j] = (uint16_t)j;
        if (u256_cmp(W[j], cap) < 0)
            small[ns++] = (int32_t)j;
        else
            large[nl++] = (int32_t)j;
    }
    while (ns > 0 && nl > 0) {
        int32_t sj = small[--ns], lj = large[nl - 1];
        T[sj] = W[sj];
        alias[sj] = (uint16_t)lj;
        W[lj] = u256_sub(W[lj], u256_sub(cap, W[sj]));
        if (u256_cmp(W[lj], cap) < 0) {
            nl--;
            small[ns++] = lj;
        }
    }
    /* With exact sums what remains is whole columns: W == cap each. */
    while (nl > 0) {
        int32_t j = large[--nl];
        if (u256_cmp(W[j], cap) != 0) return FL_EINVAL;
        T[j] = cap;
    }
    return ns == 0 ? 0 : FL_EINVAL;
}

/* Builds the sampler for s. With W_out (NCOL entries) the weights are also
 * returned, for fl_dpnoise_selfcheck. */
static int table_build(dp_table *t, double s, u256 *W_out) {
    int rc = FL_ENOMEM;
    u256 *W = malloc(NCOL * sizeof *W), *T = malloc(NCOL * sizeof *T);
    long double *p = malloc(NCOL * sizeof *p);
    uint16_t *alias = malloc(NCOL * sizeof *alias);
    int32_t *stack = malloc(2 * NCOL * sizeof *stack);
    if (!W || !T || !p || !alias || !stack) goto cleanup;
    t->s = s;
    t->k = (int32_t)floor(sqrt(s / SIGMA_STAR - 1.0));
    long double k2 = 1.0L + (long double)t->k * (long double)t->k;
    long double s0sq = (long double)s * (long double)s / k2;
    t->sigma0 = sqrtl(s0sq);
    t->support = (int32_t)ceill(TAIL * t->sigma0);
    rc = FL_EINVAL;
    if (t->support >= (int32_t)NCOL) goto cleanup;
    base_weights(W, p, s0sq, t->support);
    if (W_out) memcpy(W_out, W, NCOL * sizeof *W);
    if ((rc = vose(T, alias, W, stack))) goto cleanup;
    const u256 cap = u256_pow2(240);
    for (uint32_t j = 0; j < NCOL; j++) {
        t->full[j] = u256_cmp(T[j], cap) == 0;
        uint64_t top = t->full[j] ? THR48_MAX : T[j].w[3];
        t->hot[j] = top << HOT_SHIFT | alias[j];
        t->cold[j][0] = t->full[j] ? 0 : T[j].w[2];
        t->cold[j][1] = t->full[j] ? 0 : T[j].w[1];
        t->cold[j][2] = t->full[j] ? 0 : T[j].w[0];
    }
    rc = 0;
cleanup:
    free(W);
    free(T);
    free(p);
    free(alias);
    free(stack);
    return rc;
}

/* ================================ the generator =========================== */

enum { W_IDLE = 0, W_QUEUED = 1, W_RUNNING = 2 };

struct fl_dpnoise {
    /* Generation state: touched only by whoever generates (the worker while
     * a job is queued or running, otherwise the caller). */
    fl_csprng *rng;        /* private; the keys of each vector */
    unsigned char *keymat; /* sodium_malloc: the keys of the next vector to hand out */
    EVP_CIPHER_CTX *aes;   /* AES-256-CTR: the vector's keystream */
    EVP_CIPHER_CTX *tie;   /* AES-256-CTR: the words of the (2^-48) ties */
    uint64_t ks_bytes;     /* keystream bytes under the current key */
    uint64_t *words;       /* sodium_malloc: 2 CHUNK keystream words */
    int32_t *scratch;      /* sodium_malloc: CHUNK samples */
    unsigned char *keyiv;  /* sodium_malloc: an in-vector rekey, wiped */
    int tie_err;
    dp_table *tab; /* sampler for the last s */
    void (*draw)(fl_dpnoise *, const dp_table *, const uint64_t *, const uint64_t *, int32_t *,
                 size_t);
    int (*snap)(float *, const int32_t *, size_t, double, float);
    /* Background worker; the fields below are guarded by mu. */
    unsigned flags;
    int have_thread, stop, state, job_buf, ready, job_rc;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t *buf[2]; /* sodium_malloc: two noise vectors of buf_n */
    size_t buf_n, job_n, ready_n;
    double job_sd, ready_sd;
};

/* Keys. Each vector handed out is drawn under its own keys (keymat), taken
 * from the private CSPRNG when the previous vector is handed out, never
 * earlier: a vector the worker drew ahead and that is then thrown away (the
 * caller asked for another shape) used the keys the next vector uses, so
 * every path yields the same values. Within a vector, every GiB the key and
 * counter are replaced by keystream (fast key erasure); after it, the
 * cipher contexts are reset to a zero key. */

static const unsigned char zeros[2 * CHUNK * sizeof(uint64_t)];

static int keys_begin(fl_dpnoise *nz) {
    static const unsigned char zero_iv[16];
    nz->ks_bytes = 0;
    nz->tie_err = 0;
    int ok = EVP_EncryptInit_ex(nz->aes, EVP_aes_256_ctr(), NULL, nz->keymat, nz->keymat + 32);
    ok &= EVP_EncryptInit_ex(nz->tie, EVP_aes_256_ctr(), NULL, nz->keymat + KEYIV_BYTES, zero_iv);
    return ok == 1 ? 0 : FL_ECRYPTO;
}

static int keys_wipe(fl_dpnoise *nz) {
    int ok = EVP_EncryptInit_ex(nz->aes, EVP_aes_256_ctr(), NULL, zeros, zeros);
    ok &= EVP_EncryptInit_ex(nz->tie, EVP_aes_256_ctr(), NULL, zeros, zeros);
    return ok == 1 ? 0 : FL_ECRYPTO;
}

/* The vector under keymat was handed out: new keys for the next one. */
static void keys_advance(fl_dpnoise *nz) {
    fl_csprng_bytes(nz->rng, nz->keymat, KEYMAT_BYTES);
}

static int keys_rekey_in_vector(fl_dpnoise *nz) {
    int outl = 0;
    int ok = EVP_EncryptUpdate(nz->aes, nz->keyiv, &outl, zeros, KEYIV_BYTES);
    ok &= EVP_EncryptInit_ex(nz->aes, NULL, NULL, nz->keyiv, nz->keyiv + 32);
    sodium_memzero(nz->keyiv, KEYIV_BYTES);
    nz->ks_bytes = 0;
    return ok == 1 ? 0 : FL_ECRYPTO;
}

static int keystream(fl_dpnoise *nz, size_t bytes) {
    int rc;
    if (nz->ks_bytes + bytes > REKEY_BYTES && (rc = keys_rekey_in_vector(nz))) return rc;
    int outl = 0;
    if (EVP_EncryptUpdate(nz->aes, (unsigned char *)nz->words, &outl, zeros, (int)bytes) != 1 ||
        outl != (int)bytes)
        return FL_ECRYPTO;
    nz->ks_bytes += bytes;
    return 0;
}

static int table_for(fl_dpnoise *nz, double s) {
    if (nz->tab && nz->tab->s == s) return 0;
    if (!nz->tab && !(nz->tab = malloc(sizeof *nz->tab))) return FL_ENOMEM;
    int rc = table_build(nz->tab, s, NULL);
    if (rc) {
        free(nz->tab);
        nz->tab = NULL;
    }
    return rc;
}

/* The exact tie (probability 2^-48): compare the threshold's lower 192 bits
 * with 192 more uniform bits. */
static int32_t base_tie(fl_dpnoise *nz, const dp_table *t, uint32_t j) {
    if (t->full[j]) return (int32_t)j;
    uint64_t r[3] = {0, 0, 0};
    int outl = 0;
    if (EVP_EncryptUpdate(nz->tie, (unsigned char *)r, &outl, zeros, (int)sizeof r) != 1)
        nz->tie_err = 1;
    int32_t v = (int32_t)(t->hot[j] & 0xffff); /* all equal: U == T is not below T */
    for (int i = 0; i < 3; i++)
        if (r[i] != t->cold[j][i]) {
            v = r[i] < t->cold[j][i] ? (int32_t)j : v;
            break;
        }
    sodium_memzero(r, sizeof r);
    return v;
}

/* One base draw from one uniform word: bits 0..14 pick the column, bit 15
 * is the sign, bits 16..63 are the top of the uniform threshold. The same
 * operations whatever the value, but for the tie branch. */
static inline int32_t base_draw(fl_dpnoise *nz, const dp_table *t, uint64_t w) {
    uint32_t j = (uint32_t)(w & (NCOL - 1));
    uint64_t u = w >> HOT_SHIFT, h = t->hot[j], thr = h >> HOT_SHIFT;
    int32_t v = u < thr ? (int32_t)j : (int32_t)(h & 0xffff);
    if (__builtin_expect(u == thr, 0)) v = base_tie(nz, t, j);
    int32_t neg = -(int32_t)((w >> IDX_BITS) & 1);
    return (v ^ neg) - neg;
}

/* z[i] = K X1 + X2 with X1 from w1[i] and X2 from w2[i], in the order i,
 * X1 before X2 (the order the tie branch draws its extra words in). */
static void draw_scalar(fl_dpnoise *nz, const dp_table *t, const uint64_t *w1, const uint64_t *w2,
                        int32_t *z, size_t m) {
    for (size_t i = 0; i < m; i++) {
        int32_t x1 = base_draw(nz, t, w1[i]);
        int32_t x2 = base_draw(nz, t, w2[i]);
        z[i] = t->k * x1 + x2;
    }
}

/* The same draws eight or four at a time with gathers. A block in which
 * some lane ties is redone by draw_scalar, so every path gives the same
 * values from the same keystream. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FL_HAVE_X86_SIMD 1

__attribute__((target("avx512f"))) static inline __m512i draw8(const dp_table *t, __m512i w,
                                                               __mmask8 *tie) {
    const __m512i j = _mm512_and_si512(w, _mm512_set1_epi64(NCOL - 1));
    const __m512i h = _mm512_i64gather_epi64(j, (const void *)t->hot, 8);
    const __m512i thr = _mm512_srli_epi64(h, HOT_SHIFT), u = _mm512_srli_epi64(w, HOT_SHIFT);
    __mmask8 lt = _mm512_cmplt_epu64_mask(u, thr);
    *tie |= _mm512_cmpeq_epu64_mask(u, thr);
    __m512i v = _mm512_mask_blend_epi64(lt, _mm512_and_si512(h, _mm512_set1_epi64(0xffff)), j);
    __mmask8 neg = _mm512_test_epi64_mask(w, _mm512_set1_epi64(1 << IDX_BITS));
    return _mm512_mask_sub_epi64(v, neg, _mm512_setzero_si512(), v);
}

__attribute__((target("avx512f"))) static void draw_avx512(fl_dpnoise *nz, const dp_table *t,
                                                           const uint64_t *w1, const uint64_t *w2,
                                                           int32_t *z, size_t m) {
    const __m256i k = _mm256_set1_epi32(t->k);
    size_t i = 0;
    for (; i + 8 <= m; i += 8) {
        __mmask8 tie = 0;
        __m512i x1 = draw8(t, _mm512_loadu_si512((const void *)(w1 + i)), &tie);
        __m512i x2 = draw8(t, _mm512_loadu_si512((const void *)(w2 + i)), &tie);
        if (__builtin_expect(tie != 0, 0)) {
            draw_scalar(nz, t, w1 + i, w2 + i, z + i, 8);
            continue;
        }
        __m256i y = _mm256_add_epi32(_mm256_mullo_epi32(k, _mm512_cvtepi64_epi32(x1)),
                                     _mm512_cvtepi64_epi32(x2));
        _mm256_storeu_si256((__m256i *)(z + i), y);
    }
    draw_scalar(nz, t, w1 + i, w2 + i, z + i, m - i);
}

__attribute__((target("avx2"))) static inline __m256i draw4(const dp_table *t, __m256i w,
                                                            __m256i *tie) {
    const __m256i j = _mm256_and_si256(w, _mm256_set1_epi64x(NCOL - 1));
    const __m256i h = _mm256_i64gather_epi64((const long long *)t->hot, j, 8);
    /* u and thr are below 2^48: the signed compare is the unsigned one */
    const __m256i thr = _mm256_srli_epi64(h, HOT_SHIFT), u = _mm256_srli_epi64(w, HOT_SHIFT);
    __m256i lt = _mm256_cmpgt_epi64(thr, u);
    *tie = _mm256_or_si256(*tie, _mm256_cmpeq_epi64(u, thr));
    __m256i v = _mm256_blendv_epi8(_mm256_and_si256(h, _mm256_set1_epi64x(0xffff)), j, lt);
    const __m256i sbit = _mm256_set1_epi64x(1 << IDX_BITS);
    __m256i neg = _mm256_cmpeq_epi64(_mm256_and_si256(w, sbit), sbit);
    return _mm256_sub_epi64(_mm256_xor_si256(v, neg), neg);
}

__attribute__((target("avx2"))) static void draw_avx2(fl_dpnoise *nz, const dp_table *t,
                                                      const uint64_t *w1, const uint64_t *w2,
                                                      int32_t *z, size_t m) {
    const __m256i k = _mm256_set1_epi64x(t->k);
    const __m256i lo = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        __m256i tie = _mm256_setzero_si256();
        __m256i x1 = draw4(t, _mm256_loadu_si256((const __m256i *)(w1 + i)), &tie);
        __m256i x2 = draw4(t, _mm256_loadu_si256((const __m256i *)(w2 + i)), &tie);
        if (__builtin_expect(!_mm256_testz_si256(tie, tie), 0)) {
            draw_scalar(nz, t, w1 + i, w2 + i, z + i, 4);
            continue;
        }
        __m256i y = _mm256_add_epi64(_mm256_mul_epi32(k, x1), x2);
        y = _mm256_permutevar8x32_epi32(y, lo);
        _mm_storeu_si128((__m128i *)(z + i), _mm256_castsi256_si128(y));
    }
    draw_scalar(nz, t, w1 + i, w2 + i, z + i, m - i);
}
#endif

typedef void (*draw_fn)(fl_dpnoise *, const dp_table *, const uint64_t *, const uint64_t *,
                        int32_t *, size_t);

/* Picked once, like libsodium's implementations (STYLE.md §2). */
static draw_fn pick_draw(unsigned flags) {
    if (flags & FL_DPNOISE_PORTABLE) return draw_scalar;
#ifdef FL_HAVE_X86_SIMD
    if (!(flags & FL_DPNOISE_NO_AVX512) && __builtin_cpu_supports("avx512f")) return draw_avx512;
    if (__builtin_cpu_supports("avx2")) return draw_avx2;
#endif
    return draw_scalar;
}

/* z[0..m) for the current table, m <= CHUNK: X1 from the first m keystream
 * words, X2 from the next m. */
static int gen_chunk(fl_dpnoise *nz, int32_t *z, size_t m) {
    int rc = keystream(nz, 2 * m * sizeof(uint64_t));
    if (rc) return rc;
    nz->draw(nz, nz->tab, nz->words, nz->words + m, z, m);
    return 0;
}

/* After a vector: wipe the keystream and the key schedules. */
static int gen_end(fl_dpnoise *nz) {
    sodium_memzero(nz->words, 2 * CHUNK * sizeof(uint64_t));
    int rc = keys_wipe(nz);
    return nz->tie_err ? FL_ECRYPTO : rc;
}

/* z[0..n) under keymat (which it does not advance). */
static int gen_vector(fl_dpnoise *nz, int32_t *z, size_t n, double s) {
    int rc = table_for(nz, s);
    if (!rc) rc = keys_begin(nz);
    for (size_t i = 0; !rc && i < n; i += CHUNK)
        rc = gen_chunk(nz, z + i, n - i < CHUNK ? n - i : CHUNK);
    int rc2 = gen_end(nz);
    return rc ? rc : rc2;
}

/* x[i] <- (float)(round(x[i] 2^-e) + z[i]) * gs for i < m; returns 1 if
 * some |x[i] 2^-e| > 2^50 or is not finite (the result is then unused).
 * Branch-free, so the time does not depend on x: t = x 2^-e is exact; the
 * rounding to nearest even is (t + 1.5 2^52) - 1.5 2^52, exact for |t| <=
 * 2^51; the sum with z is an exact integer in a double; the conversion to
 * float rounds it to nearest even and the product is one more rounding, the
 * same in every variant below. So x's new value is a function of the
 * integer round(x 2^-e) + z alone. */
static int snap_scalar(float *x, const int32_t *z, size_t m, double inv_g, float gs) {
    const double magic = 0x1.8p52;
    int bad = 0;
    for (size_t i = 0; i < m; i++) {
        double t = (double)x[i] * inv_g;
        bad |= !(fabs(t) <= 0x1p50);
        double r = (t + magic) - magic;
        x[i] = (float)(r + (double)z[i]) * gs;
    }
    return bad;
}

#ifdef FL_HAVE_X86_SIMD
__attribute__((target("avx512f"))) static int snap_avx512(float *x, const int32_t *z, size_t m,
                                                          double inv_g, float gs) {
    const __m512d vinv = _mm512_set1_pd(inv_g), magic = _mm512_set1_pd(0x1.8p52),
                  lim = _mm512_set1_pd(0x1p50);
    const __m256 vgs = _mm256_set1_ps(gs);
    __mmask8 bad = 0;
    size_t i = 0;
    for (; i + 8 <= m; i += 8) {
        __m512d t = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), vinv);
        bad |= _mm512_cmp_pd_mask(_mm512_abs_pd(t), lim, _CMP_NLE_UQ);
        __m512d r = _mm512_sub_pd(_mm512_add_pd(t, magic), magic);
        __m512d v =
            _mm512_add_pd(r, _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)(z + i))));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm512_cvtpd_ps(v), vgs));
    }
    return (bad != 0) | snap_scalar(x + i, z + i, m - i, inv_g, gs);
}

__attribute__((target("avx2"))) static int snap_avx2(float *x, const int32_t *z, size_t m,
                                                     double inv_g, float gs) {
    const __m256d vinv = _mm256_set1_pd(inv_g), magic = _mm256_set1_pd(0x1.8p52),
                  lim = _mm256_set1_pd(0x1p50), sign = _mm256_set1_pd(-0.0);
    const __m128 vgs = _mm_set1_ps(gs);
    __m256d bad = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        __m256d t = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), vinv);
        bad = _mm256_or_pd(bad, _mm256_cmp_pd(_mm256_andnot_pd(sign, t), lim, _CMP_NLE_UQ));
        __m256d r = _mm256_sub_pd(_mm256_add_pd(t, magic), magic);
        __m256d v = _mm256_add_pd(r, _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(z + i))));
        _mm_storeu_ps(x + i, _mm_mul_ps(_mm256_cvtpd_ps(v), vgs));
    }
    return (_mm256_movemask_pd(bad) != 0) | snap_scalar(x + i, z + i, m - i, inv_g, gs);
}
#endif

typedef int (*snap_fn)(float *, const int32_t *, size_t, double, float);

static snap_fn pick_snap(unsigned flags) {
    if (flags & FL_DPNOISE_PORTABLE) return snap_scalar;
#ifdef FL_HAVE_X86_SIMD
    if (!(flags & FL_DPNOISE_NO_AVX512) && __builtin_cpu_supports("avx512f")) return snap_avx512;
    if (__builtin_cpu_supports("avx2")) return snap_avx2;
#endif
    return snap_scalar;
}

/* ================================ background worker ======================= */

static void *worker_main(void *arg) {
    fl_dpnoise *nz = arg;
    pthread_mutex_lock(&nz->mu);
    for (;;) {
        while (!nz->stop && nz->state != W_QUEUED)
            pthread_cond_wait(&nz->cv, &nz->mu);
        if (nz->stop) break;
        nz->state = W_RUNNING;
        int b = nz->job_buf;
        size_t n = nz->job_n;
        double sd = nz->job_sd;
        pthread_mutex_unlock(&nz->mu);
        double g, s;
        int rc = fl_dpnoise_grid(&g, &s, sd, NULL);
        if (!rc) rc = gen_vector(nz, nz->buf[b], n, s);
        pthread_mutex_lock(&nz->mu);
        nz->state = W_IDLE;
        nz->job_rc = rc;
        nz->ready = rc ? -1 : b;
        nz->ready_n = n;
        nz->ready_sd = sd;
        pthread_cond_broadcast(&nz->cv);
    }
    pthread_mutex_unlock(&nz->mu);
    return NULL;
}

static void buffers_free(fl_dpnoise *nz) {
    for (int i = 0; i < 2; i++) {
        if (nz->buf[i]) {
            sodium_memzero(nz->buf[i], nz->buf_n * sizeof(int32_t));
            sodium_free(nz->buf[i]);
        }
        nz->buf[i] = NULL;
    }
    nz->buf_n = 0;
    nz->ready = -1;
}

/* Caller holds mu and the worker is idle. */
static int buffers_size(fl_dpnoise *nz, size_t n) {
    if (nz->buf_n == n && nz->buf[0]) return 0;
    buffers_free(nz);
    for (int i = 0; i < 2; i++)
        if (!(nz->buf[i] = sodium_malloc(n ? n * sizeof(int32_t) : 1))) {
            buffers_free(nz);
            return FL_ENOMEM;
        }
    nz->buf_n = n;
    return 0;
}

static void wait_idle(fl_dpnoise *nz) {
    while (nz->state != W_IDLE)
        pthread_cond_wait(&nz->cv, &nz->mu);
}

/* Forgets the vector drawn ahead, wiping it unless it is kept (keep). */
static void discard_ready(fl_dpnoise *nz, int keep) {
    if (nz->ready >= 0 && nz->ready != keep)
        sodium_memzero(nz->buf[nz->ready], nz->buf_n * sizeof(int32_t));
    nz->job_rc = 0;
    nz->ready = -1;
}

static void queue_job(fl_dpnoise *nz, int b, size_t n, double sd) {
    nz->job_buf = b;
    nz->job_n = n;
    nz->job_sd = sd;
    nz->state = W_QUEUED;
    pthread_cond_broadcast(&nz->cv);
}

/* The next noise vector of (n, sd) in *vec (valid until the next call on
 * nz): the prefetched one when it matches, otherwise drawn now; then the
 * worker starts on the one after. */
static int acquire(fl_dpnoise *nz, const int32_t **vec, size_t n, double sd, double s) {
    pthread_mutex_lock(&nz->mu);
    wait_idle(nz);
    int rc = 0, use = -1;
    if (!nz->job_rc && nz->ready >= 0 && nz->ready_n == n && nz->ready_sd == sd) use = nz->ready;
    discard_ready(nz, use);
    if (use < 0) {
        rc = buffers_size(nz, n);
        if (!rc) rc = gen_vector(nz, nz->buf[0], n, s);
        use = 0;
    }
    if (!rc) {
        *vec = nz->buf[use];
        keys_advance(nz);
        queue_job(nz, 1 - use, n, sd);
    }
    pthread_mutex_unlock(&nz->mu);
    return rc;
}

/* ================================ public API ============================== */

int fl_dpnoise_grid(double *grid, double *s, double stddev, char err[FL_ERR_LEN]) {
    if (!isfinite(stddev) || !(stddev >= FL_DPNOISE_MIN_STDDEV) ||
        !(stddev <= FL_DPNOISE_MAX_STDDEV))
        return fl_seterr(err, FL_EINVAL, "stddev: expected a finite value in [2^-60, 2^60], got %g",
                         stddev);
    int x;
    double f = frexp(stddev, &x); /* stddev = f 2^x, f in [0.5, 1) */
    if (grid) *grid = ldexp(1.0, x - 1 - FL_DPNOISE_GRID_BITS);
    if (s) *s = ldexp(f, 1 + FL_DPNOISE_GRID_BITS);
    return 0;
}

int fl_dpnoise_new(fl_dpnoise **out, fl_csprng *parent, unsigned flags, char err[FL_ERR_LEN]) {
    *out = NULL;
    if (flags & ~(FL_DPNOISE_BACKGROUND | FL_DPNOISE_PORTABLE | FL_DPNOISE_NO_AVX512))
        return fl_seterr(err, FL_EINVAL, "dpnoise: unknown flags 0x%x", flags);
    if (sodium_init() < 0) return fl_seterr(err, FL_ECRYPTO, "dpnoise: sodium_init failed");
    fl_dpnoise *nz = calloc(1, sizeof *nz);
    if (!nz) return fl_seterr(err, FL_ENOMEM, "dpnoise: out of memory");
    nz->flags = flags;
    nz->ready = -1;
    nz->draw = pick_draw(flags);
    nz->snap = pick_snap(flags);
    pthread_mutex_init(&nz->mu, NULL);
    pthread_cond_init(&nz->cv, NULL);
    int rc;
    if (parent && fl_csprng_is_deterministic(parent)) {
        unsigned char *seed = sodium_malloc(FL_CSPRNG_SEEDBYTES);
        if (!seed) {
            rc = fl_seterr(err, FL_ENOMEM, "dpnoise: sodium_malloc failed");
            goto fail;
        }
        fl_csprng_bytes(parent, seed, FL_CSPRNG_SEEDBYTES);
        rc = fl_csprng_new_seeded(&nz->rng, seed, err);
        sodium_memzero(seed, FL_CSPRNG_SEEDBYTES);
        sodium_free(seed);
    } else {
        rc = fl_csprng_new(&nz->rng, err);
    }
    if (rc) goto fail;
    nz->words = sodium_malloc(2 * CHUNK * sizeof(uint64_t));
    nz->scratch = sodium_malloc(CHUNK * sizeof(int32_t));
    nz->keyiv = sodium_malloc(KEYIV_BYTES);
    nz->keymat = sodium_malloc(KEYMAT_BYTES);
    if (!nz->words || !nz->scratch || !nz->keyiv || !nz->keymat) {
        rc = fl_seterr(err, FL_ENOMEM, "dpnoise: sodium_malloc failed");
        goto fail;
    }
    keys_advance(nz);
    if (!(nz->aes = EVP_CIPHER_CTX_new()) || !(nz->tie = EVP_CIPHER_CTX_new()) || keys_begin(nz) ||
        keys_wipe(nz)) {
        rc = fl_seterr(err, FL_ECRYPTO, "dpnoise: cannot set up AES-256-CTR");
        goto fail;
    }
    if (flags & FL_DPNOISE_BACKGROUND) {
        if (pthread_create(&nz->thread, NULL, worker_main, nz) != 0) {
            rc = fl_seterr(err, FL_ENOMEM, "dpnoise: cannot start the worker thread");
            goto fail;
        }
        nz->have_thread = 1;
    }
    *out = nz;
    return 0;
fail:
    fl_dpnoise_free(nz);
    return rc;
}

void fl_dpnoise_free(fl_dpnoise *nz) {
    if (!nz) return;
    if (nz->have_thread) {
        pthread_mutex_lock(&nz->mu);
        nz->stop = 1;
        pthread_cond_broadcast(&nz->cv);
        pthread_mutex_unlock(&nz->mu);
        pthread_join(nz->thread, NULL);
    }
    buffers_free(nz);
    if (nz->words) {
        sodium_memzero(nz->words, 2 * CHUNK * sizeof(uint64_t));
        sodium_free(nz->words);
    }
    if (nz->scratch) {
        sodium_memzero(nz->scratch, CHUNK * sizeof(int32_t));
        sodium_free(nz->scratch);
    }
    if (nz->keyiv) sodium_free(nz->keyiv); /* wiped after every use */
    if (nz->keymat) {
        sodium_memzero(nz->keymat, KEYMAT_BYTES);
        sodium_free(nz->keymat);
    }
    EVP_CIPHER_CTX_free(nz->aes); /* cleanses the key schedule */
    EVP_CIPHER_CTX_free(nz->tie);
    fl_csprng_free(nz->rng);
    free(nz->tab);
    pthread_mutex_destroy(&nz->mu);
    pthread_cond_destroy(&nz->cv);
    free(nz);
}

int fl_dpnoise_prefetch(fl_dpnoise *nz, size_t n, double stddev, char err[FL_ERR_LEN]) {
    double g, s;
    int rc = fl_dpnoise_grid(&g, &s, stddev, err);
    if (rc || !nz->have_thread) return rc;
    pthread_mutex_lock(&nz->mu);
    wait_idle(nz);
    if (nz->job_rc || nz->ready < 0 || nz->ready_n != n || nz->ready_sd != stddev) {
        discard_ready(nz, -1);
        rc = buffers_size(nz, n);
        if (!rc) queue_job(nz, 0, n, stddev);
    }
    pthread_mutex_unlock(&nz->mu);
    return rc ? fl_seterr(err, rc, "dpnoise: cannot allocate %zu noise samples", n) : 0;
}

/* Feeds the noise of (n, stddev) to fn chunk by chunk: from the worker's
 * vector with FL_DPNOISE_BACKGROUND, otherwise drawn a chunk at a time
 * (the same values either way). */
typedef void (*consume_fn)(void *ctx, size_t off, const int32_t *z, size_t m);

static int with_noise(fl_dpnoise *nz, size_t n, double stddev, consume_fn fn, void *ctx,
                      char *err) {
    double g, s;
    int rc = fl_dpnoise_grid(&g, &s, stddev, err);
    if (rc) return rc;
    if (nz->have_thread) {
        const int32_t *z = NULL;
        if ((rc = acquire(nz, &z, n, stddev, s)))
            return fl_seterr(err, rc, "dpnoise: drawing %zu samples failed: %s", n,
                             fl_strerror(rc));
        fn(ctx, 0, z, n);
        return 0;
    }
    rc = table_for(nz, s);
    if (!rc) rc = keys_begin(nz);
    for (size_t i = 0; !rc && i < n; i += CHUNK) {
        size_t m = n - i < CHUNK ? n - i : CHUNK;
        if (!(rc = gen_chunk(nz, nz->scratch, m))) fn(ctx, i, nz->scratch, m);
    }
    sodium_memzero(nz->scratch, CHUNK * sizeof(int32_t));
    int rc2 = gen_end(nz);
    if (!rc) rc = rc2;
    keys_advance(nz);
    return rc ? fl_seterr(err, rc, "dpnoise: drawing %zu samples failed: %s", n, fl_strerror(rc))
              : 0;
}

static void put_int(void *ctx, size_t off, const int32_t *z, size_t m) {
    memcpy((int32_t *)ctx + off, z, m * sizeof *z);
}

int fl_dpnoise_sample(fl_dpnoise *nz, int32_t *z, size_t n, double stddev, char err[FL_ERR_LEN]) {
    if (n > 0 && !z) return fl_seterr(err, FL_EINVAL, "z: expected room for %zu samples", n);
    return with_noise(nz, n, stddev, put_int, z, err);
}

typedef struct float_ctx {
    float *x;
    float g;      /* gaussian: the grid; add: scale * grid */
    int e;        /* add: the grid exponent */
    int bad;      /* add: some |x / g| > 2^50 or not finite */
    size_t where; /* first bad index */
    int (*snap)(float *, const int32_t *, size_t, double, float);
} float_ctx;

static void put_float(void *ctx, size_t off, const int32_t *z, size_t m) {
    float_ctx *c = ctx;
    float *o = c->x + off;
    for (size_t i = 0; i < m; i++)
        o[i] = (float)z[i] * c->g; /* both factors exact or rounded once: a function of z */
}

int fl_dpnoise_gaussian(fl_dpnoise *nz, float *out, size_t n, double stddev, char err[FL_ERR_LEN]) {
    double g, s;
    int rc = fl_dpnoise_grid(&g, &s, stddev, err);
    if (rc) return rc;
    if (n > 0 && !out) return fl_seterr(err, FL_EINVAL, "out: expected room for %zu samples", n);
    float_ctx c = {out, (float)g, 0, 0, 0, NULL};
    return with_noise(nz, n, stddev, put_float, &c, err);
}

static void snap_add(void *ctx, size_t off, const int32_t *z, size_t m) {
    float_ctx *c = ctx;
    if (c->snap(c->x + off, z, m, ldexp(1.0, -c->e), c->g) && !c->bad) {
        c->bad = 1;
        c->where = off;
    }
}

int fl_dpnoise_add(fl_dpnoise *nz, float *x, size_t n, double stddev, float scale,
                   char err[FL_ERR_LEN]) {
    double g, s;
    int rc = fl_dpnoise_grid(&g, &s, stddev, err);
    if (rc) return rc;
    if (n > 0 && !x) return fl_seterr(err, FL_EINVAL, "x: expected a vector of %zu values", n);
    if (!isfinite(scale)) return fl_seterr(err, FL_EINVAL, "scale: expected a finite value");
    int x_exp;
    frexp(g, &x_exp);
    float_ctx c = {x, (float)((double)scale * g), x_exp - 1, 0, 0, nz->snap};
    rc = with_noise(nz, n, stddev, snap_add, &c, err);
    if (rc) return rc;
    if (c.bad)
        return fl_seterr(err, FL_ENUMERIC,
                         "x: a value near index %zu is not finite or too large for a noise grid "
                         "of %g",
                         c.where, g);
    return 0;
}

/* ================================ self-check ============================== */

int fl_dpnoise_selfcheck(fl_dpnoise_params *p, double stddev, char err[FL_ERR_LEN]) {
    double g, s;
    int rc = fl_dpnoise_grid(&g, &s, stddev, err);
    if (rc) return rc;
    memset(p, 0, sizeof *p);
    dp_table *t = malloc(sizeof *t);
    u256 *W = malloc(NCOL * sizeof *W), *mass = calloc(NCOL, sizeof *mass);
    if (!t || !W || !mass) {
        rc = fl_seterr(err, FL_ENOMEM, "selfcheck: out of memory");
        goto cleanup;
    }
    if ((rc = table_build(t, s, W))) {
        fl_seterr(err, rc, "selfcheck: the table for s = %.17g cannot be built", s);
        goto cleanup;
    }
    p->grid = g;
    p->s = s;
    p->sigma0 = (double)t->sigma0;
    p->k = t->k;
    p->support = t->support;
    /* What each column gives each outcome, added up exactly. */
    const u256 cap = u256_pow2(240);
    for (uint32_t j = 0; j < NCOL; j++) {
        u256 thr = {{t->cold[j][2], t->cold[j][1], t->cold[j][0], t->hot[j] >> HOT_SHIFT}};
        if (t->full[j]) thr = cap;
        uint32_t a = (uint32_t)(t->hot[j] & 0xffff);
        mass[j] = u256_add(mass[j], thr);
        mass[a] = u256_add(mass[a], u256_sub(cap, thr));
    }
    u256 sum = {{0, 0, 0, 0}};
    for (uint32_t j = 0; j < NCOL; j++) {
        if (u256_cmp(mass[j], W[j]) != 0) {
            rc = fl_seterr(err, FL_EINVAL,
                           "selfcheck: outcome %u gets a mass other than its "
                           "weight",
                           j);
            goto cleanup;
        }
        sum = u256_add(sum, W[j]);
        if ((int32_t)j > t->support && (W[j].w[0] | W[j].w[1] | W[j].w[2] | W[j].w[3])) {
            rc = fl_seterr(err, FL_EINVAL, "selfcheck: weight outside the support at %u", j);
            goto cleanup;
        }
    }
    if (u256_cmp(sum, u256_pow2(255)) != 0) {
        rc = fl_seterr(err, FL_EINVAL, "selfcheck: the weights do not sum to 2^255");
        goto cleanup;
    }
    /* Against the ideal, computed independently in long double from the
     * closed-form normaliser. */
    long double s0sq = t->sigma0 * t->sigma0, norm = sqrtl(2.0L * PI_L * s0sq), worst = 0.0L;
    for (int32_t k = 0; k <= t->support; k++) {
        long double ideal = (k ? 2.0L : 1.0L) * expl(-((long double)k * k) / (2.0L * s0sq)) / norm;
        long double got = ldexpl(u256_to_ld(W[k]), -255);
        long double rel = fabsl(got / ideal - 1.0L);
        if (rel > worst) worst = rel;
    }
    p->max_rel_error = (double)worst;
    rc = 0;
cleanup:
    free(t);
    free(W);
    free(mass);
    return rc;
}
