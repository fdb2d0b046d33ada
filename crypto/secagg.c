/* secagg.c: the client and server halves of SecAgg+ (secagg.h; protocol and
 * encodings in docs/secagg.md; DESIGN.md §9). Bonawitz et al. CCS 2017 with
 * the Harary neighbour graph of Bell et al. CCS 2020. Primitives are in kx.c
 * (X25519, BLAKE2b, XChaCha20-Poly1305, ChaCha20 PRG) and shamir.c.
 *
 * Error policy. A client call that fails for any reason other than
 * FL_ESTATE aborts the client: its secrets are wiped and every later call is
 * FL_ESTATE. A client only fails when its input is wrong, i.e. the aggregator
 * or a peer misbehaved (or too few peers are left), and carrying on after
 * that would only risk revealing more. A server call that refuses one site's
 * message (FL_EPROTO, FL_EINVAL) changes nothing, so the round goes on with
 * the other sites; only the close_* and finish calls abort the server, when
 * too few sites or shares are left. */
#include "core/bytes.h"
#include "crypto/secagg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/kx.h"
#include "crypto/pki.h"
#include "crypto/shamir.h"

#define LABEL_ADV "cohort/secagg-adv/v1"     /* signed key advertisement */
#define LABEL_ENC "cohort/secagg-enc/v1"     /* key that encrypts share pairs */
#define LABEL_SHARE "cohort/secagg-share/v1" /* associated data of share pairs */
#define LABEL_MASK "cohort/secagg-mask/v1"   /* pairwise mask seed */
#define LABEL_GRAPH "cohort/secagg-graph/v1" /* neighbour-graph permutation */

#define KB FL_SECAGG_KEY_BYTES
#define SB FL_SECAGG_SHARE_BYTES
#define PAIR (2 * SB) /* seed share || key share, the AEAD plaintext */

_Static_assert(FL_SECAGG_SHARE_BYTES == FL_SHAMIR_SHARE_BYTES, "share size");
_Static_assert(FL_SECAGG_SECRET_BYTES == FL_SHAMIR_SECRET_BYTES, "secret size");
_Static_assert(FL_SECAGG_KEY_BYTES == FL_KX_KEY_BYTES, "key size");
_Static_assert(FL_SECAGG_CT_BYTES == PAIR + FL_KX_OVERHEAD, "ciphertext size");
_Static_assert(FL_SECAGG_SIG_MAX == FL_SIG_MAX, "signature size");
_Static_assert(sizeof LABEL_ADV + 2 + FL_KX_FED_MAX + 8 + 4 + 2 * KB <= FL_SECAGG_ADVERT_MAX,
               "advertisement message size");

#define CERT_MAX (64 * 1024) /* a PEM certificate is ~1 KiB; refuse absurd ones */

const char *fl_secagg_stage_name(int stage) {
    switch (stage) {
    case FL_SECAGG_ADVERTISE:
        return "advertise";
    case FL_SECAGG_SHARE:
        return "share";
    case FL_SECAGG_MASK:
        return "mask";
    case FL_SECAGG_UNMASK:
        return "unmask";
    case FL_SECAGG_DONE:
        return "done";
    case FL_SECAGG_ABORTED:
        return "aborted";
    default:
        return "unknown";
    }
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Index of v in the ascending array a[0..n), or -1. */
static long find_u32(const uint32_t *a, size_t n, uint32_t v) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && a[lo] == v ? (long)lo : -1;
}

/* ======================== parameters and graph ======================== */

uint32_t fl_secagg_degree(uint32_t n, uint32_t configured) {
    if (n < 2) return 0;
    if (configured == 0 || configured >= n - 1) return n - 1;
    /* H(k, n) with k odd needs n even: raise k (k + 1 <= n - 1 as n - 1 is even) */
    if ((configured & 1) && (n & 1)) return configured + 1;
    return configured;
}

uint32_t fl_secagg_threshold(uint32_t degree, double fraction) {
    if (degree == 0) return 0;
    uint32_t majority = degree / 2 + 1; /* smallest count above one half */
    uint32_t t;
    if (!(fraction > 0.5)) {
        t = majority;
    } else if (fraction >= 1.0) {
        t = degree;
    } else {
        /* the tolerance keeps 0.6 * 10 at 6, not 7 */
        double x = ceil(fraction * degree - 1e-9);
        t = x < 1 ? 1 : (uint32_t)x;
        if (t < majority) t = majority;
    }
    return t > degree ? degree : t;
}

/* The round as this library keeps it: participants sorted ascending, and
 * the Harary-graph vertex of each (pos) and its inverse (perm). */
typedef struct sa_params {
    char fed[FL_KX_FED_MAX + 1];
    uint64_t round, graph_seed, d;
    uint32_t n, degree, threshold;
    uint32_t *ids;  /* (n) ascending */
    uint32_t *perm; /* (n) vertex -> index into ids */
    uint32_t *pos;  /* (n) index into ids -> vertex */
} sa_params;

static void params_free(sa_params *q) {
    free(q->ids);
    free(q->perm);
    free(q->pos);
    memset(q, 0, sizeof *q);
}

/* The 32-byte key of the graph permutation:
 * BLAKE2b-256(LABEL_GRAPH || 0 || u16le(len fed) || fed || u64le(round) ||
 * u64le(graph_seed)). */
static void graph_key(uint8_t key[32], const sa_params *q) {
    uint8_t buf[sizeof LABEL_GRAPH + 2 + FL_KX_FED_MAX + 16];
    size_t fl = strlen(q->fed), n = 0;
    memcpy(buf, LABEL_GRAPH, sizeof LABEL_GRAPH);
    n += sizeof LABEL_GRAPH;
    fl_put_le16(buf + n, (uint16_t)fl);
    n += 2;
    memcpy(buf + n, q->fed, fl);
    n += fl;
    fl_put_le64(buf + n, q->round);
    fl_put_le64(buf + n + 8, q->graph_seed);
    crypto_generichash(key, 32, buf, n + 16, NULL, 0);
}

/* Sequential little-endian u64 words of the ChaCha20-IETF keystream under
 * key (nonce 0, counter from 0), one 64-byte block at a time. */
typedef struct graph_rng {
    uint8_t key[32];
    uint8_t block[64];
    uint32_t counter;
    unsigned used; /* bytes of block consumed */
} graph_rng;

