/* test_metrics.c: log-loss, accuracy, confusion counts and exact ROC AUC
 * (ties counted one half) against hand-computed values. */
#include "testutil.h"

#include <math.h>

#include "core/metrics.h"

static void test_auc_no_ties(void **state) {
    /* The scikit-learn roc_auc_score docstring example: 0.75. */
    float s[] = {0.1f, 0.4f, 0.35f, 0.8f};
    int32_t y[] = {0, 0, 1, 1};
    double auc;
    assert_int_equal(fl_auc(&auc, s, y, 4), FL_OK);
    assert_float_equal(auc, 0.75, 1e-12);
}

static void test_auc_ties(void **state) {
    /* positives {0.5, 0.9}, negatives {0.2, 0.5}: wins 1 + 0.5 + 1 + 1 = 3.5 of 4 */
    float s[] = {0.2f, 0.5f, 0.5f, 0.9f};
    int32_t y[] = {0, 1, 0, 1};
    double auc;
    assert_int_equal(fl_auc(&auc, s, y, 4), FL_OK);
    assert_float_equal(auc, 0.875, 1e-12);
    /* every score tied: exactly one half */
    float t[] = {0.3f, 0.3f, 0.3f, 0.3f, 0.3f};
    int32_t z[] = {1, 0, 1, 0, 0};
    assert_int_equal(fl_auc(&auc, t, z, 5), FL_OK);
    assert_float_equal(auc, 0.5, 1e-12);
    /* three tie groups: pos {1,2,2,3}, neg {1,1,2}
     * pos 1: 0 below + 0.5*2 = 1; pos 2 (x2): 2 below + 0.5*1 = 2.5 each; pos 3: 3
     * total 1 + 5 + 3 = 9 of 12 */
    float u[] = {1, 2, 2, 3, 1, 1, 2};
    int32_t w[] = {1, 1, 1, 1, 0, 0, 0};
    assert_int_equal(fl_auc(&auc, u, w, 7), FL_OK);
    assert_float_equal(auc, 0.75, 1e-12);
}

static void test_auc_one_class(void **state) {
    float s[] = {0.1f, 0.2f};
    int32_t y[] = {1, 1};
    double auc;
    assert_int_equal(fl_auc(&auc, s, y, 2), FL_EINVAL);
    assert_true(isnan(auc));
}

static void test_auc_ovr(void **state) {
    /* 3 classes, each perfectly separated by its own column: macro AUC 1 */
    float p[] = {0.8f, 0.1f, 0.1f, 0.1f, 0.8f, 0.1f, 0.1f, 0.1f, 0.8f, 0.7f, 0.2f, 0.1f};
    int32_t y[] = {0, 1, 2, 0};
    double auc;
    assert_int_equal(fl_auc_ovr(&auc, p, y, 4, 3), FL_OK);
    assert_float_equal(auc, 1.0, 1e-12);
}

static void test_loss_accuracy_confusion(void **state) {
    float p[] = {0.9f, 0.2f, 0.6f, 0.4f};
    int32_t y[] = {1, 0, 0, 1};
    double ll = -(log(0.9) + log(0.8) + log(0.4) + log(0.4)) / 4.0;
    assert_float_equal(fl_logloss(p, y, 4, 1), ll, 1e-6);
    assert_float_equal(fl_accuracy(p, y, 4, 1), 0.5, 1e-12);
    fl_confusion c = fl_confusion_at(p, y, 4, 0.5);
    assert_int_equal(c.tp, 1);
    assert_int_equal(c.fp, 1);
    assert_int_equal(c.tn, 1);
    assert_int_equal(c.fn, 1);
    /* multi-class: argmax */
    float q[] = {0.1f, 0.7f, 0.2f, 0.5f, 0.3f, 0.2f};
    int32_t z[] = {1, 2};
    assert_float_equal(fl_accuracy(q, z, 2, 3), 0.5, 1e-12);
    assert_float_equal(fl_logloss(q, z, 2, 3), -(log(0.7) + log(0.2)) / 2.0, 1e-6);
    /* probabilities of exactly 0 or 1 are clamped, never infinite */
    float e[] = {0.0f, 1.0f};
    int32_t ey[] = {1, 0};
    assert_true(isfinite(fl_logloss(e, ey, 2, 1)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auc_no_ties),
        cmocka_unit_test(test_auc_ties),
        cmocka_unit_test(test_auc_one_class),
        cmocka_unit_test(test_auc_ovr),
        cmocka_unit_test(test_loss_accuracy_confusion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
