/* test_onnx.c: core/onnx.c on its own. The graph itself is checked end to
 * end, by the onnx package and against the model's predictions, in
 * tests/integration/test_cli_export.c; here: the protobuf framing of a tiny
 * model read back field by field, and the refusals (a spec the writer does
 * not know, a model beyond protobuf's 2 GiB). */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "core/onnx.h"

/* Reads a varint at *p (within end). */
static uint64_t varint(const uint8_t **p, const uint8_t *end) {
    uint64_t v = 0;
    for (int s = 0; *p < end && s < 64; s += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return v;
    }
    fail_msg("truncated varint");
    return 0;
}

/* The top-level ModelProto fields: every field is well-framed up to the
 * end, and ir_version (1), producer_name (2), model_version (5), graph (7),
 * opset_import (8) and metadata_props (14) are there. */
static void test_framing(void **state) {
    (void)state;
    fl_model_spec spec = {.n_in = 3, .n_hidden = 1, .hidden = {2}, .n_classes = 2};
    float params[11]; /* 3x2 + 2, then 2x1 + 1 */
    assert_int_equal(fl_model_spec_nparams(&spec), 11);
    for (int i = 0; i < 11; i++)
        params[i] = (float)i / 4;
    fl_onnx_prop props[] = {{"cohort.round", "4"}};
    uint8_t *buf;
    size_t len;
    char err[FL_ERR_LEN] = "";
    assert_int_equal(fl_onnx_export(&buf, &len, &spec, params, NULL, 4, props, 1, err), FL_OK);
    const uint8_t *p = buf, *end = buf + len;
    int seen[16] = {0};
    uint64_t ir = 0, version = 0;
    size_t graph_len = 0;
    while (p < end) {
        uint64_t key = varint(&p, end);
        int field = (int)(key >> 3), wire = (int)(key & 7);
        assert_true(field > 0 && field < 16);
        seen[field]++;
        if (wire == 0) {
            uint64_t v = varint(&p, end);
            if (field == 1) ir = v;
            if (field == 5) version = v;
        } else {
            assert_int_equal(wire, 2);
            uint64_t n = varint(&p, end);
            assert_true(n <= (uint64_t)(end - p));
            if (field == 2) assert_memory_equal(p, "cohort", 6);
            if (field == 7) graph_len = (size_t)n;
            p += n;
        }
    }
    assert_true(p == end);
    assert_int_equal(ir, FL_ONNX_IR_VERSION);
    assert_int_equal(version, 4);
    assert_int_equal(seen[7], 1);
    assert_int_equal(seen[8], 1);
    assert_int_equal(seen[14], 1);
    /* The graph holds the 11 float32 parameters as raw little-endian bytes. */
    assert_true(graph_len > 11 * 4);
    free(buf);
}

static void test_refusals(void **state) {
    (void)state;
    uint8_t *buf = (uint8_t *)"";
    size_t len = 1;
    char err[FL_ERR_LEN] = "";
    fl_model_spec bad = {.n_in = 0, .n_classes = 2};
    assert_int_equal(fl_onnx_export(&buf, &len, &bad, NULL, NULL, 0, NULL, 0, err), FL_EINVAL);
    assert_null(buf);
    assert_int_equal(len, 0);
    /* 65536 x 65536 x 3 layers: about 12.9 G parameters. params is never
     * read: the size is refused first. */
    fl_model_spec huge = {.n_in = 65536, .n_hidden = 2, .hidden = {65536, 65536}, .n_classes = 2};
    assert_int_equal(fl_onnx_export(&buf, &len, &huge, NULL, NULL, 0, NULL, 0, err), FL_EINVAL);
    if (!strstr(err, "2 GiB")) fail_msg("error '%s'", err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