static uint64_t graph_u64(graph_rng *g) {
    static const uint8_t zeros[64], nonce[12];
    if (g->used == 64) {
        crypto_stream_chacha20_ietf_xor_ic(g->block, zeros, 64, nonce, g->counter++, g->key);
        g->used = 0;
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | g->block[g->used + (unsigned)i];
    g->used += 8;
    return v;
}

/* Fisher-Yates (Durstenfeld): for i = n-1 .. 1, j uniform in [0, i] by
 * rejection of the low 2^64 mod (i+1) words, swap perm[i] and perm[j]. */
static void graph_permutation(sa_params *q) {
    graph_rng g = {.used = 64};
    graph_key(g.key, q);
    for (uint32_t i = 0; i < q->n; i++)
        q->perm[i] = i;
    for (uint32_t i = q->n - 1; i >= 1; i--) {
        uint64_t m = (uint64_t)i + 1, reject_below = (0 - m) % m, w;
        do {
            w = graph_u64(&g);
        } while (w < reject_below);
        uint32_t j = (uint32_t)(w % m), tmp = q->perm[i];
        q->perm[i] = q->perm[j];
        q->perm[j] = tmp;
    }
    for (uint32_t v = 0; v < q->n; v++)
        q->pos[q->perm[v]] = v;
    sodium_memzero(&g, sizeof g); /* public, but keep habits uniform */
}

/* The neighbours of participant index i (indices into ids, ascending):
 * vertex v = pos[i] is adjacent to v +- 1 .. v +- k/2 (mod n), and for odd k
 * (n even) to v + n/2. Returns their number (= degree). */
static uint32_t neighbours_of(uint32_t *out, const sa_params *q, uint32_t i) {
    uint32_t n = q->n, k = q->degree, v = q->pos[i], m = 0;
    for (uint32_t s = 1; s <= k / 2; s++) {
        out[m++] = q->perm[(v + s) % n];
        out[m++] = q->perm[(v + n - s) % n];
    }
    if (k & 1) out[m++] = q->perm[(v + n / 2) % n];
    qsort(out, m, sizeof *out, cmp_u32);
    return m;
}

static int params_init(sa_params *q, const fl_secagg_params *p, char *err) {
    memset(q, 0, sizeof *q);
    if (!p) return fl_seterr(err, FL_EINVAL, "secagg: params missing");
    size_t fl = p->federation_id ? strnlen(p->federation_id, FL_KX_FED_MAX + 1) : 0;
    if (fl == 0 || fl > FL_KX_FED_MAX)
        return fl_seterr(err, FL_EINVAL, "secagg: federation_id must be 1..%d bytes",
                         FL_KX_FED_MAX);
    if (p->n < 2 || p->n > FL_SECAGG_MAX_SITES || !p->ids)
        return fl_seterr(err, FL_EINVAL, "secagg: n = %u participants (expected 2..%d)", p->n,
                         FL_SECAGG_MAX_SITES);
    if (p->d == 0 || p->d > FL_KX_PRG_MAX_WORDS || p->d > SIZE_MAX / 4)
        return fl_seterr(err, FL_EINVAL, "secagg: d = %llu words (expected 1..2^36)",
                         (unsigned long long)p->d);
    uint32_t k = fl_secagg_degree(p->n, p->degree);
    if (p->threshold < 1 || p->threshold > k)
        return fl_seterr(err, FL_EINVAL,
                         "secagg: threshold %u with degree %u (expected 1 <= threshold <= degree)",
                         p->threshold, k);
    memcpy(q->fed, p->federation_id, fl);
    q->fed[fl] = 0;
    q->round = p->round;
    q->graph_seed = p->graph_seed;
    q->d = p->d;
    q->n = p->n;
    q->degree = k;
    q->threshold = p->threshold;
    q->ids = malloc(p->n * sizeof *q->ids);
    q->perm = malloc(p->n * sizeof *q->perm);
    q->pos = malloc(p->n * sizeof *q->pos);
    if (!q->ids || !q->perm || !q->pos) {
        params_free(q);
        return fl_seterr(err, FL_ENOMEM, "secagg: out of memory for %u participants", p->n);
    }
    memcpy(q->ids, p->ids, p->n * sizeof *q->ids);
    qsort(q->ids, q->n, sizeof *q->ids, cmp_u32);
    for (uint32_t i = 0; i < q->n; i++)
        if (q->ids[i] == 0 || (i && q->ids[i] == q->ids[i - 1])) {
            uint32_t id = q->ids[i];
            params_free(q);
            return fl_seterr(err, FL_EINVAL, "secagg: participant id %u %s", id,
                             id ? "listed twice" : "(ids must be > 0)");
        }
    if (sodium_init() < 0) {
        params_free(q);
        return fl_seterr(err, FL_ECRYPTO, "secagg: sodium_init failed");
    }
    graph_permutation(q);
    return FL_OK;
}

static long index_of(const sa_params *q, uint32_t site) {
    return find_u32(q->ids, q->n, site);
}

int fl_secagg_neighbors(uint32_t *out, uint32_t *n_out, const fl_secagg_params *p, uint32_t site,
                        char err[FL_ERR_LEN]) {
    sa_params q;
    *n_out = 0;
    int rc = params_init(&q, p, err);
    if (rc) return rc;
    long i = index_of(&q, site);
    if (i < 0) {
        rc = fl_seterr(err, FL_EINVAL, "secagg: site %u is not a participant", site);
    } else {
        uint32_t m = neighbours_of(out, &q, (uint32_t)i);
        for (uint32_t j = 0; j < m; j++)
            out[j] = q.ids[out[j]];
        *n_out = m;
    }
    params_free(&q);
    return rc;
}

size_t fl_secagg_advert_message(uint8_t out[FL_SECAGG_ADVERT_MAX], const char *federation_id,
                                uint64_t round, uint32_t site, const uint8_t enc_pk[KB],
                                const uint8_t mask_pk[KB]) {
    size_t fl = federation_id ? strnlen(federation_id, FL_KX_FED_MAX + 1) : 0;
    if (fl == 0 || fl > FL_KX_FED_MAX) return 0;
    size_t n = 0;
    memcpy(out, LABEL_ADV, sizeof LABEL_ADV);
    n += sizeof LABEL_ADV;
    fl_put_le16(out + n, (uint16_t)fl);
    n += 2;
    memcpy(out + n, federation_id, fl);
    n += fl;
    fl_put_le64(out + n, round);
    n += 8;
    fl_put_le32(out + n, site);
    n += 4;
    memcpy(out + n, enc_pk, KB);
    n += KB;
    memcpy(out + n, mask_pk, KB);
    return n + KB;
}

/* ================================ client ================================ */

typedef struct cpeer {
    uint32_t site;
    uint8_t enc_pk[KB], mask_pk[KB];
    uint8_t accepted; /* keys verified at SHARE */
    uint8_t sender;   /* its share pair arrived at MASK: the peer is in U2(u) */
    uint8_t asked;    /* 0, or the kind requested at UNMASK */
} cpeer;

/* Everything secret a client holds, in one sodium_malloc block. */
typedef struct csecrets {
    uint8_t enc_sk[KB], mask_sk[KB], b[FL_SECAGG_SECRET_BYTES];
    uint8_t pairs[]; /* (n_nbr, PAIR): the seed and key shares received from nbr[i] */
} csecrets;

struct fl_secagg_client {
    int stage;
    sa_params q;
    uint32_t self;
    uint32_t n_nbr;
    cpeer *nbr; /* (n_nbr) ascending by site */
    csecrets *sec;
    size_t sec_len;
    fl_csprng *rng;
    int own_rng;
};

static void client_wipe(fl_secagg_client *c) {
    if (c->sec) {
        sodium_memzero(c->sec, c->sec_len);
        sodium_free(c->sec);
        c->sec = NULL;
    }
}

/* The single exit of every failing client call (FL_ESTATE aside). */
static int client_abort(fl_secagg_client *c, int rc) {
    client_wipe(c);
    c->stage = FL_SECAGG_ABORTED;
    return rc;
}

static int client_stage(const fl_secagg_client *c, int want, const char *call, char *err) {
    if (!c) return fl_seterr(err, FL_EINVAL, "secagg: %s: no client", call);
    if (c->stage != want)
        return fl_seterr(err, FL_ESTATE, "secagg: site %u: %s called in stage %s (expected %s)",
                         c->self, call, fl_secagg_stage_name(c->stage), fl_secagg_stage_name(want));
    return FL_OK;
}

static cpeer *client_peer(const fl_secagg_client *c, uint32_t site) {
    size_t lo = 0, hi = c->n_nbr;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->nbr[mid].site < site)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->n_nbr && c->nbr[lo].site == site ? &c->nbr[lo] : NULL;
}

