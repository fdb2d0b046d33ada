/* secagg.h: secure aggregation with a sparse neighbour graph (SecAgg+),
 * DESIGN.md §9; protocol guide in docs/secagg.md. Transport-free: the client
 * agent and the aggregator move the bytes; this library holds the state and
 * does the cryptography. Bonawitz et al., "Practical Secure Aggregation for
 * Privacy-Preserving Machine Learning", CCS 2017 (the four rounds, double
 * masking, Shamir recovery of dropped sites); Bell et al., "Secure
 * Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020 (each
 * site shares and masks only with its neighbours in a random sparse graph).
 *
 * One round, per site u (client) and for the aggregator (server):
 *   ADVERTISE_KEYS  u makes two X25519 key pairs (enc: share encryption,
 *                   mask: pairwise masks) and signs both public keys with its
 *                   certificate key (fl_secagg_advert_message).
 *   SHARE_KEYS      u receives its neighbours' signed keys, checks every
 *                   signature (one bad one aborts u's round: the aggregator
 *                   may be substituting keys), draws a self-mask seed b_u and
 *                   Shamir-shares b_u and its mask secret key t-of-k among
 *                   its neighbours; each share pair travels encrypted with
 *                   XChaCha20-Poly1305 under a key derived from X25519(enc).
 *   MASKED_INPUT    u receives the ciphertexts its neighbours addressed to
 *                   it; the set of senders is U2(u). u sends
 *                   y_u = x_u + PRG(b_u) + sum_{v in U2(u)} s(u,v) PRG(k_uv)
 *                   mod 2^32, s(u,v) = +1 if u < v else -1, k_uv derived
 *                   from X25519(mask).
 *   UNMASK          the aggregator names, among u's neighbours, the
 *                   survivors (sent y_v) and the dropped (shared keys but
 *                   sent no y_v); u reveals the self-mask-seed share of each
 *                   survivor and the mask-key share of each dropped site,
 *                   never both for one peer.
 * The server then rebuilds each survivor's b_v and each dropped site's mask
 * key from >= t shares, removes the self-masks and the dropped sites' pairwise
 * masks, and is left with sum_{v in U3} x_v mod 2^32, exactly. When any
 * secret it needs has fewer than t shares the round aborts (FL_ETHRESHOLD)
 * and nothing is released.
 *
 * Participants are site ids (> 0, as the aggregator numbers sites). The
 * neighbour graph is a Harary graph H(k, n) over the participants sorted by
 * id, relabelled by a permutation drawn from graph_seed; both sides compute
 * it, so a site checks that the keys it is sent come from its neighbours.
 *
 * Secrets (X25519 secret keys, b_u, received shares) live in sodium_malloc
 * memory and are wiped with sodium_memzero on every path, including errors
 * and _free. Every call is checked against the object's stage; a call out of
 * order returns FL_ESTATE and changes nothing. Any other error from a client
 * call aborts that client (stage ABORTED, secrets wiped): it only fails when
 * the aggregator or a peer misbehaved or too few peers are left. A server
 * call that refuses one site's message changes nothing; only the close_*
 * calls and finish abort the server. Errors: 0 or a negative FL_E* code
 * (core/status.h) with one line in err naming the peer or field. */
#ifndef FL_SECAGG_H
#define FL_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "crypto/csprng.h"

#define FL_SECAGG_MAX_SITES 1024
#define FL_SECAGG_KEY_BYTES 32    /* X25519 public key */
#define FL_SECAGG_SECRET_BYTES 32 /* self-mask seed, X25519 secret key */
/* A Shamir share of a 32-byte secret (crypto/shamir.h). */
#define FL_SECAGG_SHARE_BYTES 72
/* nonce (24) + seed share + key share + Poly1305 tag (16) */
#define FL_SECAGG_CT_BYTES (24 + 2 * FL_SECAGG_SHARE_BYTES + 16)
#define FL_SECAGG_ADVERT_MAX 256 /* fl_secagg_advert_message output */
#define FL_SECAGG_SIG_MAX 72     /* DER ECDSA P-256, = FL_SIG_MAX of pki.h */

