/* test_fairness_secagg.c: the fairness audit of Fairlearn's documented
 * example (docs/fairness.md) when its 18 rows sit at three sites (rows 0-5,
 * 6-11, 12-17) and the per-group counts are summed through secure
 * aggregation (crypto/secagg.h, with real certificates and signatures), as
 * the federation does (crypto/secagg_vec.h carries counts as int64 limbs).
 * The aggregator sees only the unmasked sum, and the audit from it gives
 * Fairlearn's figures: demographic parity difference 0.25 and ratio 2/3,
 * equalized odds difference 1.0 and ratio 0.0 (issue #7). */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fairness.h"
#include "core/ini.h"
#include "crypto/pki.h"
#include "crypto/secagg.h"

#define N 18
#define SITES 3

static const int Y_TRUE[N] = {0, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1};
static const int Y_PRED[N] = {0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0};
static const char *const GROUP[N] = {"b", "b", "a", "b", "b", "c", "c", "c", "a",
                                     "a", "c", "a", "b", "c", "c", "b", "c", "c"};

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("'%s' is not a number", k);
    return v->valuedouble;
}

/* One secure sum of three sites' vectors (d words each) into sum. */
static void secure_sum(uint32_t *sum, uint32_t *const in[SITES], uint64_t d) {
    char err[FL_ERR_LEN], dir[4096];
    snprintf(dir, sizeof dir, "%s/fair-pki", fl_test_tmpdir());
    if (fl_pki_init(dir, "fairness", 30, err)) fail_msg("%s", err);
    uint32_t ids[SITES] = {1, 2, 3};
    fl_secagg_params p = {.federation_id = "fair",
                          .round = 1,
                          .graph_seed = 7,
                          .ids = ids,
                          .n = SITES,
                          .degree = 2,
                          .threshold = 2,
                          .d = d};
    fl_secagg_client *c[SITES];
    fl_secagg_server *srv;
    assert_int_equal(fl_secagg_server_new(&srv, &p, err), FL_OK);
    char *cert[SITES];
    uint8_t sig[SITES][FL_SIG_MAX];
    for (int s = 0; s < SITES; s++) {
        char name[16], path[4200];
        size_t len;
        snprintf(name, sizeof name, "site-%d", s + 1);
        if (fl_pki_issue(dir, name, FL_ROLE_CLIENT, 10, err)) fail_msg("%s", err);
        snprintf(path, sizeof path, "%s/%s.crt", dir, name);
        assert_int_equal(fl_read_file(&cert[s], &len, path, err), FL_OK);
        assert_int_equal(fl_secagg_client_new(&c[s], &p, ids[s], NULL, err), FL_OK);
        fl_secagg_peer_keys k = {
            .site = ids[s], .sig = sig[s], .cert_pem = cert[s], .cert_len = strlen(cert[s])};
        assert_int_equal(fl_secagg_client_advertise(c[s], k.enc_pk, k.mask_pk, err), FL_OK);
        uint8_t msg[FL_SECAGG_ADVERT_MAX];
        size_t ml = fl_secagg_advert_message(msg, "fair", 1, ids[s], k.enc_pk, k.mask_pk);
        snprintf(path, sizeof path, "%s/%s.key", dir, name);
        if (fl_sign(sig[s], &k.sig_len, msg, ml, path, err)) fail_msg("%s", err);
        assert_int_equal(fl_secagg_server_advertise(srv, &k, err), FL_OK);
    }
    assert_int_equal(fl_secagg_server_close_advertise(srv, err), FL_OK);
    for (int s = 0; s < SITES; s++) {
        const fl_secagg_peer_keys *pk;
        size_t n;
        fl_secagg_ct ct[SITES];
        assert_int_equal(fl_secagg_server_keys_for(srv, ids[s], &pk, &n), FL_OK);
        if (fl_secagg_client_share(c[s], ct, pk, n, err)) fail_msg("share: %s", err);
        assert_int_equal(fl_secagg_server_shares(srv, ids[s], ct, n, err), FL_OK);
    }
    assert_int_equal(fl_secagg_server_close_shares(srv, err), FL_OK);
    for (int s = 0; s < SITES; s++) {
        const fl_secagg_ct *ct;
        size_t n;
        assert_int_equal(fl_secagg_server_shares_for(srv, ids[s], &ct, &n), FL_OK);
        if (fl_secagg_client_mask(c[s], in[s], ct, n, err)) fail_msg("mask: %s", err);
        assert_int_equal(fl_secagg_server_masked(srv, ids[s], in[s], err), FL_OK);
    }
    assert_int_equal(fl_secagg_server_close_masked(srv, err), FL_OK);
    for (int s = 0; s < SITES; s++) {
        uint32_t sv[FL_SECAGG_MAX_SITES], dr[FL_SECAGG_MAX_SITES];
        size_t ns, nd, got;
        fl_secagg_reveal r[SITES];
        assert_int_equal(fl_secagg_server_unmask_request(srv, ids[s], sv, &ns, dr, &nd), FL_OK);
        assert_int_equal(fl_secagg_client_unmask(c[s], r, &got, sv, ns, dr, nd, err), FL_OK);
        assert_int_equal(fl_secagg_server_reveal(srv, ids[s], r, got, err), FL_OK);
        fl_secagg_client_free(c[s]);
        free(cert[s]);
    }
    uint32_t surv[FL_SECAGG_MAX_SITES];
    size_t n_surv;
    if (fl_secagg_server_finish(srv, sum, surv, &n_surv, err)) fail_msg("finish: %s", err);
    assert_int_equal(n_surv, SITES);
    fl_secagg_server_free(srv);
}