int fl_secagg_client_new(fl_secagg_client **out, const fl_secagg_params *p, uint32_t self,
                         fl_csprng *rng, char err[FL_ERR_LEN]) {
    int rc = FL_OK;
    uint32_t *tmp = NULL;
    fl_secagg_client *c = NULL;
    *out = NULL;
    c = calloc(1, sizeof *c);
    if (!c) return fl_seterr(err, FL_ENOMEM, "secagg: out of memory");
    c->stage = FL_SECAGG_ABORTED; /* until fully built */
    c->self = self;
    if ((rc = params_init(&c->q, p, err))) goto cleanup;
    long me = index_of(&c->q, self);
    if (me < 0) {
        rc = fl_seterr(err, FL_EINVAL, "secagg: site %u is not a participant of round %llu", self,
                       (unsigned long long)c->q.round);
        goto cleanup;
    }
    tmp = malloc(c->q.degree * sizeof *tmp);
    c->nbr = calloc(c->q.degree, sizeof *c->nbr);
    if (!tmp || !c->nbr) {
        rc = fl_seterr(err, FL_ENOMEM, "secagg: out of memory for %u neighbours", c->q.degree);
        goto cleanup;
    }
    c->n_nbr = neighbours_of(tmp, &c->q, (uint32_t)me);
    for (uint32_t j = 0; j < c->n_nbr; j++)
        c->nbr[j].site = c->q.ids[tmp[j]];
    c->sec_len = sizeof *c->sec + (size_t)c->n_nbr * PAIR;
    c->sec = sodium_malloc(c->sec_len);
    if (!c->sec) {
        rc = fl_seterr(err, FL_ENOMEM, "secagg: sodium_malloc of %zu bytes failed", c->sec_len);
        goto cleanup;
    }
    sodium_memzero(c->sec, c->sec_len);
    if (rng) {
        c->rng = rng;
    } else {
        if ((rc = fl_csprng_new(&c->rng, err))) goto cleanup;
        c->own_rng = 1;
    }
    c->stage = FL_SECAGG_ADVERTISE;
cleanup:
    free(tmp);
    if (rc) {
        fl_secagg_client_free(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

void fl_secagg_client_free(fl_secagg_client *c) {
    if (!c) return;
    client_wipe(c);
    if (c->own_rng) fl_csprng_free(c->rng);
    free(c->nbr);
    params_free(&c->q);
    free(c);
}

int fl_secagg_client_stage(const fl_secagg_client *c) {
    return c ? c->stage : FL_SECAGG_ABORTED;
}

int fl_secagg_client_advertise(fl_secagg_client *c, uint8_t enc_pk[KB], uint8_t mask_pk[KB],
                               char err[FL_ERR_LEN]) {
    int rc = client_stage(c, FL_SECAGG_ADVERTISE, "advertise", err);
    if (rc) return rc;
    if (!enc_pk || !mask_pk)
        return client_abort(c, fl_seterr(err, FL_EINVAL, "secagg: advertise: no key buffers"));
    fl_kx_keypair(enc_pk, c->sec->enc_sk, c->rng);
    fl_kx_keypair(mask_pk, c->sec->mask_sk, c->rng);
    c->stage = FL_SECAGG_SHARE;
    return FL_OK;
}

/* Checks one advertisement: a neighbour, not seen yet, signed. */
static int check_peer_keys(fl_secagg_client *c, const fl_secagg_peer_keys *k, char *err) {
    cpeer *pe = client_peer(c, k->site);
    if (!pe)
        return fl_seterr(err, FL_EPROTO, "secagg: site %u: keys of site %u, not a neighbour",
                         c->self, k->site);
    if (pe->accepted)
        return fl_seterr(err, FL_EPROTO, "secagg: site %u: keys of site %u given twice", c->self,
                         k->site);
    if (!k->sig || k->sig_len == 0 || k->sig_len > FL_SECAGG_SIG_MAX || !k->cert_pem ||
        k->cert_len == 0 || k->cert_len > CERT_MAX)
        return fl_seterr(err, FL_EPROTO,
                         "secagg: site %u: advertisement of site %u lacks a signature or "
                         "certificate",
                         c->self, k->site);
    uint8_t msg[FL_SECAGG_ADVERT_MAX];
    size_t len =
        fl_secagg_advert_message(msg, c->q.fed, c->q.round, k->site, k->enc_pk, k->mask_pk);
    char why[FL_ERR_LEN] = "";
    if (fl_verify(k->sig, k->sig_len, msg, len, k->cert_pem, k->cert_len, why))
        return fl_seterr(err, FL_ECRYPTO,
                         "secagg: site %u: the key advertisement of site %u has a bad signature "
                         "(keys substituted?): %s",
                         c->self, k->site, why);
    memcpy(pe->enc_pk, k->enc_pk, KB);
    memcpy(pe->mask_pk, k->mask_pk, KB);
    pe->accepted = 1;
    return FL_OK;
}

int fl_secagg_client_share(fl_secagg_client *c, fl_secagg_ct *out, const fl_secagg_peer_keys *peers,
                           size_t n_peers, char err[FL_ERR_LEN]) {
    int rc = client_stage(c, FL_SECAGG_SHARE, "share", err);
    if (rc) return rc;
    uint32_t *xs = NULL;
    uint8_t *tmp = NULL; /* secure: (n_peers, PAIR) plaintexts, then the key */
    size_t tmp_len = 0;
    if (!out || (!peers && n_peers)) {
        rc = fl_seterr(err, FL_EINVAL, "secagg: share: no input or output array");
        goto cleanup;
    }
    for (size_t i = 0; i < n_peers; i++)
        if ((rc = check_peer_keys(c, &peers[i], err))) goto cleanup;
    if (n_peers < c->q.threshold) {
        rc = fl_seterr(err, FL_ETHRESHOLD,
                       "secagg: site %u: %zu neighbours advertised keys, threshold %u", c->self,
                       n_peers, c->q.threshold);
        goto cleanup;
    }
    xs = malloc(n_peers * sizeof *xs);
    tmp_len = 2 * n_peers * SB + FL_KX_KEY_BYTES;
    tmp = sodium_malloc(tmp_len);
    if (!xs || !tmp) {
        rc = fl_seterr(err, FL_ENOMEM, "secagg: out of memory for %zu shares", n_peers);
        goto cleanup;
    }
    for (size_t i = 0; i < n_peers; i++)
        xs[i] = peers[i].site;
    uint8_t *seed_sh = tmp, *key_sh = tmp + n_peers * SB, *key = tmp + 2 * n_peers * SB;
    fl_csprng_bytes(c->rng, c->sec->b, sizeof c->sec->b);
    if ((rc = fl_shamir_split(seed_sh, c->sec->b, xs, n_peers, c->q.threshold, c->rng, err)) ||
        (rc = fl_shamir_split(key_sh, c->sec->mask_sk, xs, n_peers, c->q.threshold, c->rng, err)))
        goto cleanup;
    for (size_t i = 0; i < n_peers; i++) {
        const cpeer *pe = client_peer(c, peers[i].site);
        uint8_t pt[PAIR];
        if ((rc = fl_kx_agree(key, c->sec->enc_sk, pe->enc_pk, LABEL_ENC, c->q.fed, c->q.round,
                              c->self, pe->site, err))) {
            rc = fl_seterr(err, FL_ECRYPTO, "secagg: site %u: encryption key of site %u: %s",
                           c->self, pe->site, "low-order public key");
            goto cleanup;
        }
        memcpy(pt, seed_sh + i * SB, SB);
        memcpy(pt + SB, key_sh + i * SB, SB);
        fl_kx_ad ad = {LABEL_SHARE, c->q.fed, c->q.round, c->self, pe->site};
        out[i].peer = pe->site;
        rc = fl_kx_seal(out[i].ct, pt, PAIR, key, &ad, c->rng, err);
        sodium_memzero(pt, sizeof pt);
        if (rc) goto cleanup;
    }
    c->stage = FL_SECAGG_MASK;
cleanup:
    if (tmp) {
        sodium_memzero(tmp, tmp_len);
        sodium_free(tmp);
    }
    free(xs);
    if (rc) {
        if (out) memset(out, 0, n_peers * sizeof *out);
        return client_abort(c, rc);
    }
    return FL_OK;
}

int fl_secagg_client_mask(fl_secagg_client *c, uint32_t *y, const fl_secagg_ct *in, size_t n_in,
                          char err[FL_ERR_LEN]) {
    int rc = client_stage(c, FL_SECAGG_MASK, "mask", err);
    if (rc) return rc;
    uint8_t(*seeds)[KB] = NULL; /* secure: b_u, then k_uv per sender */
    int8_t *signs = NULL;
    size_t n_seeds = 0;
    if (!y || (!in && n_in)) {
        rc = fl_seterr(err, FL_EINVAL, "secagg: mask: no vector or input array");
        goto cleanup;
    }
    for (size_t i = 0; i < n_in; i++) {
        cpeer *pe = client_peer(c, in[i].peer);
        if (!pe || !pe->accepted) {
            rc = fl_seterr(err, FL_EPROTO,
                           "secagg: site %u: share pair from site %u, whose keys it did not "
                           "accept",
                           c->self, in[i].peer);
            goto cleanup;
        }
        if (pe->sender) {
            rc = fl_seterr(err, FL_EPROTO, "secagg: site %u: two share pairs from site %u", c->self,
                           in[i].peer);
            goto cleanup;
        }
        uint8_t key[KB];
        uint8_t *pair = c->sec->pairs + (size_t)(pe - c->nbr) * PAIR;
        fl_kx_ad ad = {LABEL_SHARE, c->q.fed, c->q.round, pe->site, c->self};
        rc = fl_kx_agree(key, c->sec->enc_sk, pe->enc_pk, LABEL_ENC, c->q.fed, c->q.round, c->self,
                         pe->site, err);
        if (!rc) rc = fl_kx_open(pair, in[i].ct, FL_SECAGG_CT_BYTES, key, &ad, err);
        sodium_memzero(key, sizeof key);
        if (rc) {
            rc = fl_seterr(err, FL_ECRYPTO,
                           "secagg: site %u: the share pair from site %u does not decrypt", c->self,
                           pe->site);
            goto cleanup;
        }
        if (fl_shamir_share_x(pair) != c->self || fl_shamir_share_x(pair + SB) != c->self) {
            rc = fl_seterr(err, FL_EPROTO, "secagg: site %u: site %u sent shares made for site %u",
                           c->self, pe->site, fl_shamir_share_x(pair));
            goto cleanup;
        }
        pe->sender = 1;
    }
    if (n_in < c->q.threshold) {
        rc = fl_seterr(err, FL_ETHRESHOLD,
                       "secagg: site %u: share pairs from %zu neighbours, threshold %u", c->self,
                       n_in, c->q.threshold);
        goto cleanup;
    }
    /* Every seed first: a failure here leaves y as it came. */
    seeds = sodium_malloc((1 + n_in) * KB);
    signs = malloc(1 + n_in);
    if (!seeds || !signs) {
        rc = fl_seterr(err, FL_ENOMEM, "secagg: out of memory for %zu mask seeds", 1 + n_in);
        goto cleanup;
    }
    memcpy(seeds[0], c->sec->b, KB);
    signs[n_seeds++] = 1;
    for (uint32_t j = 0; j < c->n_nbr; j++) {
        const cpeer *pe = &c->nbr[j];
        if (!pe->sender) continue;
        if ((rc = fl_kx_agree(seeds[n_seeds], c->sec->mask_sk, pe->mask_pk, LABEL_MASK, c->q.fed,
                              c->q.round, c->self, pe->site, err))) {
            rc = fl_seterr(err, FL_ECRYPTO, "secagg: site %u: mask key of site %u: %s", c->self,
                           pe->site, "low-order public key");
            goto cleanup;
        }
        signs[n_seeds++] = c->self < pe->site ? 1 : -1;
    }
    fl_kx_prg_add_many(y, c->q.d, (const uint8_t(*)[KB])seeds, signs, n_seeds);
    /* Only the received shares are needed from here on. */
    sodium_memzero(c->sec->enc_sk, KB);
    sodium_memzero(c->sec->mask_sk, KB);
    sodium_memzero(c->sec->b, sizeof c->sec->b);
    c->stage = FL_SECAGG_UNMASK;
cleanup:
    if (seeds) {
        sodium_memzero(seeds, (1 + n_in) * KB);
        sodium_free(seeds);
    }
    free(signs);
    return rc ? client_abort(c, rc) : FL_OK;
}

/* Marks each requested peer with its kind; refuses a peer that is not a
 * sender, is asked for both kinds, or is listed twice. */
static int mark_request(fl_secagg_client *c, const uint32_t *ids, size_t n, int kind, char *err) {
    for (size_t i = 0; i < n; i++) {
        cpeer *pe = client_peer(c, ids[i]);
        if (!pe || !pe->sender)
            return fl_seterr(err, FL_EPROTO,
                             "secagg: site %u: unmask names site %u, which sent it no shares",
                             c->self, ids[i]);
        if (pe->asked && pe->asked != kind)
            return fl_seterr(err, FL_EPROTO, "secagg: site %u: asked for both shares of site %u",
                             c->self, ids[i]);
        if (pe->asked)
            return fl_seterr(err, FL_EPROTO, "secagg: site %u: unmask lists site %u twice", c->self,
                             ids[i]);
        pe->asked = (uint8_t)kind;
    }
    return FL_OK;
}

int fl_secagg_client_unmask(fl_secagg_client *c, fl_secagg_reveal *out, size_t *n_out,
                            const uint32_t *survivors, size_t n_survivors, const uint32_t *dropped,
                            size_t n_dropped, char err[FL_ERR_LEN]) {
    if (n_out) *n_out = 0;
    int rc = client_stage(c, FL_SECAGG_UNMASK, "unmask", err);
    if (rc) return rc;
    if (!out || !n_out || (!survivors && n_survivors) || (!dropped && n_dropped))
        return client_abort(c, fl_seterr(err, FL_EINVAL, "secagg: unmask: missing array"));
    /* The whole request is checked before anything is revealed. */
    if ((rc = mark_request(c, survivors, n_survivors, FL_SECAGG_SEED, err)) ||
        (rc = mark_request(c, dropped, n_dropped, FL_SECAGG_KEY, err)))
        return client_abort(c, rc);
    size_t m = 0;
    for (size_t i = 0; i < n_survivors + n_dropped; i++) {
        int kind = i < n_survivors ? FL_SECAGG_SEED : FL_SECAGG_KEY;
        uint32_t site = i < n_survivors ? survivors[i] : dropped[i - n_survivors];
        const cpeer *pe = client_peer(c, site);
        const uint8_t *pair = c->sec->pairs + (size_t)(pe - c->nbr) * PAIR;
        out[m].peer = site;
        out[m].kind = kind;
        memcpy(out[m].share, kind == FL_SECAGG_SEED ? pair : pair + SB, SB);
        m++;
    }
    *n_out = m;
    client_wipe(c); /* the round is over for this site */
    c->stage = FL_SECAGG_DONE;
    return FL_OK;
}

/* ================================ server ================================ */

typedef struct ssite {
    uint8_t u1, u2, u3, revealed;
    uint8_t enc_pk[KB], mask_pk[KB];
    uint8_t sig[FL_SECAGG_SIG_MAX];
    size_t sig_len;
    char *cert;
    size_t cert_len;
    uint32_t *nbr;             /* (degree) neighbour indices, ascending; into nbr_all */
    fl_secagg_peer_keys *keys; /* its neighbours' keys in U1 (after close_advertise) */
    size_t n_keys;
    fl_secagg_ct *cts; /* (degree) slot j: from nbr[j]; compacted at close_shares */
    uint8_t *ct_have;  /* (degree) */
    size_t n_cts;
} ssite;

struct fl_secagg_server {
    int stage;
    sa_params q;
    ssite *site;       /* (n) by index into q.ids */
    uint32_t *nbr_all; /* (n, degree) */
    uint32_t *acc;     /* (d) sum of masked vectors mod 2^32 */
    uint8_t *rev;      /* secure (n, degree, SB): share of site v's secret revealed by nbr[j] */
    uint8_t *rev_have; /* (n, degree) */
    size_t rev_len;
    uint32_t n_u1, n_u2, n_u3;
};

static void server_wipe(fl_secagg_server *s) {
    if (s->rev) {
        sodium_memzero(s->rev, s->rev_len);
        sodium_free(s->rev);
        s->rev = NULL;
    }
    if (s->rev_have) memset(s->rev_have, 0, (size_t)s->q.n * s->q.degree);
}

static int server_abort(fl_secagg_server *s, int rc) {
    server_wipe(s);
    if (s->acc) memset(s->acc, 0, s->q.d * sizeof *s->acc);
    s->stage = FL_SECAGG_ABORTED;
    return rc;
}

static int server_stage(const fl_secagg_server *s, int want, const char *call, char *err) {
    if (!s) return fl_seterr(err, FL_EINVAL, "secagg: %s: no server", call);
    if (s->stage != want)
        return fl_seterr(err, FL_ESTATE, "secagg: server: %s called in stage %s (expected %s)",
                         call, fl_secagg_stage_name(s->stage), fl_secagg_stage_name(want));
    return FL_OK;
}

/* The slot of neighbour index j in site index v's list, or -1. */
static long slot_of(const fl_secagg_server *s, uint32_t v, uint32_t j) {
    return find_u32(s->site[v].nbr, s->q.degree, j);
}

int fl_secagg_server_new(fl_secagg_server **out, const fl_secagg_params *p, char err[FL_ERR_LEN]) {
    int rc = FL_OK;
    *out = NULL;
    fl_secagg_server *s = calloc(1, sizeof *s);
    if (!s) return fl_seterr(err, FL_ENOMEM, "secagg: out of memory");
    s->stage = FL_SECAGG_ABORTED;
    if ((rc = params_init(&s->q, p, err))) goto cleanup;
    size_t n = s->q.n, k = s->q.degree;
    s->site = calloc(n, sizeof *s->site);
    s->nbr_all = malloc(n * k * sizeof *s->nbr_all);
    s->acc = calloc(s->q.d, sizeof *s->acc);
    s->rev_have = calloc(n * k, 1);
    s->rev_len = n * k * SB;
    s->rev = sodium_malloc(s->rev_len);
    if (!s->site || !s->nbr_all || !s->acc || !s->rev_have || !s->rev) {
        rc = fl_seterr(err, FL_ENOMEM, "secagg: out of memory for %zu sites, degree %zu, d = %llu",
                       n, k, (unsigned long long)s->q.d);
        goto cleanup;
    }
    sodium_memzero(s->rev, s->rev_len);
    for (uint32_t i = 0; i < n; i++) {
        s->site[i].nbr = s->nbr_all + (size_t)i * k;
        neighbours_of(s->site[i].nbr, &s->q, i);
    }
    s->stage = FL_SECAGG_ADVERTISE;
cleanup:
    if (rc) {
        fl_secagg_server_free(s);
        s = NULL;
    }
    *out = s;
    return rc;
}

void fl_secagg_server_free(fl_secagg_server *s) {
    if (!s) return;
    server_wipe(s);
    if (s->site)
        for (uint32_t i = 0; i < s->q.n; i++) {
            free(s->site[i].cert);
            free(s->site[i].keys);
            free(s->site[i].cts);
            free(s->site[i].ct_have);
        }
    free(s->site);
    free(s->nbr_all);
    free(s->acc);
    free(s->rev_have);
    params_free(&s->q);
    free(s);
}

int fl_secagg_server_stage(const fl_secagg_server *s) {
    return s ? s->stage : FL_SECAGG_ABORTED;
}

/* The index of a site that sent a message, or a refusal naming it. */
static int server_site(const fl_secagg_server *s, uint32_t site, long *idx, char *err) {
    *idx = index_of(&s->q, site);
    if (*idx < 0)
        return fl_seterr(err, FL_EPROTO, "secagg: server: site %u is not a participant", site);
    return FL_OK;
}

int fl_secagg_server_advertise(fl_secagg_server *s, const fl_secagg_peer_keys *keys,
                               char err[FL_ERR_LEN]) {
    int rc = server_stage(s, FL_SECAGG_ADVERTISE, "advertise", err);
    if (rc) return rc;
    long i;
    if (!keys) return fl_seterr(err, FL_EINVAL, "secagg: server: advertise: no keys");
    if ((rc = server_site(s, keys->site, &i, err))) return rc;
    ssite *st = &s->site[i];
    if (st->u1)
        return fl_seterr(err, FL_EPROTO, "secagg: server: site %u advertised twice", keys->site);
    if (!keys->sig || keys->sig_len == 0 || keys->sig_len > FL_SECAGG_SIG_MAX || !keys->cert_pem ||
        keys->cert_len == 0 || keys->cert_len > CERT_MAX)
        return fl_seterr(err, FL_EPROTO,
                         "secagg: server: advertisement of site %u: signature (1..%d bytes) or "
                         "certificate missing",
                         keys->site, FL_SECAGG_SIG_MAX);
    st->cert = malloc(keys->cert_len);
    if (!st->cert) return fl_seterr(err, FL_ENOMEM, "secagg: server: out of memory");
    memcpy(st->cert, keys->cert_pem, keys->cert_len);
    st->cert_len = keys->cert_len;
    memcpy(st->sig, keys->sig, keys->sig_len);
    st->sig_len = keys->sig_len;
    memcpy(st->enc_pk, keys->enc_pk, KB);
    memcpy(st->mask_pk, keys->mask_pk, KB);
    st->u1 = 1;
    s->n_u1++;
    return FL_OK;
}

int fl_secagg_server_close_advertise(fl_secagg_server *s, char err[FL_ERR_LEN]) {
    int rc = server_stage(s, FL_SECAGG_ADVERTISE, "close_advertise", err);
    if (rc) return rc;
    if (s->n_u1 < 2)
        return server_abort(s, fl_seterr(err, FL_ETHRESHOLD,
                                         "secagg: %u site(s) advertised keys, at least 2 needed",
                                         s->n_u1));
    uint32_t k = s->q.degree;
    for (uint32_t i = 0; i < s->q.n; i++) {
        ssite *st = &s->site[i];
        if (!st->u1) continue;
        st->keys = calloc(k, sizeof *st->keys);
        st->cts = calloc(k, sizeof *st->cts);
        st->ct_have = calloc(k, 1);
        if (!st->keys || !st->cts || !st->ct_have)
            return server_abort(s, fl_seterr(err, FL_ENOMEM, "secagg: server: out of memory"));
        for (uint32_t j = 0; j < k; j++) {
            const ssite *pe = &s->site[st->nbr[j]];
            if (!pe->u1) continue;
            fl_secagg_peer_keys *o = &st->keys[st->n_keys++];
            o->site = s->q.ids[st->nbr[j]];
            memcpy(o->enc_pk, pe->enc_pk, KB);
            memcpy(o->mask_pk, pe->mask_pk, KB);
            o->sig = pe->sig;
            o->sig_len = pe->sig_len;
            o->cert_pem = pe->cert;
            o->cert_len = pe->cert_len;
        }
    }
    s->stage = FL_SECAGG_SHARE;
    return FL_OK;
}

int fl_secagg_server_keys_for(const fl_secagg_server *s, uint32_t site,
                              const fl_secagg_peer_keys **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!s) return FL_EINVAL;
    if (s->stage < FL_SECAGG_SHARE || s->stage > FL_SECAGG_DONE) return FL_ESTATE;
    long i = index_of(&s->q, site);
    if (i < 0 || !s->site[i].u1) return FL_EINVAL;
    *out = s->site[i].keys;
    *n = s->site[i].n_keys;
    return FL_OK;
}

int fl_secagg_server_shares(fl_secagg_server *s, uint32_t from, const fl_secagg_ct *cts, size_t n,
                            char err[FL_ERR_LEN]) {
    int rc = server_stage(s, FL_SECAGG_SHARE, "shares", err);
    if (rc) return rc;
    long i;
    uint8_t *seen = NULL;
    if ((rc = server_site(s, from, &i, err))) return rc;
    ssite *st = &s->site[i];
    if (!st->u1)
        return fl_seterr(err, FL_EPROTO,
                         "secagg: server: shares from site %u, which did not "
                         "advertise keys",
                         from);
    if (st->u2)
        return fl_seterr(err, FL_EPROTO, "secagg: server: site %u sent its shares twice", from);
    if (n != st->n_keys || (!cts && n))
        return fl_seterr(err, FL_EPROTO,
                         "secagg: server: site %u sent %zu share pairs, expected %zu (one per "
                         "neighbour that advertised)",
                         from, n, st->n_keys);
    seen = calloc(s->q.degree + 1, 1);
    if (!seen) return fl_seterr(err, FL_ENOMEM, "secagg: server: out of memory");
    for (size_t c = 0; c < n; c++) {
        long r = index_of(&s->q, cts[c].peer);
        long j = r < 0 ? -1 : slot_of(s, (uint32_t)i, (uint32_t)r);
        if (j < 0 || !s->site[r].u1) {
            rc = fl_seterr(err, FL_EPROTO,
                           "secagg: server: site %u sent a share pair for site %u, not a "
                           "neighbour that advertised",
                           from, cts[c].peer);
            goto cleanup;
        }
        if (seen[j]) {
            rc = fl_seterr(err, FL_EPROTO,
                           "secagg: server: site %u sent two share pairs for site %u", from,
                           cts[c].peer);
            goto cleanup;
        }
        seen[j] = 1;
    }
    for (size_t c = 0; c < n; c++) {
        uint32_t r = (uint32_t)index_of(&s->q, cts[c].peer);
        long j = slot_of(s, r, (uint32_t)i); /* the graph is symmetric */
        s->site[r].cts[j].peer = from;
        memcpy(s->site[r].cts[j].ct, cts[c].ct, FL_SECAGG_CT_BYTES);
        s->site[r].ct_have[j] = 1;
    }
    st->u2 = 1;
    s->n_u2++;
cleanup:
    free(seen);
    return rc;
}

int fl_secagg_server_close_shares(fl_secagg_server *s, char err[FL_ERR_LEN]) {
    int rc = server_stage(s, FL_SECAGG_SHARE, "close_shares", err);
    if (rc) return rc;
    if (s->n_u2 < 2)
        return server_abort(s, fl_seterr(err, FL_ETHRESHOLD,
                                         "secagg: %u site(s) shared keys, at least 2 needed",
                                         s->n_u2));
    for (uint32_t i = 0; i < s->q.n; i++) {
        ssite *st = &s->site[i];
        if (!st->u1) continue;
        size_t m = 0;
        for (uint32_t j = 0; j < s->q.degree; j++)
            if (st->ct_have[j]) st->cts[m++] = st->cts[j]; /* only U2 sent: ascending senders */
        st->n_cts = m;
    }
    s->stage = FL_SECAGG_MASK;
    return FL_OK;
}

int fl_secagg_server_shares_for(const fl_secagg_server *s, uint32_t to, const fl_secagg_ct **out,
                                size_t *n) {
    *out = NULL;
    *n = 0;
    if (!s) return FL_EINVAL;
    if (s->stage < FL_SECAGG_MASK || s->stage > FL_SECAGG_DONE) return FL_ESTATE;
    long i = index_of(&s->q, to);
    if (i < 0 || !s->site[i].u2) return FL_EINVAL;
    *out = s->site[i].cts;
    *n = s->site[i].n_cts;
    return FL_OK;
}

int fl_secagg_server_in_u2(const fl_secagg_server *s, uint32_t site) {
    if (!s || s->stage < FL_SECAGG_MASK || s->stage > FL_SECAGG_DONE) return 0;
    long i = index_of(&s->q, site);
    return i >= 0 && s->site[i].u2;
}

static void add_vec(uint32_t *restrict acc, const uint32_t *restrict y, uint64_t d) {
    for (uint64_t i = 0; i < d; i++)
        acc[i] += y[i];
}

int fl_secagg_server_masked(fl_secagg_server *s, uint32_t from, const uint32_t *y,
                            char err[FL_ERR_LEN]) {
    int rc = server_stage(s, FL_SECAGG_MASK, "masked", err);
    if (rc) return rc;
    long i;
    if ((rc = server_site(s, from, &i, err))) return rc;
    if (!s->site[i].u2)
        return fl_seterr(err, FL_EPROTO,
                         "secagg: server: masked vector from site %u, which did not share keys",
                         from);
    if (s->site[i].u3)
        return fl_seterr(err, FL_EPROTO, "secagg: server: site %u sent its masked vector twice",
                         from);
    if (!y) return fl_seterr(err, FL_EINVAL, "secagg: server: masked: no vector");
    add_vec(s->acc, y, s->q.d);
    s->site[i].u3 = 1;
    s->n_u3++;
    return FL_OK;
}

/* Whether the secret of site index v must be rebuilt, and how many of its
 * share holders (neighbours) are in U3 (have_only: that revealed). A
 * survivor's self-mask seed is always needed; a dropped site's mask key only
 * when a survivor added a pairwise mask with it. */
static int needs_secret(const fl_secagg_server *s, uint32_t v, int revealed_only,
                        uint32_t *holders) {
    const ssite *st = &s->site[v];
    uint32_t h = 0, in_u3 = 0;
    *holders = 0;
    if (!st->u2) return 0;
    for (uint32_t j = 0; j < s->q.degree; j++) {
        const ssite *pe = &s->site[st->nbr[j]];
        if (!pe->u3) continue;
        in_u3++;
        if (!revealed_only || s->rev_have[(size_t)v * s->q.degree + j]) h++;
    }
    *holders = h;
    return st->u3 || in_u3 > 0;
}

/* Every secret the server will need has at least threshold holders
 * (revealed_only: that answered UNMASK); else FL_ETHRESHOLD naming the
 * first site short of shares. */
static int check_holders(const fl_secagg_server *s, int revealed_only, char *err) {
    for (uint32_t v = 0; v < s->q.n; v++) {
        uint32_t h;
        if (needs_secret(s, v, revealed_only, &h) && h < s->q.threshold)
            return fl_seterr(
                err, FL_ETHRESHOLD,
                "secagg: site %u: %u of its neighbours %s, %u shares of its %s "
                "needed; the round is aborted",
                s->q.ids[v], h, revealed_only ? "revealed shares" : "are left to reveal shares",
                s->q.threshold, s->site[v].u3 ? "self-mask seed" : "mask key (it dropped out)");
    }
    return FL_OK;
}

int fl_secagg_server_close_masked(fl_secagg_server *s, char err[FL_ERR_LEN]) {
    int rc = server_stage(s, FL_SECAGG_MASK, "close_masked", err);
    if (rc) return rc;
    if (s->n_u3 < 2)
        return server_abort(s, fl_seterr(err, FL_ETHRESHOLD,
                                         "secagg: %u masked vector(s) arrived, at least 2 needed",
                                         s->n_u3));
    /* No UNMASK round can succeed if some needed secret has too few
     * holders left: say so now rather than after another round trip. */
    if ((rc = check_holders(s, 0, err))) return server_abort(s, rc);
    s->stage = FL_SECAGG_UNMASK;
    return FL_OK;
}

int fl_secagg_server_in_u3(const fl_secagg_server *s, uint32_t site) {
    if (!s || s->stage < FL_SECAGG_UNMASK || s->stage > FL_SECAGG_DONE) return 0;
    long i = index_of(&s->q, site);
    return i >= 0 && s->site[i].u3;
}

int fl_secagg_server_unmask_request(const fl_secagg_server *s, uint32_t site, uint32_t *survivors,
                                    size_t *n_survivors, uint32_t *dropped, size_t *n_dropped) {
    *n_survivors = *n_dropped = 0;
    if (!s) return FL_EINVAL;
    if (s->stage != FL_SECAGG_UNMASK) return FL_ESTATE;
    long i = index_of(&s->q, site);
    if (i < 0 || !s->site[i].u3) return FL_EINVAL;
    for (uint32_t j = 0; j < s->q.degree; j++) {
        uint32_t v = s->site[i].nbr[j];
        if (!s->site[v].u2) continue;
        if (s->site[v].u3)
            survivors[(*n_survivors)++] = s->q.ids[v];
        else
            dropped[(*n_dropped)++] = s->q.ids[v];
    }
    return FL_OK;
}

int fl_secagg_server_reveal(fl_secagg_server *s, uint32_t from, const fl_secagg_reveal *r, size_t n,
                            char err[FL_ERR_LEN]) {
    int rc = server_stage(s, FL_SECAGG_UNMASK, "reveal", err);
    if (rc) return rc;
    long i;
    uint8_t *seen = NULL;
    if ((rc = server_site(s, from, &i, err))) return rc;
    ssite *st = &s->site[i];
    if (!st->u3)
        return fl_seterr(err, FL_EPROTO,
                         "secagg: server: reveals from site %u, which sent no masked vector", from);
    if (st->revealed)
        return fl_seterr(err, FL_EPROTO, "secagg: server: site %u revealed twice", from);
    size_t expected = 0;
    for (uint32_t j = 0; j < s->q.degree; j++)
        expected += s->site[st->nbr[j]].u2;
    if (n != expected || (!r && n))
        return fl_seterr(err, FL_EPROTO,
                         "secagg: server: site %u revealed %zu shares, expected %zu", from, n,
                         expected);
    seen = calloc(s->q.degree + 1, 1);
    if (!seen) return fl_seterr(err, FL_ENOMEM, "secagg: server: out of memory");
    for (size_t c = 0; c < n; c++) {
        long v = index_of(&s->q, r[c].peer);
        long j = v < 0 ? -1 : slot_of(s, (uint32_t)i, (uint32_t)v);
        if (j < 0 || !s->site[v].u2) {
            rc = fl_seterr(err, FL_EPROTO,
                           "secagg: server: site %u revealed a share of site %u, which was not "
                           "asked for",
                           from, r[c].peer);
            goto cleanup;
        }
        int want = s->site[v].u3 ? FL_SECAGG_SEED : FL_SECAGG_KEY;
        if (r[c].kind != want) {
            rc = fl_seterr(err, FL_EPROTO,
                           "secagg: server: site %u revealed the %s share of site %u, the %s "
                           "share was asked for",
                           from, r[c].kind == FL_SECAGG_SEED ? "seed" : "key", r[c].peer,
                           want == FL_SECAGG_SEED ? "seed" : "key");
            goto cleanup;
        }
        if (seen[j]) {
            rc = fl_seterr(err, FL_EPROTO, "secagg: server: site %u revealed site %u twice", from,
                           r[c].peer);
            goto cleanup;
        }
        if (fl_shamir_share_x(r[c].share) != from) {
            rc = fl_seterr(err, FL_EPROTO,
                           "secagg: server: site %u revealed a share of site %u made for site %u",
                           from, r[c].peer, fl_shamir_share_x(r[c].share));
            goto cleanup;
        }
        seen[j] = 1;
    }
    for (size_t c = 0; c < n; c++) {
        uint32_t v = (uint32_t)index_of(&s->q, r[c].peer);
        size_t j = (size_t)slot_of(s, v, (uint32_t)i);
        size_t at = (size_t)v * s->q.degree + j;
        memcpy(s->rev + at * SB, r[c].share, SB);
        s->rev_have[at] = (uint8_t)r[c].kind;
    }
    st->revealed = 1;
cleanup:
    free(seen);
    return rc;
}

int fl_secagg_server_finish(fl_secagg_server *s, uint32_t *sum, uint32_t *survivors,
                            size_t *n_survivors, char err[FL_ERR_LEN]) {
    int rc = server_stage(s, FL_SECAGG_UNMASK, "finish", err);
    if (rc) return rc;
    uint32_t n = s->q.n, k = s->q.degree;
    uint8_t(*seeds)[KB] = NULL; /* secure: what to subtract */
    int8_t *signs = NULL;
    uint8_t *buf = NULL; /* secure: (k, SB) gathered shares, then the rebuilt secret */
    size_t n_seeds = 0, cap = 0, buf_len = (size_t)k * SB + FL_SECAGG_SECRET_BYTES;
    if (!sum || !survivors || !n_survivors)
        return fl_seterr(err, FL_EINVAL, "secagg: server: finish: missing output");
    /* 1. All or nothing: every needed secret has enough shares. */
    if ((rc = check_holders(s, 1, err))) return server_abort(s, rc);
    for (uint32_t v = 0; v < n; v++) {
        uint32_t h;
        if (!needs_secret(s, v, 1, &h)) continue;
        if (s->site[v].u3) {
            cap++;
        } else {
            for (uint32_t j = 0; j < k; j++)
                cap += s->site[s->site[v].nbr[j]].u3;
        }
    }
    seeds = sodium_malloc((cap ? cap : 1) * KB);
    signs = malloc(cap ? cap : 1);
    buf = sodium_malloc(buf_len);
    if (!seeds || !signs || !buf) {
        rc = fl_seterr(err, FL_ENOMEM, "secagg: server: out of memory for %zu seeds", cap);
        goto cleanup;
    }
    /* 2. Rebuild each secret and derive every seed; nothing is touched yet. */
    uint8_t *secret = buf + (size_t)k * SB;
    for (uint32_t v = 0; v < n; v++) {
        uint32_t h;
        const ssite *st = &s->site[v];
        if (!needs_secret(s, v, 1, &h)) continue;
        size_t m = 0;
        for (uint32_t j = 0; j < k; j++) {
            size_t at = (size_t)v * k + j;
            if (s->rev_have[at]) memcpy(buf + SB * m++, s->rev + at * SB, SB);
        }
        char why[FL_ERR_LEN] = "";
        if ((rc = fl_shamir_combine(secret, buf, m, s->q.threshold, why))) {
            rc = fl_seterr(err, rc, "secagg: site %u: its %s cannot be rebuilt: %s", s->q.ids[v],
                           st->u3 ? "self-mask seed" : "mask key", why);
            goto cleanup;
        }
        if (st->u3) {
            memcpy(seeds[n_seeds], secret, KB);
            signs[n_seeds++] = -1;
            continue;
        }
        /* A dropped site: its rebuilt key must match the key it signed. */
        uint8_t pk[KB];
        if (crypto_scalarmult_base(pk, secret) != 0 || sodium_memcmp(pk, st->mask_pk, KB) != 0) {
            rc = fl_seterr(err, FL_ECRYPTO,
                           "secagg: site %u: the rebuilt mask key does not match the key it "
                           "advertised (forged shares)",
                           s->q.ids[v]);
            goto cleanup;
        }
        for (uint32_t j = 0; j < k; j++) {
            uint32_t u = st->nbr[j];
            if (!s->site[u].u3) continue;
            uint32_t uid = s->q.ids[u], vid = s->q.ids[v];
            if ((rc = fl_kx_agree(seeds[n_seeds], secret, s->site[u].mask_pk, LABEL_MASK, s->q.fed,
                                  s->q.round, vid, uid, err))) {
                rc = fl_seterr(err, FL_ECRYPTO, "secagg: sites %u and %u: no pairwise mask key",
                               vid, uid);
                goto cleanup;
            }
            /* u added s(u, v) PRG(k_uv): remove it */
            signs[n_seeds++] = uid < vid ? -1 : 1;
        }
    }
    /* 3. Unmask: cannot fail. */
    fl_kx_prg_add_many(s->acc, s->q.d, (const uint8_t(*)[KB])seeds, signs, n_seeds);
    memcpy(sum, s->acc, s->q.d * sizeof *sum);
    size_t m = 0;
    for (uint32_t v = 0; v < n; v++)
        if (s->site[v].u3) survivors[m++] = s->q.ids[v];
    *n_survivors = m;
    server_wipe(s);
    memset(s->acc, 0, s->q.d * sizeof *s->acc);
    s->stage = FL_SECAGG_DONE;
cleanup:
    if (seeds) {
        sodium_memzero(seeds, (cap ? cap : 1) * KB);
        sodium_free(seeds);
    }
    if (buf) {
        sodium_memzero(buf, buf_len);
        sodium_free(buf);
    }
    free(signs);
    return rc ? server_abort(s, rc) : FL_OK;
}

/* =========================== encoding helpers =========================== */

static int32_t as_i32(uint32_t w) {
    return w <= INT32_MAX ? (int32_t)w : (int32_t)(w - 2147483648u) - INT32_MAX - 1;
}
static int64_t as_i64(uint64_t w) {
    return w <= INT64_MAX ? (int64_t)w
                          : (int64_t)(w - UINT64_C(9223372036854775808)) - INT64_MAX - 1;
}

int fl_secagg_quantize(uint32_t *out, const float *x, uint64_t d, double clip, uint32_t levels,
                       double weight, fl_csprng *rng) {
    if (!out || (!x && d) || !rng || !(clip > 0) || !isfinite(clip) || levels == 0 ||
        levels > (1u << 30) || !(weight > 0) || !isfinite(weight) ||
        weight * levels / 2 >= 2147483648.0)
        return FL_EINVAL;
    for (uint64_t i = 0; i < d; i++)
        if (!isfinite(x[i])) return FL_ENUMERIC;
    double scale = (double)levels / (2 * clip) * weight;
    for (uint64_t i = 0; i < d; i++) {
        double v = x[i] < -clip ? -clip : x[i] > clip ? clip : (double)x[i];
        double z = v * scale, f = floor(z);
        /* round up with probability z - f: unbiased, E[q] = z */
        double u = (double)(fl_csprng_u64(rng) >> 11) * 0x1p-53;
        int64_t q = (int64_t)f + (u < z - f);
        out[i] = (uint32_t)q; /* two's complement mod 2^32 */
    }
    return FL_OK;
}

void fl_secagg_dequantize(float *out, const uint32_t *sum, uint64_t d, double clip, uint32_t levels,
                          double total_weight) {
    double scale = (double)levels / (2 * clip);
    int ok = clip > 0 && levels > 0 && total_weight > 0;
    for (uint64_t i = 0; i < d; i++)
        out[i] = ok ? (float)((double)as_i32(sum[i]) / scale / total_weight) : 0.0f;
}

void fl_secagg_encode_i64(uint32_t *out, const int64_t *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint64_t u = (uint64_t)v[i];
        for (int j = 0; j < FL_SECAGG_I64_WORDS; j++)
            out[FL_SECAGG_I64_WORDS * i + (size_t)j] = (uint32_t)(u >> (16 * j)) & 0xffffu;
    }
}

void fl_secagg_decode_i64(int64_t *out, const uint32_t *sum, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint64_t u = 0;
        for (int j = 0; j < FL_SECAGG_I64_WORDS; j++)
            u += (uint64_t)sum[FL_SECAGG_I64_WORDS * i + (size_t)j] << (16 * j);
        out[i] = as_i64(u);
    }
}