/* Stages of both halves. */
enum fl_secagg_stage {
    FL_SECAGG_ADVERTISE = 0,
    FL_SECAGG_SHARE,
    FL_SECAGG_MASK,
    FL_SECAGG_UNMASK,
    FL_SECAGG_DONE,
    FL_SECAGG_ABORTED,
};
const char *fl_secagg_stage_name(int stage);

/* The round, as both sides know it. ids: the participants of this round
 * (distinct, > 0, any order; the library sorts its own copy), n >= 2.
 * degree: neighbours per site (0 or >= n-1: everyone); Harary graphs need
 * n*degree even, so an odd degree with odd n is raised by one. threshold:
 * shares needed to rebuild a site's secret, 1 <= threshold <= degree
 * (fl_secagg_threshold turns the config's fraction into it). d: words in the
 * masked vector (1 .. 2^36). */
typedef struct fl_secagg_params {
    const char *federation_id; /* 1..128 bytes; bound into signatures and AEAD data */
    uint64_t round;
    uint64_t graph_seed;
    const uint32_t *ids;
    uint32_t n;
    uint32_t degree;
    uint32_t threshold;
    uint64_t d;
} fl_secagg_params;

/* The effective degree for n participants and a configured one (0 = all). */
uint32_t fl_secagg_degree(uint32_t n, uint32_t configured);
/* ceil(fraction * degree), clamped to [1, degree]; a fraction <= 0.5 is
 * raised to just over one half (a minority must never be able to unmask). */
uint32_t fl_secagg_threshold(uint32_t degree, double fraction);

/* The neighbours of site (sorted ascending) into out (capacity
 * FL_SECAGG_MAX_SITES), their number in *n_out. FL_EINVAL if site is not a
 * participant or the params are invalid. */
int fl_secagg_neighbors(uint32_t *out, uint32_t *n_out, const fl_secagg_params *p, uint32_t site,
                        char err[FL_ERR_LEN]);

/* The bytes a site signs for its advertisement (a context label, the
 * federation id, round, site and both keys); returns their length, or 0 when
 * federation_id is NULL, empty or longer than 128 bytes. */
size_t fl_secagg_advert_message(uint8_t out[FL_SECAGG_ADVERT_MAX], const char *federation_id,
                                uint64_t round, uint32_t site,
                                const uint8_t enc_pk[FL_SECAGG_KEY_BYTES],
                                const uint8_t mask_pk[FL_SECAGG_KEY_BYTES]);

/* A site's advertised keys as another party receives them. cert_pem: the
 * signer's certificate (PEM), whose chain the caller has already verified
 * (fl_pki_verifier_check); the library checks the signature with it. */
typedef struct fl_secagg_peer_keys {
    uint32_t site;
    uint8_t enc_pk[FL_SECAGG_KEY_BYTES];
    uint8_t mask_pk[FL_SECAGG_KEY_BYTES];
    const uint8_t *sig;
    size_t sig_len;
    const char *cert_pem;
    size_t cert_len;
} fl_secagg_peer_keys;

/* An encrypted share pair between two sites: from a client's SHARE_KEYS
 * output, peer is the recipient; in a client's MASKED_INPUT input, the
 * sender. */
typedef struct fl_secagg_ct {
    uint32_t peer;
    uint8_t ct[FL_SECAGG_CT_BYTES];
} fl_secagg_ct;

/* A revealed share at UNMASK: of peer's self-mask seed (kind SEED, peer
 * survived) or of its mask secret key (kind KEY, peer dropped). */
enum { FL_SECAGG_SEED = 1, FL_SECAGG_KEY = 2 };
typedef struct fl_secagg_reveal {
    uint32_t peer;
    int kind;
    uint8_t share[FL_SECAGG_SHARE_BYTES];
} fl_secagg_reveal;

/* ============================== client ================================ */

typedef struct fl_secagg_client fl_secagg_client;

/* A site's state for one round. self must be a participant. rng: borrowed,
 * draws keys, seeds and Shamir coefficients (NULL: an OS-keyed generator of
 * its own). Caller frees with fl_secagg_client_free, which wipes. */
int fl_secagg_client_new(fl_secagg_client **out, const fl_secagg_params *p, uint32_t self,
                         fl_csprng *rng, char err[FL_ERR_LEN]);
