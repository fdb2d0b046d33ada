/* secagg.c: the cost of secure aggregation (crypto/secagg.h, docs/secagg.md;
 * DESIGN.md §9, §13). Whole SecAgg+ rounds are run in one process, every
 * site's client and the aggregator's server, with real certificates from a
 * throwaway PKI signing each key advertisement, and the unmasked sum is
 * checked against the plain sum of the survivors' inputs.
 *
 *   secagg [--json] [--quick] [--n N,N..] [--d D,D..] [--drop F,F..]
 *          [--degree K] [--reps R] [--sample S]
 *
 * Grid (default): n in {10, 50, 100} sites, d in {1e5, 1e6} words, dropout
 * in {0, 0.1, 0.3}; --quick runs n in {10, 50}, d = 1e5. Dropped sites
 * leave after SHARE_KEYS and send no masked vector: the costly case for the
 * aggregator, which must rebuild their mask keys and remove their pairwise
 * masks from each surviving neighbour.
 *
 * Reported per run: client time per stage (mean over the sites that ran the
 * stage; advertise includes signing with the site's key), server time per
 * stage (its calls for all sites plus the close; unmask includes finish),
 * and bytes each site uploads (advert: id + two keys + signature;
 * ciphertexts: id + share pair per neighbour; masked vector: 4d; reveals: id
 * + kind + share per neighbour). The client MASK stage of every site is run
 * (the sum must come out exact); with --sample S only the first S sites'
 * client stages are timed, the rest run untimed.
 *
 * Degree: Bell et al. (CCS 2020) show an O(log n)-regular graph suffices;
 * the constant depends on the dropout rate. With the library's threshold
 * rule (more than half of the neighbours, fl_secagg_threshold), each site
 * keeps a majority of live neighbours only if the degree grows with the
 * dropout rate, so the bench uses, for each n, the smallest even degree >=
 * 2*ceil(log2 n) + 2 for which a round with the largest dropout of the run
 * fails with probability <= 1e-4 (exact hypergeometric tail, union bound over
 * the sites), or n - 1. --degree K overrides it.
 *
 * Reference measured in the same run: masking throughput per neighbour
 * (words/s of fl_kx_prg_add, the PRG-add loop) over libsodium's raw
 * ChaCha20 keystream throughput (crypto_stream_chacha20_ietf into a buffer
 * of the same d words): masking_vs_chacha20, the lower of the d values.
 * Also the many-seed form the client uses (fl_kx_prg_add_many with degree+1
 * seeds, per seed). Best of R repetitions, kinds interleaved. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "bench/bench_util.h"
#include "crypto/csprng.h"
#include "crypto/kx.h"
#include "crypto/pki.h"
#include "crypto/secagg.h"

#define MAX_LIST 8
#define FED "bench-secagg"

enum { ADV = 0, SHARE = 1, MASK = 2, UNMASK = 3, STAGES = 4 };
static const char *stage_names[STAGES] = {"advertise", "share", "mask", "unmask"};

typedef struct pki {
    char dir[256];
    int n;
    fl_signer **signers;
    char **certs;
    size_t *cert_lens;
} pki;

typedef struct run_result {
    uint32_t n, degree, threshold, dropped;
    uint64_t d;
    double dropout;
    double client_ms[STAGES], server_ms[STAGES];
    double bytes[4]; /* advert, ciphertexts, masked, reveals: mean per site that sent them */
    int timed_clients, exact, retries;
} run_result;

/* ============================== degree rule ============================== */

static double log_choose(double n, double k) {
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1);
}

/* P(fewer than t of k neighbours survive) when m of the other `others`
 * sites dropped: the hypergeometric lower tail. */
static double tail(uint32_t others, uint32_t m, uint32_t k, uint32_t t) {
    double p = 0, all = log_choose(others, k);
    for (uint32_t h = 0; h < t && h <= k; h++) {
        if (h > others - m || k - h > m) continue;
        p += exp(log_choose(others - m, h) + log_choose(m, k - h) - all);
    }
    return p;
}