static void test_fairlearn_example_through_secagg(void **state) {
    (void)state;
    char err[FL_ERR_LEN];
    const char *names[] = {"group"};
    int32_t g[N], y[N];
    float score[N];
    fl_fairness_layout L;
    assert_int_equal(
        fl_fairness_layout_observed(&L, g, names, (const char *const *)GROUP, 1, N, 0, err), FL_OK);
    for (int i = 0; i < N; i++) {
        y[i] = Y_TRUE[i];
        score[i] = (float)Y_PRED[i];
    }
    int64_t nc = L.n_counts;
    uint64_t d = (uint64_t)nc * FL_SECAGG_I64_WORDS;
    uint64_t *plain = calloc((size_t)nc, sizeof *plain);
    uint32_t *in[SITES], *sum = calloc(d, sizeof *sum);
    int64_t *v = calloc((size_t)nc, sizeof *v);
    for (int s = 0; s < SITES; s++) {
        uint64_t *site = calloc((size_t)nc, sizeof *site);
        int lo = 6 * s;
        assert_int_equal(fl_fairness_count(site, &L, g + lo, 1, y + lo, score + lo, 6, 0.5), FL_OK);
        assert_int_equal(fl_fairness_count(plain, &L, g + lo, 1, y + lo, score + lo, 6, 0.5),
                         FL_OK);
        for (int64_t i = 0; i < nc; i++)
            v[i] = (int64_t)site[i];
        in[s] = calloc(d, sizeof *in[s]);
        fl_secagg_encode_i64(in[s], v, (size_t)nc);
        free(site);
    }
    secure_sum(sum, in, d);
    fl_secagg_decode_i64(v, sum, (size_t)nc);
    uint64_t *secure = calloc((size_t)nc, sizeof *secure);
    for (int64_t i = 0; i < nc; i++)
        secure[i] = (uint64_t)v[i];
    /* the secure sum is the plain sum, count for count */
    assert_memory_equal(secure, plain, (size_t)nc * sizeof *plain);
    fl_fairness_options o;
    fl_fairness_options_init(&o);
    o.min_group_count = 1;
    cJSON *j;
    assert_int_equal(fl_fairness_compute(&j, &L, secure, &o, err), FL_OK);
    const cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "attributes"), 0);
    const cJSON *dsp = cJSON_GetObjectItemCaseSensitive(a, "disparities");
    assert_true(fabs(num(dsp, "demographic_parity_difference") - 0.25) < 1e-12);
    assert_true(fabs(num(dsp, "demographic_parity_ratio") - 2.0 / 3.0) < 1e-12);
    assert_true(fabs(num(dsp, "equalized_odds_difference") - 1.0) < 1e-12);
    assert_true(fabs(num(dsp, "equalized_odds_ratio") - 0.0) < 1e-12);
    cJSON_Delete(j);
    for (int s = 0; s < SITES; s++)
        free(in[s]);
    free(sum);
    free(v);
    free(plain);
    free(secure);
    fl_fairness_layout_free(&L);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fairlearn_example_through_secagg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
