/* test_secagg.c: the SecAgg+ client and server (crypto/secagg.h,
 * docs/secagg.md) driven together through whole rounds, with real
 * certificates from a throwaway PKI signing every key advertisement.
 *
 * EXACTNESS: for many seeded random dropout schedules (n in {3, 5, 10, 20},
 * complete and sparse graphs; sites dropping before advertising, after
 * advertising, after sharing, after sending a masked vector), the round
 * either gives the plain mod-2^32 sum of the surviving sites' inputs bit for
 * bit, or, exactly when an independent model of the rules says too few sites
 * or shares are left, FL_ETHRESHOLD at the predicted stage with the sum buffer
 * unchanged. On a complete graph any number of dropouts up to n - t - 1 must
 * succeed. Also: the neighbour graph (symmetric, regular, seeded, complete
 * when asked), parameter checks, a masked vector is uniform by a chi-square
 * test (and an unmasked one is not, so the test can fail), a client asked for
 * both shares of one peer refuses and reveals nothing, a bad advertisement
 * signature or a substituted key is FL_ECRYPTO naming the site, a tampered
 * share pair is FL_ECRYPTO naming the sender, out-of-stage calls are
 * FL_ESTATE and change nothing, refused server messages change nothing,
 * quantize/dequantize, and the int64 limb encoding through a real round. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/csprng.h"
#include "crypto/pki.h"
#include "crypto/secagg.h"

#define NCERT 20
#define FED "secagg-test"

#define assert_rc(rc, code, err)                                                                   \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != (code))                                                                         \
            fail_msg("%s:%d: rc %d (%s), expected %d (%s); err: %s", __FILE__, __LINE__, rc_,      \
                     fl_strerror(rc_), (code), fl_strerror(code), (err));                          \
    } while (0)

/* ================================ fixture ================================ */

static char pki_dir[1024];
static fl_signer *signers[NCERT];
static char *certs[NCERT];
static size_t cert_lens[NCERT];
static char key_paths[NCERT][1100];

