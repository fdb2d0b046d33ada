/* csprng.c: ChaCha20 fast-key-erasure generator over libsodium. Design and
 * guarantees are in csprng.h (DESIGN.md §8, §9). */
#include "csprng.h"

#include <string.h>
#include <unistd.h>

#include <sodium.h>

/* Output bytes per refill; a refill costs one crypto_stream call. */
#define FL_CSPRNG_BLOCK 4096
/* Refills between mixes of fresh OS entropy (4096 * 256 = 1 MiB). */
#define FL_CSPRNG_RESEED 256

struct fl_csprng {
    unsigned char key[crypto_stream_chacha20_ietf_KEYBYTES];
    unsigned char stream[crypto_stream_chacha20_ietf_KEYBYTES + FL_CSPRNG_BLOCK];
    size_t pos; /* next unread byte of stream; bytes before it are wiped */
    uint64_t pool;
    unsigned pool_bits;
    unsigned refills;
    int deterministic;
    pid_t pid;
};

/* XOR fresh OS entropy into the key: the result is uniform whatever the
 * old key was. */
static void mix_os_entropy(fl_csprng *r) {
    unsigned char fresh[crypto_stream_chacha20_ietf_KEYBYTES];
    randombytes_buf(fresh, sizeof fresh);
    for (size_t i = 0; i < sizeof fresh; i++)
        r->key[i] ^= fresh[i];
    sodium_memzero(fresh, sizeof fresh);
    r->pid = getpid();
}

/* Fast key erasure: stream = ChaCha20(key); the first 32 bytes become the
 * next key and are wiped from the stream; the nonce can stay zero because
 * no key is ever used twice. */
static void refill(fl_csprng *r) {
    static const unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
    if (!r->deterministic && (r->pid != getpid() || ++r->refills >= FL_CSPRNG_RESEED)) {
        r->refills = 0;
        mix_os_entropy(r);
    }
    crypto_stream_chacha20_ietf(r->stream, sizeof r->stream, nonce, r->key);
    memcpy(r->key, r->stream, sizeof r->key);
    sodium_memzero(r->stream, sizeof r->key);
    r->pos = sizeof r->key;
}

static int make(fl_csprng **out, const unsigned char *seed, char *err) {
    *out = NULL;
    if (sodium_init() < 0) return fl_seterr(err, FL_ECRYPTO, "csprng: sodium_init failed");
    fl_csprng *r = sodium_malloc(sizeof *r);
    if (!r) return fl_seterr(err, FL_ENOMEM, "csprng: sodium_malloc of the state failed");
    memset(r, 0, sizeof *r);
    if (seed) {
        r->deterministic = 1;
        memcpy(r->key, seed, sizeof r->key);
    } else {
        mix_os_entropy(r);
    }
    refill(r);
    *out = r;
    return 0;
}

int fl_csprng_new(fl_csprng **out, char err[FL_ERR_LEN]) {
    return make(out, NULL, err);
}

int fl_csprng_new_seeded(fl_csprng **out, const unsigned char seed[FL_CSPRNG_SEEDBYTES],
                         char err[FL_ERR_LEN]) {
    if (!seed) return fl_seterr(err, FL_EINVAL, "seed: expected %d bytes", FL_CSPRNG_SEEDBYTES);
    return make(out, seed, err);
}

void fl_csprng_free(fl_csprng *r) {
    if (!r) return;
    sodium_memzero(r, sizeof *r);
    sodium_free(r);
}

int fl_csprng_is_deterministic(const fl_csprng *r) {
    return r->deterministic;
}

void fl_csprng_bytes(fl_csprng *r, void *buf, size_t n) {
    unsigned char *o = buf;
    while (n > 0) {
        if (r->pos == sizeof r->stream) refill(r);
        size_t k = sizeof r->stream - r->pos;
        if (k > n) k = n;
        memcpy(o, r->stream + r->pos, k);
        sodium_memzero(r->stream + r->pos, k);
        r->pos += k;
        o += k;
        n -= k;
    }
}

uint64_t fl_csprng_u64(fl_csprng *r) {
    if (sizeof r->stream - r->pos < 8) refill(r);
    uint64_t v;
    memcpy(&v, r->stream + r->pos, 8);
    memset(r->stream + r->pos, 0, 8); /* the buffer is read again after refill: not elided */
    r->pos += 8;
    return v;
}

uint64_t fl_csprng_bits(fl_csprng *r, unsigned k) {
    if (k == 0) return 0;
    if (k > 64) k = 64;
    if (k <= r->pool_bits) {
        uint64_t v = k == 64 ? r->pool : r->pool & ((UINT64_C(1) << k) - 1);
        r->pool = k == 64 ? 0 : r->pool >> k;
        r->pool_bits -= k;
        return v;
    }
    /* Use what is left (have < k <= 64 bits), then the rest from a new word. */
    unsigned have = r->pool_bits, need = k - have;
    uint64_t lo = r->pool, w = fl_csprng_u64(r);
    uint64_t hi = need == 64 ? w : w & ((UINT64_C(1) << need) - 1);
    r->pool = need == 64 ? 0 : w >> need;
    r->pool_bits = 64 - need;
    return have ? lo | (hi << have) : hi;
}

uint64_t fl_csprng_below(fl_csprng *r, uint64_t n) {
    if (n == 0) return 0;
    uint64_t reject_below = (0 - n) % n; /* 2^64 mod n */
    uint64_t x;
    do {
        x = fl_csprng_u64(r);
    } while (x < reject_below);
    return x % n;
}