void fl_secagg_client_free(fl_secagg_client *c);
int fl_secagg_client_stage(const fl_secagg_client *c);

/* ADVERTISE: makes both key pairs; writes the public keys. The caller signs
 * fl_secagg_advert_message(...) with its certificate key and sends all. */
int fl_secagg_client_advertise(fl_secagg_client *c, uint8_t enc_pk[FL_SECAGG_KEY_BYTES],
                               uint8_t mask_pk[FL_SECAGG_KEY_BYTES], char err[FL_ERR_LEN]);

/* SHARE: peers are the neighbours' advertisements (every one must be a
 * neighbour of this site, at most once, with a valid signature; at least
 * threshold of them, else FL_ETHRESHOLD). A bad signature is FL_ECRYPTO
 * naming the site, and aborts this client. Writes one ciphertext per peer
 * into out (capacity n_peers), in the peers' order, peer = recipient. */
int fl_secagg_client_share(fl_secagg_client *c, fl_secagg_ct *out, const fl_secagg_peer_keys *peers,
                           size_t n_peers, char err[FL_ERR_LEN]);

/* MASK: in: the ciphertexts addressed to this site (peer = sender; each
 * sender must be a neighbour whose keys this site accepted, at most once; a
 * ciphertext that fails to decrypt aborts with FL_ECRYPTO naming the sender;
 * fewer than threshold senders is FL_ETHRESHOLD). y (d words) holds the
 * site's quantized input on entry and the masked vector on return; on error
 * it is left as it came. */
int fl_secagg_client_mask(fl_secagg_client *c, uint32_t *y, const fl_secagg_ct *in, size_t n_in,
                          char err[FL_ERR_LEN]);

/* UNMASK: survivors and dropped are the aggregator's request (site ids).
 * Every one must be a sender of MASK's input; a peer in both lists, or
 * listed twice, is refused (FL_EPROTO, "asked for both shares of site N")
 * and reveals nothing. Writes n_survivors + n_dropped reveals into out. */
int fl_secagg_client_unmask(fl_secagg_client *c, fl_secagg_reveal *out, size_t *n_out,
                            const uint32_t *survivors, size_t n_survivors, const uint32_t *dropped,
                            size_t n_dropped, char err[FL_ERR_LEN]);

/* ============================== server ================================ */

typedef struct fl_secagg_server fl_secagg_server;

/* The aggregator's state for one round; holds one d-word accumulator.
 * Caller frees with fl_secagg_server_free, which wipes. */
int fl_secagg_server_new(fl_secagg_server **out, const fl_secagg_params *p, char err[FL_ERR_LEN]);
void fl_secagg_server_free(fl_secagg_server *s);
int fl_secagg_server_stage(const fl_secagg_server *s);

/* ADVERTISE: a site's keys (the signature is kept and forwarded; peers
 * check it). A second advertisement from the same site is FL_EPROTO. */
int fl_secagg_server_advertise(fl_secagg_server *s, const fl_secagg_peer_keys *keys,
                               char err[FL_ERR_LEN]);
/* Ends ADVERTISE: U1 = the sites that advertised. FL_ETHRESHOLD (aborts)
 * when fewer than 2 did. A site with fewer than threshold neighbours in U1
 * stays in U1; it will refuse SHARE itself and so fall out of U2. */
int fl_secagg_server_close_advertise(fl_secagg_server *s, char err[FL_ERR_LEN]);
/* SHARE_KEYS task for site: its neighbours' keys among U1 (borrowed
 * pointers, valid until the server is freed), their number in *n.
 * FL_ESTATE before close_advertise, FL_EINVAL for a site not in U1. */
int fl_secagg_server_keys_for(const fl_secagg_server *s, uint32_t site,
                              const fl_secagg_peer_keys **out, size_t *n);

/* SHARE: a site's ciphertexts, one for each of its neighbours in U1 (peer =
 * recipient; exactly that set, else FL_EPROTO). */
int fl_secagg_server_shares(fl_secagg_server *s, uint32_t from, const fl_secagg_ct *cts, size_t n,
                            char err[FL_ERR_LEN]);
