/* onnx.c: the ONNX writer of onnx.h. Protobuf's wire format is small enough
 * to write by hand: a field is a key (field number << 3 | wire type), then a
 * varint (type 0), a length-delimited byte string or nested message (type 2)
 * or four little-endian bytes (type 5). Nested messages are built in their
 * own buffer and appended with their length. Field numbers are those of
 * onnx/onnx.proto3 (ModelProto, GraphProto, NodeProto, AttributeProto,
 * TensorProto, ValueInfoProto, TypeProto, TensorShapeProto,
 * OperatorSetIdProto, StringStringEntryProto). */
#include "core/onnx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"

enum { WT_VARINT = 0, WT_LEN = 2 };
enum { ONNX_FLOAT = 1 }; /* TensorProto.DataType */
enum { ATTR_INT = 2 };   /* AttributeProto.AttributeType */
#define LAYER_NAME_LEN 32

typedef struct pb {
    uint8_t *p;
    size_t n, cap;
    int oom;
} pb;

static void pb_put(pb *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void pb_varint(pb *b, uint64_t v) {
    uint8_t t[10];
    size_t n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    pb_put(b, t, n);
}

static void pb_key(pb *b, int field, int wire) {
    pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire);
}

/* int64 and int32 fields: negative values are ten-byte varints. */
static void pb_int(pb *b, int field, int64_t v) {
    pb_key(b, field, WT_VARINT);
    pb_varint(b, (uint64_t)v);
}

static void pb_bytes(pb *b, int field, const void *d, size_t n) {
    pb_key(b, field, WT_LEN);
    pb_varint(b, n);
    pb_put(b, d, n);
}

static void pb_str(pb *b, int field, const char *s) {
    pb_bytes(b, field, s, strlen(s));
}

/* Appends inner as field `field` of b and frees it. */
static void pb_msg(pb *b, int field, pb *inner) {
    if (inner->oom) b->oom = 1;
    pb_bytes(b, field, inner->p, inner->n);
    free(inner->p);
    memset(inner, 0, sizeof *inner);
}

/* TensorProto: dims 1, data_type 2, name 8, raw_data 9 (little-endian). */
static void tensor(pb *graph, const char *name, const float *v, int rows, int cols) {
    pb t = {0};
    if (rows > 0) pb_int(&t, 1, rows);
    pb_int(&t, 1, cols);
    pb_int(&t, 2, ONNX_FLOAT);
    pb_str(&t, 8, name);
    size_t n = (size_t)(rows > 0 ? rows : 1) * (size_t)cols;
    pb_key(&t, 9, WT_LEN);
    pb_varint(&t, n * 4);
    for (size_t i = 0; i < n; i++) {
        uint8_t le[4];
        uint32_t u;
        memcpy(&u, &v[i], 4);
        fl_put_le32(le, u);
        pb_put(&t, le, 4);
    }
    pb_msg(graph, 5, &t); /* GraphProto.initializer */
}

/* ValueInfoProto of a float tensor (N, cols): name 1, type 2 -> TypeProto
 * tensor_type 1 -> elem_type 1, shape 2 -> dim 1 (dim_param 2 | dim_value 1). */
static void value_info(pb *graph, int field, const char *name, int cols) {
    pb d0 = {0}, d1 = {0}, shape = {0}, tt = {0}, type = {0}, vi = {0};
    pb_str(&d0, 2, "N");
    pb_int(&d1, 1, cols);
    pb_msg(&shape, 1, &d0);
    pb_msg(&shape, 1, &d1);
    pb_int(&tt, 1, ONNX_FLOAT);
    pb_msg(&tt, 2, &shape);
    pb_msg(&type, 1, &tt);
    pb_str(&vi, 1, name);
    pb_msg(&vi, 2, &type);
    pb_msg(graph, field, &vi);
}

/* NodeProto: input 1, output 2, name 3, op_type 4, attribute 5 (one INT
 * attribute when attr is not NULL: name 1, i 3, type 20). */