static uint32_t bench_degree(uint32_t n, double max_drop) {
    uint32_t base = 2 * (uint32_t)ceil(log2((double)n)) + 2;
    uint32_t m = (uint32_t)lround(max_drop * n);
    for (uint32_t k = base; k < n - 1; k += 2) {
        uint32_t kk = fl_secagg_degree(n, k), t = fl_secagg_threshold(kk, 0.5);
        /* a survivor's holders: its live neighbours among n-1 others, m
         * dropped; a dropped site's: among n-1 others, m-1 dropped */
        double p = (n - m) * tail(n - 1, m, kk, t) + (m ? m * tail(n - 1, m - 1, kk, t) : 0);
        if (p <= 1e-4) return kk;
    }
    return n - 1;
}

/* ================================== PKI ================================== */

static void rm_tree(const char *dir) {
    DIR *dh = opendir(dir);
    if (!dh) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(dh))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(dh);
    rmdir(dir);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    *len = (size_t)n;
    return b;
}

static int pki_make(pki *k, int n, char *err) {
    memset(k, 0, sizeof *k);
    snprintf(k->dir, sizeof k->dir, "%s/cohort-bench-secagg-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(k->dir)) return fl_seterr(err, FL_EIO, "mkdtemp %s failed", k->dir);
    rmdir(k->dir); /* fl_pki_init creates it, 0700 */
    int rc = fl_pki_init(k->dir, FED, 30, err);
    if (rc) return rc;
    k->signers = calloc((size_t)n, sizeof *k->signers);
    k->certs = calloc((size_t)n, sizeof *k->certs);
    k->cert_lens = calloc((size_t)n, sizeof *k->cert_lens);
    if (!k->signers || !k->certs || !k->cert_lens)
        return fl_seterr(err, FL_ENOMEM, "out of memory");
    k->n = n;
    for (int i = 0; i < n; i++) {
        char name[64], path[400];
        snprintf(name, sizeof name, "site-%d", i);
        if ((rc = fl_pki_issue(k->dir, name, FL_ROLE_CLIENT, 10, err))) return rc;
        snprintf(path, sizeof path, "%s/%s.key", k->dir, name);
        if ((rc = fl_signer_new(&k->signers[i], path, err))) return rc;
        snprintf(path, sizeof path, "%s/%s.crt", k->dir, name);
        if (!(k->certs[i] = slurp(path, &k->cert_lens[i])))
            return fl_seterr(err, FL_EIO, "cannot read %s", path);
    }
    return FL_OK;
}

static void pki_free(pki *k) {
    for (int i = 0; i < k->n; i++) {
        fl_signer_free(k->signers[i]);
        free(k->certs[i]);
    }
    free(k->signers);
    free(k->certs);
    free(k->cert_lens);
    if (k->dir[0]) rm_tree(k->dir);
}

/* ================================ a round ================================ */

/* One round of n sites; the first `sample` clients are timed. */
static int run_round(run_result *res, const pki *k, uint32_t n, uint64_t d, double dropout,
                     uint32_t degree, uint32_t sample, uint64_t seed, fl_csprng *keys_rng,
                     char *err) {
    int rc = FL_OK;
    uint32_t *ids = malloc(n * sizeof *ids), *surv = malloc(FL_SECAGG_MAX_SITES * 4);
    uint32_t *drp = malloc(FL_SECAGG_MAX_SITES * 4), *nsurv = malloc(FL_SECAGG_MAX_SITES * 4);
    uint32_t *y = malloc(d * 4), *want = calloc(d, 4), *sum = malloc(d * 4);
    uint8_t *drop = calloc(n, 1), (*sigs)[FL_SIG_MAX] = malloc(n * FL_SIG_MAX);
    fl_secagg_client **cl = calloc(n, sizeof *cl);
    fl_secagg_ct *cts = malloc(n * sizeof *cts);
    fl_secagg_reveal *rev = malloc(n * sizeof *rev);
    fl_secagg_server *s = NULL;
    fl_csprng *r = NULL;
    unsigned char sd[FL_CSPRNG_SEEDBYTES] = {0};
    double t0, cl_sum[STAGES] = {0};
    uint32_t cl_cnt[STAGES] = {0};
    double bytes[4] = {0}, bytes_cnt[4] = {0};
    memcpy(sd, &seed, sizeof seed);
    memset(res->server_ms, 0, sizeof res->server_ms);
    if (!ids || !surv || !drp || !nsurv || !y || !want || !sum || !drop || !sigs || !cl || !cts ||
        !rev) {
        rc = fl_seterr(err, FL_ENOMEM, "out of memory (d = %llu)", (unsigned long long)d);
        goto cleanup;
    }
    if ((rc = fl_csprng_new_seeded(&r, sd, err))) goto cleanup; /* drop set and inputs only */
    for (uint32_t i = 0; i < n; i++)
        ids[i] = 1000 + 7 * i;
    uint32_t m = (uint32_t)lround(dropout * n);
    for (uint32_t j = 0; j < m;) {
        uint32_t i = (uint32_t)fl_csprng_below(r, n);
        if (!drop[i]) drop[i] = 1, j++;
    }
    uint32_t kk = fl_secagg_degree(n, degree);
    fl_secagg_params p = {FED, 1, fl_csprng_u64(r), ids, n, degree, fl_secagg_threshold(kk, 0.5),
                          d};
    res->n = n;
    res->d = d;
    res->dropout = dropout;
    res->degree = kk;
    res->threshold = p.threshold;
    res->dropped = m;
    if ((rc = fl_secagg_server_new(&s, &p, err))) goto cleanup;
    for (uint32_t i = 0; i < n; i++)
        if ((rc = fl_secagg_client_new(&cl[i], &p, ids[i], keys_rng, err))) goto cleanup;

    /* ADVERTISE */
    for (uint32_t i = 0; i < n; i++) {
        fl_secagg_peer_keys a = {.site = ids[i]};
        uint8_t msg[FL_SECAGG_ADVERT_MAX];
        size_t sl;
        t0 = fl_bench_now();
        if ((rc = fl_secagg_client_advertise(cl[i], a.enc_pk, a.mask_pk, err))) goto cleanup;
        size_t len = fl_secagg_advert_message(msg, FED, p.round, a.site, a.enc_pk, a.mask_pk);
        if ((rc = fl_signer_sign(k->signers[i], sigs[i], &sl, msg, len, err))) goto cleanup;
        if (i < sample) cl_sum[ADV] += fl_bench_now() - t0, cl_cnt[ADV]++;
        a.sig = sigs[i];
        a.sig_len = sl;
        a.cert_pem = k->certs[i];
        a.cert_len = k->cert_lens[i];
        bytes[0] += 4 + 2 * FL_SECAGG_KEY_BYTES + (double)sl, bytes_cnt[0]++;
        t0 = fl_bench_now();
        if ((rc = fl_secagg_server_advertise(s, &a, err))) goto cleanup;
        res->server_ms[ADV] += fl_bench_now() - t0;
    }
    t0 = fl_bench_now();
    if ((rc = fl_secagg_server_close_advertise(s, err))) goto cleanup;
    res->server_ms[ADV] += fl_bench_now() - t0;

    /* SHARE */
    for (uint32_t i = 0; i < n; i++) {
        const fl_secagg_peer_keys *keys;
        size_t nk;
        if ((rc = fl_secagg_server_keys_for(s, ids[i], &keys, &nk))) goto cleanup;
        t0 = fl_bench_now();
        if ((rc = fl_secagg_client_share(cl[i], cts, keys, nk, err))) goto cleanup;
        if (i < sample) cl_sum[SHARE] += fl_bench_now() - t0, cl_cnt[SHARE]++;
        bytes[1] += (double)nk * (4 + FL_SECAGG_CT_BYTES), bytes_cnt[1]++;
        t0 = fl_bench_now();
        if ((rc = fl_secagg_server_shares(s, ids[i], cts, nk, err))) goto cleanup;
        res->server_ms[SHARE] += fl_bench_now() - t0;
    }
    t0 = fl_bench_now();
    if ((rc = fl_secagg_server_close_shares(s, err))) goto cleanup;
    res->server_ms[SHARE] += fl_bench_now() - t0;

    /* MASK: the dropped sites leave here */
    for (uint32_t i = 0; i < n; i++) {
        if (drop[i]) continue;
        const fl_secagg_ct *in;
        size_t nin;
        fl_csprng_bytes(r, y, d * 4);
        for (uint64_t w = 0; w < d; w++)
            want[w] += y[w];
        if ((rc = fl_secagg_server_shares_for(s, ids[i], &in, &nin))) goto cleanup;
        t0 = fl_bench_now();
        if ((rc = fl_secagg_client_mask(cl[i], y, in, nin, err))) goto cleanup;
        if (i < sample) cl_sum[MASK] += fl_bench_now() - t0, cl_cnt[MASK]++;
        bytes[2] += 4.0 * (double)d, bytes_cnt[2]++;
        t0 = fl_bench_now();
        if ((rc = fl_secagg_server_masked(s, ids[i], y, err))) goto cleanup;
        res->server_ms[MASK] += fl_bench_now() - t0;
    }
    t0 = fl_bench_now();
    rc = fl_secagg_server_close_masked(s, err);
    res->server_ms[MASK] += fl_bench_now() - t0;
    if (rc) goto cleanup;

    /* UNMASK */
    for (uint32_t i = 0; i < n; i++) {
        if (drop[i]) continue;
        size_t ns, nd, nr;
        if ((rc = fl_secagg_server_unmask_request(s, ids[i], surv, &ns, drp, &nd))) goto cleanup;
        t0 = fl_bench_now();
        if ((rc = fl_secagg_client_unmask(cl[i], rev, &nr, surv, ns, drp, nd, err))) goto cleanup;
        if (i < sample) cl_sum[UNMASK] += fl_bench_now() - t0, cl_cnt[UNMASK]++;
        bytes[3] += (double)nr * (4 + 1 + FL_SECAGG_SHARE_BYTES), bytes_cnt[3]++;
        t0 = fl_bench_now();
        if ((rc = fl_secagg_server_reveal(s, ids[i], rev, nr, err))) goto cleanup;
        res->server_ms[UNMASK] += fl_bench_now() - t0;
    }
    size_t n_out;
    t0 = fl_bench_now();
    rc = fl_secagg_server_finish(s, sum, nsurv, &n_out, err);
    res->server_ms[UNMASK] += fl_bench_now() - t0;
    if (rc) goto cleanup;
    res->exact = n_out == n - m && !memcmp(sum, want, d * 4);
    for (int st = 0; st < STAGES; st++) {
        res->client_ms[st] = cl_cnt[st] ? 1e3 * cl_sum[st] / cl_cnt[st] : 0;
        res->server_ms[st] *= 1e3;
    }
    for (int b = 0; b < 4; b++)
        res->bytes[b] = bytes_cnt[b] ? bytes[b] / bytes_cnt[b] : 0;
    res->timed_clients = (int)(sample < n ? sample : n);
cleanup:
    if (cl)
        for (uint32_t i = 0; i < n; i++)
            fl_secagg_client_free(cl[i]);
    fl_secagg_server_free(s);
    fl_csprng_free(r);
    free(ids);
    free(surv);
    free(drp);
    free(nsurv);
    free(y);
    free(want);
    free(sum);
    free(drop);
    free(sigs);
    free(cl);
    free(cts);
    free(rev);
    return rc;
}

/* ============================ PRG vs ChaCha20 ============================ */

typedef struct prg_result {
    uint64_t d;
    uint32_t seeds;
    double prg_wps, many_wps, chacha_wps; /* words per second */
} prg_result;

static void prg_bench(prg_result *o, uint64_t d, uint32_t seeds, int reps) {
    uint32_t *y = calloc(d, 4);
    uint8_t *ks = malloc(d * 4), key[32], (*sd)[32] = malloc((size_t)seeds * 32);
    int8_t *signs = malloc(seeds);
    static const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
    randombytes_buf(key, sizeof key);
    randombytes_buf(sd, (size_t)seeds * 32);
    for (uint32_t s = 0; s < seeds; s++)
        signs[s] = (s & 1) ? -1 : 1;
    double best_prg = 1e30, best_raw = 1e30, best_many = 1e30;
    /* enough passes per timing that each takes ~20 ms or more */
    int inner = (int)(4e6 / (double)d) + 1;
    for (int r = 0; r < reps; r++) {
        double t0 = fl_bench_now();
        for (int i = 0; i < inner; i++)
            crypto_stream_chacha20_ietf(ks, d * 4, nonce, key);
        double t1 = fl_bench_now();
        for (int i = 0; i < inner; i++)
            fl_kx_prg_add(y, d, key, +1);
        double t2 = fl_bench_now();
        fl_kx_prg_add_many(y, d, (const uint8_t(*)[32])sd, signs, seeds);
        double t3 = fl_bench_now();
        if ((t1 - t0) / inner < best_raw) best_raw = (t1 - t0) / inner;
        if ((t2 - t1) / inner < best_prg) best_prg = (t2 - t1) / inner;
        if ((t3 - t2) / seeds < best_many) best_many = (t3 - t2) / seeds;
    }
    /* keep the results observable so nothing is optimised away */
    volatile uint32_t sink = y[d / 2] ^ ks[d / 3];
    (void)sink;
    o->d = d;
    o->seeds = seeds;
    o->chacha_wps = (double)d / best_raw;
    o->prg_wps = (double)d / best_prg;
    o->many_wps = (double)d / best_many;
    free(y);
    free(ks);
    free(sd);
    free(signs);
}

/* ================================= main ================================== */

static int parse_list(double *out, int *n, const char *s) {
    char *end;
    *n = 0;
    while (*s && *n < MAX_LIST) {
        double v = strtod(s, &end);
        if (end == s || !(v >= 0)) return -1;
        out[(*n)++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return *n ? 0 : -1;
}

static int usage(void) {
    fprintf(stderr, "usage: secagg [--json] [--quick] [--n N,N..] [--d D,D..] [--drop F,F..] "
                    "[--degree K] [--reps R] [--sample S]\n");
    return 2;
}

int main(int argc, char **argv) {
    int json = fl_bench_json(argc, argv), quick = 0, reps = 5;
    double ns[MAX_LIST] = {10, 50, 100}, ds[MAX_LIST] = {1e5, 1e6}, drops[MAX_LIST] = {0, 0.1, 0.3};
    int n_ns = 3, n_ds = 2, n_drops = 3, set_n = 0, set_d = 0;
    long degree_override = -1, sample = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) continue;
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--n") && i + 1 < argc) {
            if (parse_list(ns, &n_ns, argv[++i])) return usage();
            set_n = 1;
        } else if (!strcmp(argv[i], "--d") && i + 1 < argc) {
            if (parse_list(ds, &n_ds, argv[++i])) return usage();
            set_d = 1;
        } else if (!strcmp(argv[i], "--drop") && i + 1 < argc) {
            if (parse_list(drops, &n_drops, argv[++i])) return usage();
        } else if (!strcmp(argv[i], "--degree") && i + 1 < argc) {
            degree_override = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--sample") && i + 1 < argc) {
            sample = atol(argv[++i]);
        } else {
            return usage();
        }
    }
    if (quick) {
        if (!set_n) ns[0] = 10, ns[1] = 50, n_ns = 2;
        if (!set_d) ds[0] = 1e5, n_ds = 1;
        reps = reps > 3 ? 3 : reps;
    }
    double max_drop = 0;
    for (int i = 0; i < n_drops; i++) {
        if (drops[i] >= 1) return usage();
        if (drops[i] > max_drop) max_drop = drops[i];
    }
    int max_n = 0;
    for (int i = 0; i < n_ns; i++) {
        if (ns[i] < 3 || ns[i] > FL_SECAGG_MAX_SITES) return usage();
        if ((int)ns[i] > max_n) max_n = (int)ns[i];
    }
    for (int i = 0; i < n_ds; i++)
        if (ds[i] < 1 || ds[i] > 1e8) return usage();
    if (reps < 1 || degree_override == 0 || degree_override < -1) return usage();

    char err[FL_ERR_LEN] = "";
    int rc = FL_OK;
    pki k;
    fl_csprng *keys_rng = NULL;
    run_result *runs = calloc((size_t)(n_ns * n_ds * n_drops), sizeof *runs);
    prg_result prg[MAX_LIST];
    int n_runs = 0;
    if (sodium_init() < 0) {
        fprintf(stderr, "secagg: sodium_init failed\n");
        return 1;
    }
    if ((rc = pki_make(&k, max_n, err)) || (rc = fl_csprng_new(&keys_rng, err))) goto cleanup;

    /* the PRG reference first, on a quiet machine */
    uint32_t many_seeds = 1 + bench_degree((uint32_t)max_n, max_drop);
    double ratio = 1e30, many_ratio = 1e30;
    for (int j = 0; j < n_ds; j++) {
        prg_bench(&prg[j], (uint64_t)ds[j], many_seeds, reps);
        double a = prg[j].prg_wps / prg[j].chacha_wps, b = prg[j].many_wps / prg[j].chacha_wps;
        if (a < ratio) ratio = a;
        if (b < many_ratio) many_ratio = b;
    }

    for (int i = 0; i < n_ns; i++)
        for (int j = 0; j < n_ds; j++)
            for (int q = 0; q < n_drops; q++) {
                uint32_t n = (uint32_t)ns[i];
                uint32_t deg =
                    degree_override > 0 ? (uint32_t)degree_override : bench_degree(n, max_drop);
                uint32_t smp = sample > 0 ? (uint32_t)sample : n;
                run_result *res = &runs[n_runs];
                /* a drop set that leaves some secret short of shares aborts
                 * the round (FL_ETHRESHOLD): draw another, say how often */
                for (uint64_t seed = 1;; seed++) {
                    rc = run_round(res, &k, n, (uint64_t)ds[j], drops[q], deg, smp,
                                   seed * 7919 + (uint64_t)(i * 100 + j * 10 + q), keys_rng, err);
                    if (rc != FL_ETHRESHOLD || seed >= 20) break;
                    res->retries++;
                }
                if (rc) goto cleanup;
                n_runs++;
                if (!json)
                    fprintf(stderr, "  n=%u d=%llu drop=%.0f%% done\n", n,
                            (unsigned long long)ds[j], 100 * drops[q]);
            }

    if (json) {
        printf("{\"bench\":\"secagg\",\"quick\":%s,\"dropout_model\":\"after SHARE_KEYS\","
               "\"degree_rule\":\"smallest even k >= 2*ceil(log2 n)+2 with P(round fails at "
               "the largest dropout) <= 1e-4, majority threshold\",\"prg\":[",
               quick ? "true" : "false");
        for (int j = 0; j < n_ds; j++)
            printf("%s{\"d\":%llu,\"prg_add_words_per_s\":%.4g,\"prg_add_many_words_per_s\":%.4g,"
                   "\"many_seeds\":%u,\"chacha20_words_per_s\":%.4g,\"ratio\":%.4f,"
                   "\"many_ratio\":%.4f}",
                   j ? "," : "", (unsigned long long)prg[j].d, prg[j].prg_wps, prg[j].many_wps,
                   prg[j].seeds, prg[j].chacha_wps, prg[j].prg_wps / prg[j].chacha_wps,
                   prg[j].many_wps / prg[j].chacha_wps);
        printf("],\"masking_vs_chacha20\":%.4f,\"masking_many_vs_chacha20\":%.4f,\"runs\":[", ratio,
               many_ratio);
        for (int r = 0; r < n_runs; r++) {
            const run_result *x = &runs[r];
            printf(
                "%s{\"n\":%u,\"d\":%llu,\"degree\":%u,\"threshold\":%u,\"dropout\":%.2f,"
                "\"dropped\":%u,\"retries\":%d,\"timed_clients\":%d,\"exact\":%s,\"client_ms\":{",
                r ? "," : "", x->n, (unsigned long long)x->d, x->degree, x->threshold, x->dropout,
                x->dropped, x->retries, x->timed_clients, x->exact ? "true" : "false");
            for (int st = 0; st < STAGES; st++)
                printf("%s\"%s\":%.4f", st ? "," : "", stage_names[st], x->client_ms[st]);
            printf("},\"server_ms\":{");
            for (int st = 0; st < STAGES; st++)
                printf("%s\"%s\":%.4f", st ? "," : "", stage_names[st], x->server_ms[st]);
            printf("},\"bytes_per_site\":{\"advert\":%.0f,\"ciphertexts\":%.0f,\"masked\":%.0f,"
                   "\"reveals\":%.0f,\"total\":%.0f}}",
                   x->bytes[0], x->bytes[1], x->bytes[2], x->bytes[3],
                   x->bytes[0] + x->bytes[1] + x->bytes[2] + x->bytes[3]);
        }
        printf("]}\n");
    } else {
        printf("SecAgg+ masking vs ChaCha20 keystream (libsodium, same d, best of %d):\n", reps);
        for (int j = 0; j < n_ds; j++)
            printf("  d=%-8llu PRG-add %7.0f Mwords/s  raw ChaCha20 %7.0f Mwords/s  ratio %.3f"
                   "   %u seeds at once: %.3f\n",
                   (unsigned long long)prg[j].d, prg[j].prg_wps * 1e-6, prg[j].chacha_wps * 1e-6,
                   prg[j].prg_wps / prg[j].chacha_wps, prg[j].seeds,
                   prg[j].many_wps / prg[j].chacha_wps);
        printf("  masking_vs_chacha20 %.3f (target >= 0.7)\n\n", ratio);
        printf("Rounds (dropped sites leave after SHARE_KEYS; times in ms; client = mean per "
               "site)\n");
        printf("%5s %8s %4s %3s %5s | %8s %8s %8s %7s | %8s %8s %8s %9s | %9s %s\n", "n", "d", "k",
               "t", "drop", "c.adv", "c.share", "c.mask", "c.unmsk", "s.adv", "s.share", "s.mask",
               "s.unmask", "KiB/site", "exact");
        for (int r = 0; r < n_runs; r++) {
            const run_result *x = &runs[r];
            printf("%5u %8llu %4u %3u %4.0f%% | %8.2f %8.2f %8.2f %7.3f | %8.2f %8.2f %8.2f "
                   "%9.2f | %9.1f %s%s\n",
                   x->n, (unsigned long long)x->d, x->degree, x->threshold, 100 * x->dropout,
                   x->client_ms[ADV], x->client_ms[SHARE], x->client_ms[MASK], x->client_ms[UNMASK],
                   x->server_ms[ADV], x->server_ms[SHARE], x->server_ms[MASK], x->server_ms[UNMASK],
                   (x->bytes[0] + x->bytes[1] + x->bytes[2] + x->bytes[3]) / 1024,
                   x->exact ? "yes" : "NO", x->retries ? " (redrawn)" : "");
        }
        if (sample > 0 && sample < max_n)
            printf("(client stages timed on the first %ld sites of each round; all sites run)\n",
                   sample);
    }
    for (int r = 0; r < n_runs; r++)
        if (!runs[r].exact) rc = FL_ECRYPTO;
    if (rc) snprintf(err, sizeof err, "an unmasked sum differed from the plain sum");
cleanup:
    if (rc) fprintf(stderr, "secagg: %s\n", err[0] ? err : fl_strerror(rc));
    pki_free(&k);
    fl_csprng_free(keys_rng);
    free(runs);
    return rc ? 1 : 0;
}