/* Ends SHARE: U2 = the sites that sent shares (FL_ETHRESHOLD if < 2). */
int fl_secagg_server_close_shares(fl_secagg_server *s, char err[FL_ERR_LEN]);
/* MASKED_INPUT task for site: the ciphertexts addressed to it by senders in
 * U2 (peer = sender, ascending; borrowed). FL_ESTATE before close_shares,
 * FL_EINVAL for a site not in U2. */
int fl_secagg_server_shares_for(const fl_secagg_server *s, uint32_t to, const fl_secagg_ct **out,
                                size_t *n);
/* 1 if site is in U2 (it gets a MASKED_INPUT task). */
int fl_secagg_server_in_u2(const fl_secagg_server *s, uint32_t site);

/* MASK: a site's whole masked vector (d words), added into the accumulator
 * at once; a second one from the same site, or one from outside U2, is
 * FL_EPROTO. */
int fl_secagg_server_masked(fl_secagg_server *s, uint32_t from, const uint32_t *y,
                            char err[FL_ERR_LEN]);
/* Ends MASK: U3 = the sites whose vector arrived (FL_ETHRESHOLD if < 2, or
 * at once when a secret that finish will need has fewer than threshold
 * holders left in U3, naming the site). */
int fl_secagg_server_close_masked(fl_secagg_server *s, char err[FL_ERR_LEN]);
/* 1 if site is in U3 (it gets an UNMASK task). */
int fl_secagg_server_in_u3(const fl_secagg_server *s, uint32_t site);
/* UNMASK task for site (in U3): its neighbours in U2 split into survivors
 * (in U3) and dropped (not), into caller arrays of FL_SECAGG_MAX_SITES. */
int fl_secagg_server_unmask_request(const fl_secagg_server *s, uint32_t site, uint32_t *survivors,
                                    size_t *n_survivors, uint32_t *dropped, size_t *n_dropped);

/* UNMASK: a site's reveals; each must match the request sent to it (kind
 * and peer), else FL_EPROTO and none is kept. */
int fl_secagg_server_reveal(fl_secagg_server *s, uint32_t from, const fl_secagg_reveal *r, size_t n,
                            char err[FL_ERR_LEN]);
/* Ends the round: rebuilds the secrets and unmasks. On success writes the
 * sum over U3 (d words) into sum and the survivors (U3, ascending) into
 * survivors (capacity FL_SECAGG_MAX_SITES). FL_ETHRESHOLD naming the site
 * whose secret has too few shares: the round is aborted and sum is left
 * untouched. */
int fl_secagg_server_finish(fl_secagg_server *s, uint32_t *sum, uint32_t *survivors,
                            size_t *n_survivors, char err[FL_ERR_LEN]);

/* ========================= encoding helpers =========================== */

/* Quantizes a float vector into Z_2^32 for a weighted sum: each value is
 * clamped to [-clip, clip], multiplied by weight (> 0) and by
 * scale = levels / (2 * clip), and rounded stochastically (CSPRNG draws) to
 * an integer stored in two's complement. The sum over n sites of such words,
 * read as int32, is the weighted sum times scale, with no wrap-around as long
 * as sum of weights * levels / 2 + n < 2^31: callers keep weights summing to
 * at most 1 and levels <= 2^30. */
int fl_secagg_quantize(uint32_t *out, const float *x, uint64_t d, double clip, uint32_t levels,
                       double weight, fl_csprng *rng);
/* The weighted mean from a sum of quantized words: int32(sum) / scale /
 * total_weight. */
void fl_secagg_dequantize(float *out, const uint32_t *sum, uint64_t d, double clip, uint32_t levels,
                          double total_weight);

/* Exact integer sums through Z_2^32: each int64 travels as four 16-bit limbs
 * in four words, so up to 65536 sites' limbs add without carry loss and the
 * decoder recovers the sum modulo 2^64 (the true sum when it fits int64). */
#define FL_SECAGG_I64_WORDS 4
void fl_secagg_encode_i64(uint32_t *out, const int64_t *v, size_t n);
void fl_secagg_decode_i64(int64_t *out, const uint32_t *sum, size_t n);

#endif