static void node(pb *graph, const char *op, const char *const *in, int n_in, const char *out,
                 const char *attr, int64_t attr_value) {
    pb nd = {0};
    for (int i = 0; i < n_in; i++)
        pb_str(&nd, 1, in[i]);
    pb_str(&nd, 2, out);
    pb_str(&nd, 3, out); /* each node is named after its output */
    pb_str(&nd, 4, op);
    if (attr) {
        pb a = {0};
        pb_str(&a, 1, attr);
        pb_int(&a, 3, attr_value);
        pb_int(&a, 20, ATTR_INT);
        pb_msg(&nd, 5, &a);
    }
    pb_msg(graph, 1, &nd); /* GraphProto.node */
}

int fl_onnx_export(uint8_t **buf, size_t *len, const fl_model_spec *spec, const float *params,
                   int64_t model_version, const fl_onnx_prop *props, int n_props,
                   char err[FL_ERR_LEN]) {
    *buf = NULL;
    *len = 0;
    if (spec->n_in < 1 || spec->n_hidden < 0 || spec->n_hidden > FL_MAX_HIDDEN ||
        spec->n_classes < 2 || fl_model_spec_nparams(spec) < 1)
        return fl_seterr(err, FL_EINVAL, "onnx: not a model spec this writer knows");
    /* A protobuf message is at most 2 GiB; tensors beyond that would need
     * ONNX's external data files, which this writer does not produce. */
    if (fl_model_spec_nparams(spec) > (FL_ONNX_MAX_BYTES - (1 << 20)) / 4)
        return fl_seterr(err, FL_EINVAL,
                         "onnx: %lld parameters do not fit in one ONNX file (2 GiB protobuf "
                         "limit; external tensor data is not supported)",
                         (long long)fl_model_spec_nparams(spec));
    const int outputs = fl_model_spec_outputs(spec);
    pb graph = {0}, model = {0};
    char prev[LAYER_NAME_LEN] = "features";
    int64_t off = 0;
    for (int l = 0; l <= spec->n_hidden; l++) {
        int in = l == 0 ? spec->n_in : spec->hidden[l - 1];
        int out = l == spec->n_hidden ? outputs : spec->hidden[l];
        char w[LAYER_NAME_LEN], b[LAYER_NAME_LEN], z[LAYER_NAME_LEN];
        snprintf(w, sizeof w, "W%d", l);
        snprintf(b, sizeof b, "b%d", l);
        snprintf(z, sizeof z, l == spec->n_hidden ? "logits" : "z%d", l);
        tensor(&graph, w, params + off, out, in);
        off += (int64_t)out * in;
        tensor(&graph, b, params + off, 0, out);
        off += out;
        const char *gin[3] = {prev, w, b};
        node(&graph, "Gemm", gin, 3, z, "transB", 1);
        if (l < spec->n_hidden) {
            const char *rin[1] = {z};
            snprintf(prev, sizeof prev, "h%d", l);
            node(&graph, "Relu", rin, 1, prev, NULL, 0);
        }
    }
    const char *lin[1] = {"logits"};
    if (outputs == 1)
        node(&graph, "Sigmoid", lin, 1, "probability", NULL, 0);
    else
        node(&graph, "Softmax", lin, 1, "probability", "axis", 1);
    pb_str(&graph, 2, "cohort");
    value_info(&graph, 11, "features", spec->n_in);
    value_info(&graph, 12, "probability", outputs);

    pb_int(&model, 1, FL_ONNX_IR_VERSION);
    pb_str(&model, 2, "cohort");
    pb_str(&model, 3, "1");
    pb_str(&model, 4, "org.cohort");
    pb_int(&model, 5, model_version);
    char name[FL_SPEC_LEN], doc[FL_SPEC_LEN + 80];
    fl_model_spec_name(name, spec);
    snprintf(doc, sizeof doc, "Cohort %s model: encoded features in, class probabilities out",
             name);
    pb_str(&model, 6, doc);
    pb_msg(&model, 7, &graph);
    pb opset = {0};
    pb_str(&opset, 1, "");
    pb_int(&opset, 2, FL_ONNX_OPSET);
    pb_msg(&model, 8, &opset);
    for (int i = 0; i < n_props; i++) {
        pb kv = {0};
        pb_str(&kv, 1, props[i].key);
        pb_str(&kv, 2, props[i].value);
        pb_msg(&model, 14, &kv);
    }
    if (model.oom) {
        free(model.p);
        return fl_seterr(err, FL_ENOMEM, "onnx: out of memory");
    }
    *buf = model.p;
    *len = model.n;
    return FL_OK;
}