static int group_setup(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    snprintf(pki_dir, sizeof pki_dir, "%s/secagg-pki", fl_test_tmpdir());
    if (fl_pki_init(pki_dir, FED, 30, err)) {
        fprintf(stderr, "pki init: %s\n", err);
        return -1;
    }
    for (int i = 0; i < NCERT; i++) {
        char name[64], path[1100];
        snprintf(name, sizeof name, "site-%d", i);
        if (fl_pki_issue(pki_dir, name, FL_ROLE_CLIENT, 10, err)) {
            fprintf(stderr, "pki issue: %s\n", err);
            return -1;
        }
        snprintf(key_paths[i], sizeof key_paths[i], "%s/%s.key", pki_dir, name);
        snprintf(path, sizeof path, "%s/%s.crt", pki_dir, name);
        certs[i] = fl_test_slurp(path, &cert_lens[i]);
        if (!certs[i] || fl_signer_new(&signers[i], key_paths[i], err)) {
            fprintf(stderr, "signer: %s\n", err);
            return -1;
        }
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    for (int i = 0; i < NCERT; i++) {
        fl_signer_free(signers[i]);
        free(certs[i]);
    }
    return 0;
}

static fl_csprng *seeded(uint64_t tag) {
    unsigned char seed[FL_CSPRNG_SEEDBYTES] = {0};
    memcpy(seed, &tag, sizeof tag);
    seed[31] = 0x5a;
    fl_csprng *r = NULL;
    assert_int_equal(fl_csprng_new_seeded(&r, seed, NULL), FL_OK);
    return r;
}

/* =============================== the harness ============================= */

enum { STAY = 0, DROP_BEFORE_ADV, DROP_AFTER_ADV, DROP_AFTER_SHARE, DROP_AFTER_MASK, N_DROP };
/* Where a round ended: the call that returned an error, or FINISHED. */
enum { AT_CLOSE_ADV = 1, AT_CLOSE_SHARES, AT_CLOSE_MASKED, AT_FINISH, FINISHED };

typedef struct round_cfg {
    uint32_t n, degree, threshold;
    uint64_t d, graph_seed, round;
    const uint32_t *ids; /* (n); participant i signs with certificate i */
    const int *drop;     /* (n) */
    uint32_t *const *x;  /* (n, d) inputs */
} round_cfg;

typedef struct round_out {
    int where; /* AT_* */
    int rc;
    char err[FL_ERR_LEN];
    uint32_t *sum; /* (d) */
    uint32_t survivors[FL_SECAGG_MAX_SITES];
    size_t n_survivors;
    uint8_t refused_share[64], refused_mask[64]; /* client-side FL_ETHRESHOLD */
} round_out;

static fl_secagg_params mkparams(const round_cfg *c) {
    fl_secagg_params p = {FED,  c->round,  c->graph_seed, c->ids,
                          c->n, c->degree, c->threshold,  c->d};
    return p;
}

/* Signs participant i's advertisement with certificate i (fl_signer: the
 * key is loaded once per site, as the client agent does). */
static void sign_advert(fl_secagg_peer_keys *k, uint8_t sig[FL_SIG_MAX], int cert, uint64_t round) {
    char err[FL_ERR_LEN] = "";
    uint8_t msg[FL_SECAGG_ADVERT_MAX];
    size_t len = fl_secagg_advert_message(msg, FED, round, k->site, k->enc_pk, k->mask_pk);
    assert_true(len > 0);
    size_t sl = 0;
    assert_rc(fl_signer_sign(signers[cert], sig, &sl, msg, len, err), FL_OK, err);
    k->sig = sig;
    k->sig_len = sl;
    k->cert_pem = certs[cert];
    k->cert_len = cert_lens[cert];
}

/* Runs one round with the drop schedule of c. o->sum must hold a sentinel
 * on entry; it is written only by a successful finish. */
static void run_round(const round_cfg *c, round_out *o, fl_csprng *rng) {
    char err[FL_ERR_LEN] = "";
    fl_secagg_params p = mkparams(c);
    fl_secagg_server *s = NULL;
    fl_secagg_client *cl[64] = {0};
    fl_secagg_ct *cts = malloc(c->n * sizeof *cts);
    fl_secagg_reveal *rev = malloc(c->n * sizeof *rev);
    uint32_t *y = malloc(c->d * sizeof *y);
    uint32_t *surv = malloc(FL_SECAGG_MAX_SITES * 4), *drp = malloc(FL_SECAGG_MAX_SITES * 4);
    static uint8_t sigs[64][FL_SIG_MAX];
    assert_true(c->n <= 64 && c->n <= NCERT);
    memset(o->refused_share, 0, sizeof o->refused_share);
    memset(o->refused_mask, 0, sizeof o->refused_mask);
    o->rc = 0;
    o->err[0] = 0;
    assert_rc(fl_secagg_server_new(&s, &p, err), FL_OK, err);
    for (uint32_t i = 0; i < c->n; i++)
        assert_rc(fl_secagg_client_new(&cl[i], &p, c->ids[i], rng, err), FL_OK, err);

    for (uint32_t i = 0; i < c->n; i++) {
        if (c->drop[i] == DROP_BEFORE_ADV) continue;
        fl_secagg_peer_keys k = {.site = c->ids[i]};
        assert_rc(fl_secagg_client_advertise(cl[i], k.enc_pk, k.mask_pk, err), FL_OK, err);
        sign_advert(&k, sigs[i], (int)i, c->round);
        assert_rc(fl_secagg_server_advertise(s, &k, err), FL_OK, err);
    }
    if ((o->rc = fl_secagg_server_close_advertise(s, o->err))) {
        o->where = AT_CLOSE_ADV;
        goto end;
    }

    for (uint32_t i = 0; i < c->n; i++) {
        if (c->drop[i] == DROP_BEFORE_ADV || c->drop[i] == DROP_AFTER_ADV) continue;
        const fl_secagg_peer_keys *keys;
        size_t nk;
        assert_rc(fl_secagg_server_keys_for(s, c->ids[i], &keys, &nk), FL_OK, "keys_for");
        int rc = fl_secagg_client_share(cl[i], cts, keys, nk, err);
        if (rc == FL_ETHRESHOLD) {
            o->refused_share[i] = 1;
            assert_int_equal(fl_secagg_client_stage(cl[i]), FL_SECAGG_ABORTED);
            continue;
        }
        assert_rc(rc, FL_OK, err);
        assert_rc(fl_secagg_server_shares(s, c->ids[i], cts, nk, err), FL_OK, err);
    }
    if ((o->rc = fl_secagg_server_close_shares(s, o->err))) {
        o->where = AT_CLOSE_SHARES;
        goto end;
    }

    for (uint32_t i = 0; i < c->n; i++) {
        if (!fl_secagg_server_in_u2(s, c->ids[i]) || c->drop[i] == DROP_AFTER_SHARE) continue;
        const fl_secagg_ct *in;
        size_t nin;
        assert_rc(fl_secagg_server_shares_for(s, c->ids[i], &in, &nin), FL_OK, "shares_for");
        memcpy(y, c->x[i], c->d * sizeof *y);
        int rc = fl_secagg_client_mask(cl[i], y, in, nin, err);
        if (rc == FL_ETHRESHOLD) {
            o->refused_mask[i] = 1;
            assert_memory_equal(y, c->x[i], c->d * sizeof *y); /* input left as it came */
            continue;
        }
        assert_rc(rc, FL_OK, err);
        assert_rc(fl_secagg_server_masked(s, c->ids[i], y, err), FL_OK, err);
    }
    if ((o->rc = fl_secagg_server_close_masked(s, o->err))) {
        o->where = AT_CLOSE_MASKED;
        goto end;
    }

    for (uint32_t i = 0; i < c->n; i++) {
        if (!fl_secagg_server_in_u3(s, c->ids[i]) || c->drop[i] == DROP_AFTER_MASK) continue;
        size_t ns, nd, nr;
        assert_rc(fl_secagg_server_unmask_request(s, c->ids[i], surv, &ns, drp, &nd), FL_OK,
                  "request");
        assert_rc(fl_secagg_client_unmask(cl[i], rev, &nr, surv, ns, drp, nd, err), FL_OK, err);
        assert_int_equal(nr, ns + nd);
        assert_int_equal(fl_secagg_client_stage(cl[i]), FL_SECAGG_DONE);
        assert_rc(fl_secagg_server_reveal(s, c->ids[i], rev, nr, err), FL_OK, err);
    }
    o->rc = fl_secagg_server_finish(s, o->sum, o->survivors, &o->n_survivors, o->err);
    o->where = o->rc ? AT_FINISH : FINISHED;
end:
    if (o->rc) {
        /* an aborted round stays aborted */
        size_t ns;
        assert_int_equal(fl_secagg_server_stage(s), FL_SECAGG_ABORTED);
        assert_rc(fl_secagg_server_finish(s, o->sum, o->survivors, &ns, err), FL_ESTATE, err);
    } else {
        assert_int_equal(fl_secagg_server_stage(s), FL_SECAGG_DONE);
    }
    for (uint32_t i = 0; i < c->n; i++)
        fl_secagg_client_free(cl[i]);
    fl_secagg_server_free(s);
    free(cts);
    free(rev);
    free(y);
    free(surv);
    free(drp);
}

/* ======================= an independent model of the rules =============== */

typedef struct model {
    int where;
    uint8_t u1[64], u2[64], u3[64], r[64], refused_share[64], refused_mask[64];
} model;

static uint32_t count_in(const uint32_t *nb, uint32_t k, const uint8_t *set) {
    uint32_t h = 0;
    for (uint32_t j = 0; j < k; j++)
        h += set[nb[j]];
    return h;
}

/* Every secret that must be rebuilt has >= t holders in set H. */
static int holders_ok(const round_cfg *c, uint32_t nb[][64], uint32_t k, const uint8_t *u2,
                      const uint8_t *u3, const uint8_t *h) {
    for (uint32_t v = 0; v < c->n; v++) {
        if (!u2[v]) continue;
        int need = u3[v] || count_in(nb[v], k, u3) > 0;
        if (need && count_in(nb[v], k, h) < c->threshold) return 0;
    }
    return 1;
}

static void predict(const round_cfg *c, model *m) {
    static uint32_t nb[64][64];
    char err[FL_ERR_LEN] = "";
    fl_secagg_params p = mkparams(c);
    uint32_t k = 0, tmp[FL_SECAGG_MAX_SITES];
    memset(m, 0, sizeof *m);
    for (uint32_t i = 0; i < c->n; i++) {
        assert_rc(fl_secagg_neighbors(tmp, &k, &p, c->ids[i], err), FL_OK, err);
        for (uint32_t j = 0; j < k; j++)
            for (uint32_t q = 0; q < c->n; q++)
                if (c->ids[q] == tmp[j]) nb[i][j] = q;
    }
    uint32_t n1 = 0, n2 = 0, n3 = 0;
    for (uint32_t i = 0; i < c->n; i++)
        n1 += m->u1[i] = c->drop[i] != DROP_BEFORE_ADV;
    if (n1 < 2) {
        m->where = AT_CLOSE_ADV;
        return;
    }
    for (uint32_t i = 0; i < c->n; i++) {
        if (!m->u1[i] || c->drop[i] == DROP_AFTER_ADV) continue;
        if (count_in(nb[i], k, m->u1) < c->threshold)
            m->refused_share[i] = 1;
        else
            n2 += m->u2[i] = 1;
    }
    if (n2 < 2) {
        m->where = AT_CLOSE_SHARES;
        return;
    }
    for (uint32_t i = 0; i < c->n; i++) {
        if (!m->u2[i] || c->drop[i] == DROP_AFTER_SHARE) continue;
        if (count_in(nb[i], k, m->u2) < c->threshold)
            m->refused_mask[i] = 1;
        else
            n3 += m->u3[i] = 1;
    }
    if (n3 < 2 || !holders_ok(c, nb, k, m->u2, m->u3, m->u3)) {
        m->where = AT_CLOSE_MASKED;
        return;
    }
    for (uint32_t i = 0; i < c->n; i++)
        m->r[i] = m->u3[i] && c->drop[i] != DROP_AFTER_MASK;
    m->where = holders_ok(c, nb, k, m->u2, m->u3, m->r) ? FINISHED : AT_FINISH;
}

/* ============================== exactness ============================== */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void random_ids(uint32_t *ids, uint32_t n, fl_csprng *r) {
    for (uint32_t i = 0; i < n; i++) {
        int dup;
        do {
            ids[i] = 1 + (uint32_t)fl_csprng_below(r, 1000000);
            dup = 0;
            for (uint32_t j = 0; j < i; j++)
                dup |= ids[j] == ids[i];
        } while (dup);
    }
}

static int n_ok, n_fail, n_fail_at[FINISHED + 1];

/* schedules seeded rounds of n sites; sparse: the degree below, else all. */
static void exactness(uint32_t n, int sparse, int schedules) {
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(1000 * n + (uint64_t)sparse);
    uint32_t ids[64];
    int drop[64];
    uint32_t *x[64];
    uint32_t configured = !sparse ? 0 : n <= 5 ? 2 : n == 10 ? 3 : 5;
    uint32_t k = fl_secagg_degree(n, configured);
    for (int sch = 0; sch < schedules; sch++) {
        random_ids(ids, n, r);
        uint32_t t = fl_secagg_threshold(k, sch % 3 == 0 ? 0.7 : 0.5);
        uint64_t d = 1 + fl_csprng_below(r, 2500);
        /* even schedules stay within what the graph tolerates (on a
         * complete graph, n - t - 1 dropouts of any kind); odd ones drop
         * anything up to every site */
        uint32_t tol = !sparse || k == n - 1 ? n - t - 1 : 1 + n / 5;
        uint32_t m = (uint32_t)fl_csprng_below(r, (sch % 2 == 0 ? tol : n) + 1);
        for (uint32_t i = 0; i < n; i++)
            drop[i] = STAY;
        for (uint32_t j = 0; j < m;) {
            uint32_t i = (uint32_t)fl_csprng_below(r, n);
            if (drop[i] != STAY) continue;
            drop[i] = 1 + (int)fl_csprng_below(r, N_DROP - 1);
            j++;
        }
        for (uint32_t i = 0; i < n; i++) {
            x[i] = malloc(d * sizeof *x[i]);
            fl_csprng_bytes(r, x[i], d * sizeof *x[i]);
        }
        round_cfg c = {n, configured, t, d, fl_csprng_u64(r), 1 + (uint64_t)sch, ids, drop, x};
        round_out o;
        o.sum = malloc(d * sizeof *o.sum);
        memset(o.sum, 0xa5, d * sizeof *o.sum);
        run_round(&c, &o, r);
        model mo;
        predict(&c, &mo);
        if (o.where != mo.where)
            fail_msg("n=%u k=%u t=%u schedule %d: round ended at %d, model says %d (%s)", n, k, t,
                     sch, o.where, mo.where, o.err);
        assert_memory_equal(o.refused_share, mo.refused_share, n);
        if (mo.where != AT_CLOSE_ADV && mo.where != AT_CLOSE_SHARES)
            assert_memory_equal(o.refused_mask, mo.refused_mask, n);
        if (o.where == FINISHED) {
            n_ok++;
            uint32_t *want = calloc(d, sizeof *want), surv[64];
            size_t ns = 0;
            for (uint32_t i = 0; i < n; i++) {
                if (!mo.u3[i]) continue;
                surv[ns++] = ids[i];
                for (uint64_t w = 0; w < d; w++)
                    want[w] += x[i][w];
            }
            qsort(surv, ns, sizeof *surv, cmp_u32);
            assert_int_equal(o.n_survivors, ns);
            assert_memory_equal(o.survivors, surv, ns * sizeof *surv);
            if (memcmp(o.sum, want, d * sizeof *want))
                fail_msg("n=%u k=%u t=%u schedule %d: the unmasked sum differs from the plain sum",
                         n, k, t, sch);
            free(want);
        } else {
            n_fail++;
            n_fail_at[o.where]++;
            assert_rc(o.rc, FL_ETHRESHOLD, o.err);
            uint32_t *sent = malloc(d * sizeof *sent);
            memset(sent, 0xa5, d * sizeof *sent);
            assert_memory_equal(o.sum, sent, d * sizeof *sent); /* untouched */
            free(sent);
            if (sch % 2 == 0 && (!sparse || k == n - 1))
                fail_msg("n=%u t=%u: %u dropouts on a complete graph must be tolerated: %s", n, t,
                         m, o.err);
        }
        for (uint32_t i = 0; i < n; i++)
            free(x[i]);
        free(o.sum);
    }
    (void)err;
    fl_csprng_free(r);
}

static void test_exactness_3(void **state) {
    (void)state;
    exactness(3, 0, 40);
}
static void test_exactness_5(void **state) {
    (void)state;
    exactness(5, 0, 40);
    exactness(5, 1, 40);
}
static void test_exactness_10(void **state) {
    (void)state;
    exactness(10, 0, 30);
    exactness(10, 1, 40);
}
static void test_exactness_20(void **state) {
    (void)state;
    exactness(20, 0, 20);
    exactness(20, 1, 30);
}

static void test_exactness_outcomes(void **state) {
    (void)state;
    print_message("exactness: %d rounds exact, %d below threshold (close_advertise %d, "
                  "close_shares %d, close_masked %d, finish %d)\n",
                  n_ok, n_fail, n_fail_at[AT_CLOSE_ADV], n_fail_at[AT_CLOSE_SHARES],
                  n_fail_at[AT_CLOSE_MASKED], n_fail_at[AT_FINISH]);
    assert_true(n_ok > 100);
    assert_true(n_fail_at[AT_CLOSE_MASKED] > 0 && n_fail_at[AT_FINISH] > 0);
}

/* ====================== a world for targeted tests ======================= */

typedef struct world {
    uint32_t n, ids[NCERT];
    fl_secagg_params p;
    fl_secagg_server *s;
    fl_secagg_client *cl[NCERT];
    fl_csprng *rng;
    fl_secagg_peer_keys adv[NCERT];
    uint8_t sigs[NCERT][FL_SIG_MAX];
} world;

static void world_new(world *w, uint32_t n, uint32_t degree, uint32_t t, uint64_t d) {
    char err[FL_ERR_LEN] = "";
    memset(w, 0, sizeof *w);
    w->n = n;
    for (uint32_t i = 0; i < n; i++)
        w->ids[i] = 100 + 13 * (n - i); /* given in descending order */
    w->rng = seeded(77 + n);
    fl_secagg_params p = {FED, 9, 1234, w->ids, n, degree, t, d};
    w->p = p;
    assert_rc(fl_secagg_server_new(&w->s, &w->p, err), FL_OK, err);
    for (uint32_t i = 0; i < n; i++)
        assert_rc(fl_secagg_client_new(&w->cl[i], &w->p, w->ids[i], w->rng, err), FL_OK, err);
}

/* Every site advertises (signed with fl_sign and its key file), then close. */
static void world_advertise(world *w) {
    char err[FL_ERR_LEN] = "";
    for (uint32_t i = 0; i < w->n; i++) {
        fl_secagg_peer_keys *k = &w->adv[i];
        uint8_t msg[FL_SECAGG_ADVERT_MAX];
        k->site = w->ids[i];
        assert_rc(fl_secagg_client_advertise(w->cl[i], k->enc_pk, k->mask_pk, err), FL_OK, err);
        size_t len = fl_secagg_advert_message(msg, FED, w->p.round, k->site, k->enc_pk, k->mask_pk);
        assert_rc(fl_sign(w->sigs[i], &k->sig_len, msg, len, key_paths[i], err), FL_OK, err);
        k->sig = w->sigs[i];
        k->cert_pem = certs[i];
        k->cert_len = cert_lens[i];
        assert_rc(fl_secagg_server_advertise(w->s, k, err), FL_OK, err);
    }
    assert_rc(fl_secagg_server_close_advertise(w->s, err), FL_OK, err);
}

static void world_share(world *w, uint32_t skip) {
    char err[FL_ERR_LEN] = "";
    fl_secagg_ct cts[NCERT];
    for (uint32_t i = 0; i < w->n; i++) {
        if (i == skip) continue;
        const fl_secagg_peer_keys *keys;
        size_t nk;
        assert_rc(fl_secagg_server_keys_for(w->s, w->ids[i], &keys, &nk), FL_OK, "keys_for");
        assert_rc(fl_secagg_client_share(w->cl[i], cts, keys, nk, err), FL_OK, err);
        assert_rc(fl_secagg_server_shares(w->s, w->ids[i], cts, nk, err), FL_OK, err);
    }
    assert_rc(fl_secagg_server_close_shares(w->s, err), FL_OK, err);
}

static void world_free(world *w) {
    for (uint32_t i = 0; i < w->n; i++)
        fl_secagg_client_free(w->cl[i]);
    fl_secagg_server_free(w->s);
    fl_csprng_free(w->rng);
}

/* ============================ graph and params =========================== */

static void test_degree_threshold(void **state) {
    (void)state;
    assert_int_equal(fl_secagg_degree(10, 0), 9);
    assert_int_equal(fl_secagg_degree(10, 12), 9);
    assert_int_equal(fl_secagg_degree(10, 3), 3);
    assert_int_equal(fl_secagg_degree(11, 3), 4); /* odd degree, odd n: raised */
    assert_int_equal(fl_secagg_degree(11, 4), 4);
    assert_int_equal(fl_secagg_degree(2, 1), 1);
    assert_int_equal(fl_secagg_degree(1, 0), 0);
    assert_int_equal(fl_secagg_threshold(10, 0.5), 6); /* over one half */
    assert_int_equal(fl_secagg_threshold(10, 0.1), 6);
    assert_int_equal(fl_secagg_threshold(10, 0.6), 6);
    assert_int_equal(fl_secagg_threshold(10, 0.67), 7);
    assert_int_equal(fl_secagg_threshold(10, 1.0), 10);
    assert_int_equal(fl_secagg_threshold(10, 3.0), 10);
    assert_int_equal(fl_secagg_threshold(1, 0.5), 1);
    assert_int_equal(fl_secagg_threshold(2, 0.5), 2);
    assert_int_equal(fl_secagg_threshold(3, 0.5), 2);
    assert_int_equal(fl_secagg_threshold(7, 0.51), 4);
}

/* Regular, symmetric, without self-loops, ascending, and the same whatever
 * the order of ids; complete for degree 0; different seeds or rounds give
 * different graphs. */
static void test_graph(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    fl_csprng *r = seeded(3);
    static uint32_t nb[64][FL_SECAGG_MAX_SITES];
    uint32_t ids[64], rev[64], cnt[64], tmp[FL_SECAGG_MAX_SITES], m;
    for (uint32_t n = 2; n <= 40; n++) {
        random_ids(ids, n, r);
        for (uint32_t i = 0; i < n; i++)
            rev[i] = ids[n - 1 - i];
        const uint32_t cfgs[] = {0, 1, 2, 3, 4, 5, 6, n - 1, n + 5};
        for (size_t ci = 0; ci < sizeof cfgs / sizeof *cfgs; ci++) {
            uint32_t k = fl_secagg_degree(n, cfgs[ci]);
            fl_secagg_params p = {FED, 3, 99, ids, n, cfgs[ci], 1, 10};
            fl_secagg_params pr = p;
            pr.ids = rev;
            for (uint32_t i = 0; i < n; i++) {
                assert_rc(fl_secagg_neighbors(nb[i], &cnt[i], &p, ids[i], err), FL_OK, err);
                assert_int_equal(cnt[i], k);
                assert_rc(fl_secagg_neighbors(tmp, &m, &pr, ids[i], err), FL_OK, err);
                assert_int_equal(m, k);
                assert_memory_equal(tmp, nb[i], k * sizeof *tmp);
                for (uint32_t j = 0; j < k; j++) {
                    assert_int_not_equal(nb[i][j], ids[i]);
                    if (j) assert_true(nb[i][j - 1] < nb[i][j]);
                }
            }
            for (uint32_t i = 0; i < n; i++)
                for (uint32_t j = 0; j < k; j++) {
                    uint32_t v = 0, found = 0;
                    while (ids[v] != nb[i][j])
                        v++;
                    for (uint32_t q = 0; q < k; q++)
                        found |= nb[v][q] == ids[i];
                    assert_true(found);
                }
        }
    }
    /* seeds and rounds matter */
    random_ids(ids, 30, r);
    fl_secagg_params a = {FED, 3, 99, ids, 30, 4, 1, 10}, b = a, c = a;
    b.graph_seed = 100;
    c.round = 4;
    uint32_t na[FL_SECAGG_MAX_SITES], nbb[FL_SECAGG_MAX_SITES], nc[FL_SECAGG_MAX_SITES];
    int diff_b = 0, diff_c = 0;
    for (uint32_t i = 0; i < 30; i++) {
        assert_rc(fl_secagg_neighbors(na, &m, &a, ids[i], err), FL_OK, err);
        assert_rc(fl_secagg_neighbors(nbb, &m, &b, ids[i], err), FL_OK, err);
        assert_rc(fl_secagg_neighbors(nc, &m, &c, ids[i], err), FL_OK, err);
        diff_b |= memcmp(na, nbb, 4 * sizeof *na) != 0;
        diff_c |= memcmp(na, nc, 4 * sizeof *na) != 0;
    }
    assert_true(diff_b && diff_c);
    assert_rc(fl_secagg_neighbors(na, &m, &a, 1000001, err), FL_EINVAL, err);
    assert_non_null(strstr(err, "1000001"));
    fl_csprng_free(r);
}

static void test_params_invalid(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    uint32_t ids[4] = {5, 6, 7, 8}, dup[4] = {5, 6, 5, 8}, zero[4] = {5, 0, 7, 8}, m, out[1024];
    fl_secagg_server *s = NULL;
    fl_secagg_client *c = NULL;
    fl_secagg_params ok = {FED, 1, 2, ids, 4, 0, 2, 100}, p;
    char longfed[200];
    memset(longfed, 'f', sizeof longfed - 1);
    longfed[sizeof longfed - 1] = 0;
    struct {
        const char *what;
        fl_secagg_params p;
        const char *msg;
    } cases[] = {
        {"one site", {FED, 1, 2, ids, 1, 0, 1, 100}, "n = 1"},
        {"too many", {FED, 1, 2, ids, FL_SECAGG_MAX_SITES + 1, 0, 1, 100}, "participants"},
        {"duplicate", {FED, 1, 2, dup, 4, 0, 2, 100}, "5 listed twice"},
        {"zero id", {FED, 1, 2, zero, 4, 0, 2, 100}, "ids must be > 0"},
        {"threshold 0", {FED, 1, 2, ids, 4, 0, 0, 100}, "threshold 0"},
        {"threshold > degree", {FED, 1, 2, ids, 4, 2, 3, 100}, "threshold 3 with degree 2"},
        {"d = 0", {FED, 1, 2, ids, 4, 0, 2, 0}, "d = 0"},
        {"no federation", {NULL, 1, 2, ids, 4, 0, 2, 100}, "federation_id"},
        {"long federation", {longfed, 1, 2, ids, 4, 0, 2, 100}, "federation_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        p = cases[i].p;
        err[0] = 0;
        assert_rc(fl_secagg_server_new(&s, &p, err), FL_EINVAL, err);
        assert_null(s);
        if (!strstr(err, cases[i].msg))
            fail_msg("%s: '%s' lacks '%s'", cases[i].what, err, cases[i].msg);
        assert_rc(fl_secagg_client_new(&c, &p, 5, NULL, err), FL_EINVAL, err);
        assert_null(c);
        assert_rc(fl_secagg_neighbors(out, &m, &p, 5, err), FL_EINVAL, err);
    }
    assert_rc(fl_secagg_client_new(&c, &ok, 9, NULL, err), FL_EINVAL, err);
    assert_non_null(strstr(err, "site 9 is not a participant"));
    assert_rc(fl_secagg_server_new(&s, NULL, err), FL_EINVAL, err);
    /* the advertisement message refuses what it cannot encode */
    uint8_t msg[FL_SECAGG_ADVERT_MAX], k[32] = {0};
    assert_int_equal(fl_secagg_advert_message(msg, longfed, 1, 5, k, k), 0);
    assert_int_equal(fl_secagg_advert_message(msg, NULL, 1, 5, k, k), 0);
    assert_true(fl_secagg_advert_message(msg, FED, 1, 5, k, k) > 64);
    fl_secagg_client_free(NULL);
    fl_secagg_server_free(NULL);
    assert_string_equal(fl_secagg_stage_name(FL_SECAGG_UNMASK), "unmask");
}

/* ============================== privacy =============================== */

/* Chi-square critical values at a 1e-6 tail either side (Wilson-Hilferty,
 * z = 4.753), as in test_dgauss.c: a fixed seed makes the test
 * deterministic, the tail makes an honest mask pass at any seed. */
static double chi2_at(int df, double z) {
    double a = 2.0 / (9.0 * df), c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}

static double chi2_top_byte(const uint32_t *y, uint64_t d) {
    double cnt[256] = {0}, e = (double)d / 256, x2 = 0;
    for (uint64_t i = 0; i < d; i++)
        cnt[y[i] >> 24]++;
    for (int b = 0; b < 256; b++)
        x2 += (cnt[b] - e) * (cnt[b] - e) / e;
    return x2;
}

/* A site's masked vector is uniform over Z_2^32 even for an all-zero input;
 * the same input unmasked fails the same test. */
static void test_masked_is_uniform(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    const uint64_t d = 1 << 16;
    world w;
    world_new(&w, 3, 0, 2, d);
    world_advertise(&w);
    world_share(&w, UINT32_MAX);
    uint32_t *y = calloc(d, sizeof *y);
    double lo = chi2_at(255, -4.753), hi = chi2_at(255, 4.753);
    double x0 = chi2_top_byte(y, d);
    assert_true(x0 > hi); /* zeros: every word in bucket 0 */
    const fl_secagg_ct *in;
    size_t nin;
    assert_rc(fl_secagg_server_shares_for(w.s, w.ids[0], &in, &nin), FL_OK, "shares_for");
    assert_rc(fl_secagg_client_mask(w.cl[0], y, in, nin, err), FL_OK, err);
    double x1 = chi2_top_byte(y, d);
    print_message("chi-square (255 df): masked zeros %.1f, bounds [%.1f, %.1f]; unmasked %.0f\n",
                  x1, lo, hi, x0);
    assert_true(x1 > lo && x1 < hi);
    /* a structured input (a ramp) is hidden as well */
    for (uint64_t i = 0; i < d; i++)
        y[i] = (uint32_t)i << 8;
    assert_true(chi2_top_byte(y, d) > hi);
    assert_rc(fl_secagg_server_shares_for(w.s, w.ids[1], &in, &nin), FL_OK, "shares_for");
    assert_rc(fl_secagg_client_mask(w.cl[1], y, in, nin, err), FL_OK, err);
    x1 = chi2_top_byte(y, d);
    assert_true(x1 > lo && x1 < hi);
    free(y);
    world_free(&w);
}

/* A request naming one peer as survivor and as dropped is refused, reveals
 * nothing (output untouched, *n_out = 0) and ends the client; so is a peer
 * listed twice and one that sent no shares. A well-formed request works. */
static void test_unmask_refusals(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    const uint64_t d = 50;
    world w;
    world_new(&w, 5, 0, 2, d);
    world_advertise(&w);
    world_share(&w, UINT32_MAX);
    uint32_t y[50] = {0};
    for (uint32_t i = 0; i < w.n; i++) {
        const fl_secagg_ct *in;
        size_t nin;
        assert_rc(fl_secagg_server_shares_for(w.s, w.ids[i], &in, &nin), FL_OK, "shares_for");
        assert_rc(fl_secagg_client_mask(w.cl[i], y, in, nin, err), FL_OK, err);
        if (i < 3) assert_rc(fl_secagg_server_masked(w.s, w.ids[i], y, err), FL_OK, err);
    }
    assert_rc(fl_secagg_server_close_masked(w.s, err), FL_OK, err);
    uint32_t surv[FL_SECAGG_MAX_SITES], drp[FL_SECAGG_MAX_SITES];
    size_t ns, nd, nr = 99;
    fl_secagg_reveal out[8], sentinel[8];
    memset(sentinel, 0xee, sizeof sentinel);

    /* site 0: survivors {1, 2}, dropped {3, 4}; ask for site 1 both ways */
    assert_rc(fl_secagg_server_unmask_request(w.s, w.ids[0], surv, &ns, drp, &nd), FL_OK, "req");
    assert_int_equal(ns, 2);
    assert_int_equal(nd, 2);
    drp[nd] = surv[0];
    memcpy(out, sentinel, sizeof out);
    assert_rc(fl_secagg_client_unmask(w.cl[0], out, &nr, surv, ns, drp, nd + 1, err), FL_EPROTO,
              err);
    char want[128];
    snprintf(want, sizeof want, "asked for both shares of site %u", surv[0]);
    if (!strstr(err, want)) fail_msg("'%s' lacks '%s'", err, want);
    assert_int_equal(nr, 0);
    assert_memory_equal(out, sentinel, sizeof out);
    assert_int_equal(fl_secagg_client_stage(w.cl[0]), FL_SECAGG_ABORTED);
    /* and it stays refused: the secrets are gone */
    assert_rc(fl_secagg_client_unmask(w.cl[0], out, &nr, surv, ns, drp, nd, err), FL_ESTATE, err);
    assert_memory_equal(out, sentinel, sizeof out);

    /* the same order reversed: dropped first named, then as survivor */
    assert_rc(fl_secagg_server_unmask_request(w.s, w.ids[1], surv, &ns, drp, &nd), FL_OK, "req");
    surv[ns] = drp[0];
    assert_rc(fl_secagg_client_unmask(w.cl[1], out, &nr, surv, ns + 1, drp, nd, err), FL_EPROTO,
              err);
    assert_non_null(strstr(err, "asked for both shares"));
    assert_memory_equal(out, sentinel, sizeof out);

    /* listed twice */
    assert_rc(fl_secagg_server_unmask_request(w.s, w.ids[2], surv, &ns, drp, &nd), FL_OK, "req");
    surv[ns] = surv[0];
    assert_rc(fl_secagg_client_unmask(w.cl[2], out, &nr, surv, ns + 1, drp, nd, err), FL_EPROTO,
              err);
    assert_non_null(strstr(err, "twice"));
    assert_memory_equal(out, sentinel, sizeof out);

    /* itself, or a stranger: not a sender */
    uint32_t self = w.ids[3], stranger = 4242;
    assert_rc(fl_secagg_client_unmask(w.cl[3], out, &nr, &self, 1, NULL, 0, err), FL_EPROTO, err);
    assert_non_null(strstr(err, "sent it no shares"));
    assert_rc(fl_secagg_client_unmask(w.cl[4], out, &nr, NULL, 0, &stranger, 1, err), FL_EPROTO,
              err);
    assert_memory_equal(out, sentinel, sizeof out);
    world_free(&w);
}

/* A flipped signature byte, a substituted key, or another site's
 * certificate: FL_ECRYPTO naming the site, the client aborted, no ciphertext
 * written. */
static void test_bad_signature(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    world w;
    world_new(&w, 4, 0, 2, 10);
    world_advertise(&w);
    const fl_secagg_peer_keys *keys;
    size_t nk;
    fl_secagg_peer_keys bad[NCERT];
    uint8_t sig[FL_SIG_MAX];
    fl_secagg_ct cts[NCERT], zero[NCERT];
    memset(zero, 0, sizeof zero);
    char want[64];

    /* site 0: flip one byte of the second peer's signature */
    assert_rc(fl_secagg_server_keys_for(w.s, w.ids[0], &keys, &nk), FL_OK, "keys_for");
    assert_int_equal(nk, 3);
    memcpy(bad, keys, nk * sizeof *bad);
    memcpy(sig, bad[1].sig, bad[1].sig_len);
    sig[bad[1].sig_len / 2] ^= 0x01;
    bad[1].sig = sig;
    memset(cts, 0x11, sizeof cts);
    assert_rc(fl_secagg_client_share(w.cl[0], cts, bad, nk, err), FL_ECRYPTO, err);
    snprintf(want, sizeof want, "of site %u has a bad signature", bad[1].site);
    if (!strstr(err, want)) fail_msg("'%s' lacks '%s'", err, want);
    assert_int_equal(fl_secagg_client_stage(w.cl[0]), FL_SECAGG_ABORTED);
    assert_memory_equal(cts, zero, nk * sizeof *cts);
    assert_rc(fl_secagg_client_share(w.cl[0], cts, keys, nk, err), FL_ESTATE, err);

    /* site 1: the aggregator substitutes a mask key */
    assert_rc(fl_secagg_server_keys_for(w.s, w.ids[1], &keys, &nk), FL_OK, "keys_for");
    memcpy(bad, keys, nk * sizeof *bad);
    bad[2].mask_pk[0] ^= 0x80;
    assert_rc(fl_secagg_client_share(w.cl[1], cts, bad, nk, err), FL_ECRYPTO, err);
    snprintf(want, sizeof want, "site %u", bad[2].site);
    assert_non_null(strstr(err, want));

    /* site 2: a peer's keys presented with another site's certificate */
    assert_rc(fl_secagg_server_keys_for(w.s, w.ids[2], &keys, &nk), FL_OK, "keys_for");
    memcpy(bad, keys, nk * sizeof *bad);
    bad[0].cert_pem = certs[NCERT - 1];
    bad[0].cert_len = cert_lens[NCERT - 1];
    assert_rc(fl_secagg_client_share(w.cl[2], cts, bad, nk, err), FL_ECRYPTO, err);

    /* site 3 with the genuine keys is fine */
    assert_rc(fl_secagg_server_keys_for(w.s, w.ids[3], &keys, &nk), FL_OK, "keys_for");
    assert_rc(fl_secagg_client_share(w.cl[3], cts, keys, nk, err), FL_OK, err);
    /* keys from a non-neighbour or twice are refused too */
    world_free(&w);

    world_new(&w, 6, 2, 2, 10);
    world_advertise(&w);
    assert_rc(fl_secagg_server_keys_for(w.s, w.ids[0], &keys, &nk), FL_OK, "keys_for");
    assert_int_equal(nk, 2);
    memcpy(bad, keys, nk * sizeof *bad);
    bad[2] = bad[1];
    assert_rc(fl_secagg_client_share(w.cl[0], cts, bad, 3, err), FL_EPROTO, err);
    assert_non_null(strstr(err, "twice"));
    uint32_t nbr[FL_SECAGG_MAX_SITES], m;
    assert_rc(fl_secagg_neighbors(nbr, &m, &w.p, w.ids[1], err), FL_OK, err);
    for (uint32_t i = 0; i < w.n; i++) {
        int is_nbr = w.ids[i] == w.ids[1];
        for (uint32_t j = 0; j < m; j++)
            is_nbr |= nbr[j] == w.ids[i];
        if (is_nbr) continue;
        bad[0] = w.adv[i]; /* validly signed, but not a neighbour of site 1 */
        assert_rc(fl_secagg_client_share(w.cl[1], cts, bad, 1, err), FL_EPROTO, err);
        assert_non_null(strstr(err, "not a neighbour"));
        break;
    }
    world_free(&w);
}

/* A tampered share pair is FL_ECRYPTO naming its sender; y is untouched. */
static void test_tampered_share_pair(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    world w;
    world_new(&w, 4, 0, 2, 64);
    world_advertise(&w);
    world_share(&w, UINT32_MAX);
    const fl_secagg_ct *in;
    size_t nin;
    fl_secagg_ct bad[NCERT];
    uint32_t y[64], y0[64];
    for (int i = 0; i < 64; i++)
        y[i] = y0[i] = (uint32_t)i * 77u;
    assert_rc(fl_secagg_server_shares_for(w.s, w.ids[0], &in, &nin), FL_OK, "shares_for");
    memcpy(bad, in, nin * sizeof *bad);
    bad[1].ct[40] ^= 0x04;
    assert_rc(fl_secagg_client_mask(w.cl[0], y, bad, nin, err), FL_ECRYPTO, err);
    char want[64];
    snprintf(want, sizeof want, "from site %u does not decrypt", bad[1].peer);
    if (!strstr(err, want)) fail_msg("'%s' lacks '%s'", err, want);
    assert_memory_equal(y, y0, sizeof y);
    /* a pair relabelled as coming from another sender fails too (AD) */
    assert_rc(fl_secagg_server_shares_for(w.s, w.ids[1], &in, &nin), FL_OK, "shares_for");
    memcpy(bad, in, nin * sizeof *bad);
    uint32_t tmp = bad[0].peer;
    bad[0].peer = bad[1].peer;
    bad[1].peer = tmp;
    assert_rc(fl_secagg_client_mask(w.cl[1], y, bad, nin, err), FL_ECRYPTO, err);
    /* fewer pairs than the threshold: FL_ETHRESHOLD */
    assert_rc(fl_secagg_server_shares_for(w.s, w.ids[2], &in, &nin), FL_OK, "shares_for");
    assert_rc(fl_secagg_client_mask(w.cl[2], y, in, 1, err), FL_ETHRESHOLD, err);
    assert_memory_equal(y, y0, sizeof y);
    world_free(&w);
}

/* ============================ stages and refusals ======================== */

/* Calls out of order are FL_ESTATE and change nothing. */
static void test_out_of_stage(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    world w;
    world_new(&w, 3, 0, 2, 8);
    fl_secagg_client *c = w.cl[0];
    fl_secagg_server *s = w.s;
    uint8_t e[32], m[32];
    uint32_t y[8] = {0}, sum[8], surv[FL_SECAGG_MAX_SITES], drp[FL_SECAGG_MAX_SITES];
    size_t n, nd;
    fl_secagg_ct ct[4];
    fl_secagg_reveal rv[4];
    const fl_secagg_peer_keys *keys;
    const fl_secagg_ct *in;

    assert_rc(fl_secagg_client_share(c, ct, NULL, 0, err), FL_ESTATE, err);
    assert_non_null(strstr(err, "share called in stage advertise"));
    assert_rc(fl_secagg_client_mask(c, y, NULL, 0, err), FL_ESTATE, err);
    assert_rc(fl_secagg_client_unmask(c, rv, &n, NULL, 0, NULL, 0, err), FL_ESTATE, err);
    assert_int_equal(fl_secagg_client_stage(c), FL_SECAGG_ADVERTISE);

    assert_rc(fl_secagg_server_close_shares(s, err), FL_ESTATE, err);
    assert_rc(fl_secagg_server_close_masked(s, err), FL_ESTATE, err);
    assert_rc(fl_secagg_server_shares(s, w.ids[0], ct, 0, err), FL_ESTATE, err);
    assert_rc(fl_secagg_server_masked(s, w.ids[0], y, err), FL_ESTATE, err);
    assert_rc(fl_secagg_server_reveal(s, w.ids[0], rv, 0, err), FL_ESTATE, err);
    assert_rc(fl_secagg_server_finish(s, sum, surv, &n, err), FL_ESTATE, err);
    assert_int_equal(fl_secagg_server_keys_for(s, w.ids[0], &keys, &n), FL_ESTATE);
    assert_int_equal(fl_secagg_server_shares_for(s, w.ids[0], &in, &n), FL_ESTATE);
    assert_int_equal(fl_secagg_server_unmask_request(s, w.ids[0], surv, &n, drp, &nd), FL_ESTATE);
    assert_false(fl_secagg_server_in_u2(s, w.ids[0]));
    assert_false(fl_secagg_server_in_u3(s, w.ids[0]));
    assert_int_equal(fl_secagg_server_stage(s), FL_SECAGG_ADVERTISE);

    world_advertise(&w);
    assert_rc(fl_secagg_client_advertise(c, e, m, err), FL_ESTATE, err); /* twice */
    assert_int_equal(fl_secagg_client_stage(c), FL_SECAGG_SHARE);
    assert_rc(fl_secagg_server_advertise(s, &w.adv[0], err), FL_ESTATE, err);
    assert_rc(fl_secagg_server_close_advertise(s, err), FL_ESTATE, err);
    assert_int_equal(fl_secagg_server_stage(s), FL_SECAGG_SHARE);

    /* the round still completes */
    world_share(&w, UINT32_MAX);
    assert_rc(fl_secagg_client_share(c, ct, NULL, 0, err), FL_ESTATE, err);
    uint32_t x[3][8], want[8] = {0};
    for (uint32_t i = 0; i < 3; i++) {
        for (int j = 0; j < 8; j++)
            want[j] += x[i][j] = 1000u * i + (uint32_t)j;
        memcpy(y, x[i], sizeof y);
        assert_rc(fl_secagg_server_shares_for(s, w.ids[i], &in, &n), FL_OK, "shares_for");
        assert_rc(fl_secagg_client_mask(w.cl[i], y, in, n, err), FL_OK, err);
        assert_rc(fl_secagg_server_masked(s, w.ids[i], y, err), FL_OK, err);
    }
    assert_rc(fl_secagg_server_close_masked(s, err), FL_OK, err);
    for (uint32_t i = 0; i < 3; i++) {
        size_t nr;
        assert_rc(fl_secagg_server_unmask_request(s, w.ids[i], surv, &n, drp, &nd), FL_OK, "req");
        assert_rc(fl_secagg_client_unmask(w.cl[i], rv, &nr, surv, n, drp, nd, err), FL_OK, err);
        assert_rc(fl_secagg_server_reveal(s, w.ids[i], rv, nr, err), FL_OK, err);
    }
    assert_rc(fl_secagg_server_finish(s, sum, surv, &n, err), FL_OK, err);
    assert_memory_equal(sum, want, sizeof want);
    assert_rc(fl_secagg_server_finish(s, sum, surv, &n, err), FL_ESTATE, err);
    assert_int_equal(fl_secagg_server_stage(s), FL_SECAGG_DONE);
    world_free(&w);
}

/* A refused message changes nothing: the site can send a correct one, and
 * the round still gives the exact sum. */
static void test_server_refusals(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    const uint64_t d = 16;
    world w;
    world_new(&w, 4, 0, 2, d);
    fl_secagg_server *s = w.s;
    world_advertise(&w);
    {
        /* advertise: a duplicate, a stranger, a missing signature; then one
         * site alone cannot make a round */
        world v;
        world_new(&v, 3, 0, 2, 4);
        fl_secagg_peer_keys k = {.site = v.ids[0]};
        uint8_t sig[FL_SIG_MAX] = {1};
        assert_rc(fl_secagg_client_advertise(v.cl[0], k.enc_pk, k.mask_pk, err), FL_OK, err);
        k.sig = sig;
        k.sig_len = 70;
        assert_rc(fl_secagg_server_advertise(v.s, &k, err), FL_EPROTO, err); /* no certificate */
        k.cert_pem = certs[0];
        k.cert_len = cert_lens[0];
        assert_rc(fl_secagg_server_advertise(v.s, &k, err), FL_OK, err);
        assert_rc(fl_secagg_server_advertise(v.s, &k, err), FL_EPROTO, err);
        assert_non_null(strstr(err, "advertised twice"));
        k.site = 4242;
        assert_rc(fl_secagg_server_advertise(v.s, &k, err), FL_EPROTO, err);
        assert_non_null(strstr(err, "not a participant"));
        assert_rc(fl_secagg_server_close_advertise(v.s, err), FL_ETHRESHOLD, err);
        assert_non_null(strstr(err, "1 site(s) advertised"));
        assert_int_equal(fl_secagg_server_stage(v.s), FL_SECAGG_ABORTED);
        assert_rc(fl_secagg_server_close_shares(v.s, err), FL_ESTATE, err);
        world_free(&v);
    }
    fl_secagg_ct cts[NCERT];
    const fl_secagg_peer_keys *keys;
    size_t nk;
    /* site 3 never shares: it dropped after advertising */
    for (uint32_t i = 0; i < 3; i++) {
        assert_rc(fl_secagg_server_keys_for(s, w.ids[i], &keys, &nk), FL_OK, "keys_for");
        assert_int_equal(nk, 3);
        assert_rc(fl_secagg_client_share(w.cl[i], cts, keys, nk, err), FL_OK, err);
        assert_rc(fl_secagg_server_shares(s, w.ids[i], cts, nk - 1, err), FL_EPROTO, err);
        assert_non_null(strstr(err, "expected 3"));
        fl_secagg_ct one = cts[0];
        cts[0].peer = w.ids[i]; /* to itself */
        assert_rc(fl_secagg_server_shares(s, w.ids[i], cts, nk, err), FL_EPROTO, err);
        cts[0] = cts[1]; /* twice to the same site */
        assert_rc(fl_secagg_server_shares(s, w.ids[i], cts, nk, err), FL_EPROTO, err);
        cts[0] = one;
        assert_rc(fl_secagg_server_shares(s, w.ids[i], cts, nk, err), FL_OK, err);
        assert_rc(fl_secagg_server_shares(s, w.ids[i], cts, nk, err), FL_EPROTO, err);
        assert_non_null(strstr(err, "twice"));
    }
    assert_rc(fl_secagg_server_shares(s, 4242, cts, 3, err), FL_EPROTO, err);
    assert_non_null(strstr(err, "not a participant"));
    assert_rc(fl_secagg_server_close_shares(s, err), FL_OK, err);
    assert_false(fl_secagg_server_in_u2(s, w.ids[3]));
    const fl_secagg_ct *in;
    size_t nin;
    assert_int_equal(fl_secagg_server_shares_for(s, w.ids[3], &in, &nin), FL_EINVAL);

    uint32_t x[3][16], y[16], want[16] = {0};
    for (uint32_t i = 0; i < 3; i++) {
        for (uint64_t j = 0; j < d; j++)
            want[j] += x[i][j] = (uint32_t)(0x9e3779b9u * (i + 1) * (j + 3));
        memcpy(y, x[i], sizeof y);
        assert_rc(fl_secagg_server_shares_for(s, w.ids[i], &in, &nin), FL_OK, "shares_for");
        assert_int_equal(nin, 2);
        assert_rc(fl_secagg_client_mask(w.cl[i], y, in, nin, err), FL_OK, err);
        assert_rc(fl_secagg_server_masked(s, w.ids[i], y, err), FL_OK, err);
        assert_rc(fl_secagg_server_masked(s, w.ids[i], y, err), FL_EPROTO, err);
    }
    assert_rc(fl_secagg_server_masked(s, w.ids[3], y, err), FL_EPROTO, err);
    assert_non_null(strstr(err, "did not share keys"));
    assert_rc(fl_secagg_server_close_masked(s, err), FL_OK, err);

    uint32_t surv[FL_SECAGG_MAX_SITES], drp[FL_SECAGG_MAX_SITES], sum[16];
    size_t ns, nd, nr;
    fl_secagg_reveal rv[8], orig[8];
    for (uint32_t i = 0; i < 3; i++) {
        assert_rc(fl_secagg_server_unmask_request(s, w.ids[i], surv, &ns, drp, &nd), FL_OK, "r");
        assert_int_equal(ns, 2);
        assert_int_equal(nd, 0); /* site 3 is in no U2(u) */
        assert_rc(fl_secagg_client_unmask(w.cl[i], orig, &nr, surv, ns, drp, nd, err), FL_OK, err);
        memcpy(rv, orig, sizeof rv);
        rv[0].kind = FL_SECAGG_KEY;
        assert_rc(fl_secagg_server_reveal(s, w.ids[i], rv, nr, err), FL_EPROTO, err);
        assert_non_null(strstr(err, "the seed share was asked for"));
        memcpy(rv, orig, sizeof rv);
        assert_rc(fl_secagg_server_reveal(s, w.ids[i], rv, nr - 1, err), FL_EPROTO, err);
        rv[0].share[0] ^= 1; /* x coordinate: made for another site */
        assert_rc(fl_secagg_server_reveal(s, w.ids[i], rv, nr, err), FL_EPROTO, err);
        assert_non_null(strstr(err, "made for site"));
        memcpy(rv, orig, sizeof rv);
        rv[1] = rv[0];
        assert_rc(fl_secagg_server_reveal(s, w.ids[i], rv, nr, err), FL_EPROTO, err);
        assert_non_null(strstr(err, "twice"));
        rv[1] = orig[1];
        rv[1].peer = w.ids[3]; /* not asked for */
        assert_rc(fl_secagg_server_reveal(s, w.ids[i], rv, nr, err), FL_EPROTO, err);
        assert_non_null(strstr(err, "not asked for"));
        /* none of that was kept: the correct reveals are accepted once */
        assert_rc(fl_secagg_server_reveal(s, w.ids[i], orig, nr, err), FL_OK, err);
        assert_rc(fl_secagg_server_reveal(s, w.ids[i], orig, nr, err), FL_EPROTO, err);
    }
    assert_rc(fl_secagg_server_reveal(s, w.ids[3], orig, nr, err), FL_EPROTO, err);
    assert_rc(fl_secagg_server_finish(s, sum, surv, &ns, err), FL_OK, err);
    assert_memory_equal(sum, want, sizeof want);
    assert_int_equal(ns, 3);
    world_free(&w);
}

/* Fixed schedules below the threshold, complete graph of 5, t = 3: three
 * sites not answering UNMASK leave each survivor's seed with 1 share
 * (finish: FL_ETHRESHOLD naming the site, sum untouched); three sites
 * dropping after SHARE leave 2 masked vectors whose seeds have only 1
 * holder each (close_masked says so at once). */
static void test_below_threshold(void **state) {
    (void)state;
    uint32_t ids[5] = {11, 22, 33, 44, 55};
    uint32_t *x[5];
    for (int i = 0; i < 5; i++) {
        x[i] = malloc(100 * sizeof *x[i]);
        for (int j = 0; j < 100; j++)
            x[i][j] = (uint32_t)(i * 1000 + j);
    }
    fl_csprng *r = seeded(12);
    struct {
        int drop[5];
        int where;
        const char *msg;
    } cases[] = {
        {{STAY, STAY, DROP_AFTER_MASK, DROP_AFTER_MASK, DROP_AFTER_MASK},
         AT_FINISH,
         "1 of its neighbours revealed shares, 3 shares of its self-mask seed needed"},
        {{STAY, DROP_AFTER_SHARE, DROP_AFTER_SHARE, STAY, DROP_AFTER_SHARE},
         AT_CLOSE_MASKED,
         "are left to reveal shares"},
        {{DROP_BEFORE_ADV, DROP_BEFORE_ADV, DROP_BEFORE_ADV, DROP_BEFORE_ADV, STAY},
         AT_CLOSE_ADV,
         "1 site(s) advertised"},
        /* 2 of 5 drop after masking: survivors' seeds keep 2 holders < 3 */
        {{STAY, STAY, STAY, DROP_AFTER_MASK, DROP_AFTER_MASK}, AT_FINISH, "site 11:"},
        /* one fewer: fine */
        {{STAY, STAY, STAY, STAY, DROP_AFTER_MASK}, FINISHED, ""},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        round_cfg c = {5, 0, 3, 100, 5, 1, ids, cases[ci].drop, x};
        round_out o;
        o.sum = malloc(100 * sizeof *o.sum);
        memset(o.sum, 0x3c, 100 * sizeof *o.sum);
        run_round(&c, &o, r);
        if (o.where != cases[ci].where)
            fail_msg("case %zu ended at %d, expected %d: %s", ci, o.where, cases[ci].where, o.err);
        if (!strstr(o.err, cases[ci].msg))
            fail_msg("case %zu: '%s' lacks '%s'", ci, o.err, cases[ci].msg);
        if (o.where != FINISHED) {
            assert_rc(o.rc, FL_ETHRESHOLD, o.err);
            for (int j = 0; j < 100; j++)
                assert_int_equal(o.sum[j], 0x3c3c3c3cu);
        } else {
            for (int j = 0; j < 100; j++)
                assert_int_equal(o.sum[j], (uint32_t)(0 + 1000 + 2000 + 3000 + 4000 + 5 * j));
        }
        free(o.sum);
    }
    for (int i = 0; i < 5; i++)
        free(x[i]);
    fl_csprng_free(r);
}

/* ============================== encodings =============================== */

static void test_quantize(void **state) {
    (void)state;
    fl_csprng *r = seeded(21);
    const uint64_t d = 20000;
    const double clip = 1.5;
    const uint32_t levels = 1u << 16;
    float *x = malloc(d * sizeof *x), *back = malloc(d * sizeof *back);
    uint32_t *q = malloc(d * sizeof *q), *sum = calloc(d, sizeof *sum);
    for (uint64_t i = 0; i < d; i++)
        x[i] = (float)(((double)fl_csprng_below(r, 1u << 20) / (1u << 20) - 0.5) * 4.0);
    /* round trip, one site, weight 1: within one quantization step of the
     * clipped value */
    assert_int_equal(fl_secagg_quantize(q, x, d, clip, levels, 1.0, r), FL_OK);
    fl_secagg_dequantize(back, q, d, clip, levels, 1.0);
    double step = 2 * clip / levels;
    for (uint64_t i = 0; i < d; i++) {
        double c = x[i] < -clip ? -clip : x[i] > clip ? clip : x[i];
        if (fabs(back[i] - c) > step * 1.0001)
            fail_msg("x[%llu] = %g came back as %g (step %g)", (unsigned long long)i, x[i], back[i],
                     step);
    }
    /* negative values are two's complement words */
    float neg = -1.5f;
    assert_int_equal(fl_secagg_quantize(q, &neg, 1, clip, levels, 1.0, r), FL_OK);
    assert_int_equal(q[0], (uint32_t) - (int32_t)(levels / 2));
    /* stochastic rounding is unbiased: 0.3 of a step rounds up 30% of the time */
    for (uint64_t i = 0; i < d; i++)
        x[i] = (float)(0.3 * step);
    assert_int_equal(fl_secagg_quantize(q, x, d, clip, levels, 1.0, r), FL_OK);
    double mean = 0;
    for (uint64_t i = 0; i < d; i++) {
        assert_true(q[i] == 0 || q[i] == 1);
        mean += q[i];
    }
    mean /= (double)d;
    assert_true(fabs(mean - 0.3) < 0.02); /* sd 0.0032 */
    /* a weighted mean of three sites through the sum of words */
    const double wts[3] = {0.2, 0.3, 0.5};
    const float vals[3] = {-1.0f, 0.5f, 1.2f};
    for (int s = 0; s < 3; s++) {
        for (uint64_t i = 0; i < d; i++)
            x[i] = vals[s] * (float)(i % 7) / 6.0f;
        assert_int_equal(fl_secagg_quantize(q, x, d, clip, levels, wts[s], r), FL_OK);
        for (uint64_t i = 0; i < d; i++)
            sum[i] += q[i];
    }
    fl_secagg_dequantize(back, sum, d, clip, levels, 1.0);
    for (uint64_t i = 0; i < d; i++) {
        double want = 0;
        for (int s = 0; s < 3; s++)
            want += wts[s] * vals[s] * (double)(i % 7) / 6.0;
        assert_true(fabs(back[i] - want) < 3 * step);
    }
    /* bad arguments */
    float nan = NAN;
    assert_int_equal(fl_secagg_quantize(q, &nan, 1, clip, levels, 1.0, r), FL_ENUMERIC);
    assert_int_equal(fl_secagg_quantize(q, x, d, 0.0, levels, 1.0, r), FL_EINVAL);
    assert_int_equal(fl_secagg_quantize(q, x, d, clip, 0, 1.0, r), FL_EINVAL);
    assert_int_equal(fl_secagg_quantize(q, x, d, clip, levels, 0.0, r), FL_EINVAL);
    assert_int_equal(fl_secagg_quantize(q, x, d, clip, 1u << 30, 4.0, r), FL_EINVAL);
    assert_int_equal(fl_secagg_quantize(q, x, d, clip, levels, 1.0, NULL), FL_EINVAL);
    free(x);
    free(back);
    free(q);
    free(sum);
    fl_csprng_free(r);
}

/* int64 values of three sites, negative ones included, through a real
 * secure round: the decoded sum is exact. */
static void test_i64_through_round(void **state) {
    (void)state;
    const int64_t v[3][6] = {
        {-5, 1LL << 40, -123456789012345LL, INT64_MAX - 10, 0, -1},
        {7, -(1LL << 41), 23456789012345LL, 4, 0, -1},
        {-2, 1LL << 40, 100000000000000LL, 6, 1, INT64_MIN + 2},
    };
    const size_t n = 6, d = n * FL_SECAGG_I64_WORDS;
    uint32_t ids[3] = {7, 3, 5}, *x[3];
    int drop[3] = {STAY, STAY, STAY};
    for (int s = 0; s < 3; s++) {
        x[s] = malloc(d * sizeof *x[s]);
        fl_secagg_encode_i64(x[s], v[s], n);
    }
    fl_csprng *r = seeded(31);
    round_cfg c = {3, 0, 2, d, 8, 2, ids, drop, x};
    round_out o;
    o.sum = calloc(d, sizeof *o.sum);
    run_round(&c, &o, r);
    assert_rc(o.rc, FL_OK, o.err);
    int64_t got[6];
    fl_secagg_decode_i64(got, o.sum, n);
    for (size_t i = 0; i < n; i++) {
        int64_t want = (int64_t)((uint64_t)v[0][i] + (uint64_t)v[1][i] + (uint64_t)v[2][i]);
        assert_true(got[i] == want);
    }
    assert_true(got[0] == 0 && got[1] == 0 && got[5] == INT64_MIN);
    /* the limbs alone: 65536 copies of -1 sum without losing a carry */
    int64_t m1 = -1, back;
    uint32_t w[4], acc[4] = {0};
    fl_secagg_encode_i64(w, &m1, 1);
    for (int k = 0; k < 65536; k++)
        for (int j = 0; j < 4; j++)
            acc[j] += w[j];
    fl_secagg_decode_i64(&back, acc, 1);
    assert_true(back == -65536);
    for (int s = 0; s < 3; s++)
        free(x[s]);
    free(o.sum);
    fl_csprng_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_degree_threshold),    cmocka_unit_test(test_graph),
        cmocka_unit_test(test_params_invalid),      cmocka_unit_test(test_exactness_3),
        cmocka_unit_test(test_exactness_5),         cmocka_unit_test(test_exactness_10),
        cmocka_unit_test(test_exactness_20),        cmocka_unit_test(test_exactness_outcomes),
        cmocka_unit_test(test_below_threshold),     cmocka_unit_test(test_masked_is_uniform),
        cmocka_unit_test(test_unmask_refusals),     cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_tampered_share_pair), cmocka_unit_test(test_out_of_stage),
        cmocka_unit_test(test_server_refusals),     cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_i64_through_round),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
