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
enum { ONNX_FLOAT = 1, ONNX_STRING = 8 };               /* TensorProto.DataType */
enum { ATTR_INT = 2, ATTR_INTS = 7, ATTR_STRINGS = 8 }; /* AttributeProto.AttributeType */
#define LAYER_NAME_LEN 32
#define FL_ONNX_NAME_LEN 160

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

/* ValueInfoProto of a tensor (N, cols) of elem_type: name 1, type 2 -> TypeProto
 * tensor_type 1 -> elem_type 1, shape 2 -> dim 1 (dim_param 2 | dim_value 1). */
static void value_info(pb *graph, int field, const char *name, int elem_type, int cols) {
    pb d0 = {0}, d1 = {0}, shape = {0}, tt = {0}, type = {0}, vi = {0};
    pb_str(&d0, 2, "N");
    pb_int(&d1, 1, cols);
    pb_msg(&shape, 1, &d0);
    pb_msg(&shape, 1, &d1);
    pb_int(&tt, 1, elem_type);
    pb_msg(&tt, 2, &shape);
    pb_msg(&type, 1, &tt);
    pb_str(&vi, 1, name);
    pb_msg(&vi, 2, &type);
    pb_msg(graph, field, &vi);
}

/* An attribute: INT (i), INTS or STRINGS. */
typedef struct attr {
    const char *name;
    int type; /* ATTR_INT | ATTR_INTS | ATTR_STRINGS */
    int64_t i;
    const int64_t *ints;
    const char *const *strings;
    int n;
} attr;

/* AttributeProto: name 1, i 3, ints 8, strings 9, type 20. */
static void attribute(pb *nd, const attr *a) {
    pb m = {0};
    pb_str(&m, 1, a->name);
    if (a->type == ATTR_INT) pb_int(&m, 3, a->i);
    for (int k = 0; a->type == ATTR_INTS && k < a->n; k++)
        pb_int(&m, 8, a->ints[k]);
    for (int k = 0; a->type == ATTR_STRINGS && k < a->n; k++)
        pb_str(&m, 9, a->strings[k]);
    pb_int(&m, 20, a->type);
    pb_msg(nd, 5, &m);
}

/* NodeProto: input 1, output 2, name 3, op_type 4, attribute 5, domain 7. */
static void node_ex(pb *graph, const char *domain, const char *op, const char *const *in, int n_in,
                    const char *out, const attr *attrs, int n_attrs) {
    pb nd = {0};
    for (int i = 0; i < n_in; i++)
        pb_str(&nd, 1, in[i]);
    pb_str(&nd, 2, out);
    pb_str(&nd, 3, out); /* each node is named after its output */
    pb_str(&nd, 4, op);
    for (int i = 0; i < n_attrs; i++)
        attribute(&nd, &attrs[i]);
    if (domain) pb_str(&nd, 7, domain);
    pb_msg(graph, 1, &nd); /* GraphProto.node */
}

/* A default-domain node with at most one INT attribute. */
static void node(pb *graph, const char *op, const char *const *in, int n_in, const char *out,
                 const char *attr_name, int64_t attr_value) {
    attr a = {.name = attr_name, .type = ATTR_INT, .i = attr_value};
    node_ex(graph, NULL, op, in, n_in, out, &a, attr_name ? 1 : 0);
}

/* A float scalar initializer (dims [1]). */
static void scalar(pb *graph, const char *name, double v) {
    float f = (float)v;
    tensor(graph, name, &f, 0, 1);
}

/* The encoder of core/dataset.h as graph nodes, from one input per column
 * (numeric: float (N, 1), NaN = missing; categorical: string (N, 1)) to
 * "features" (N, d), the model's input. Per numeric column X:
 *   X.nan = IsNaN(X); [X.p1 = Add(X, one); X.log = Log(X.p1)] for `log`;
 *   X.enc = Where(X.nan, zero, Div(Sub(v, X.mean), X.std))  (mean imputation);
 *   X.ind = Cast(X.nan, FLOAT) for a missing indicator.
 * Per categorical column K: K.idx = ai.onnx.ml LabelEncoder(K) mapping each
 * level to its index and the missing tokens to the mode (unknown: -1), then
 * K.enc = Cast(Equal(K.idx, K.range), FLOAT) with K.range = [0 .. L-1]:
 * one-hot, all zeros for a level the federation never saw. Concat(axis 1)
 * in encoder order. */
static int encoder_graph(pb *graph, const fl_encoder *enc, char *err) {
    int n_parts = 0;
    char(*parts)[FL_ONNX_NAME_LEN] = calloc((size_t)enc->n_cols * 2 + 1, sizeof *parts);
    if (!parts) return fl_seterr(err, FL_ENOMEM, "onnx: out of memory");
    scalar(graph, "cohort.one", 1.0);
    scalar(graph, "cohort.zero", 0.0);
    int rc = FL_OK;
    for (int c = 0; c < enc->n_cols && !rc; c++) {
        const fl_enc_col *col = &enc->cols[c];
        char n[6][FL_ONNX_NAME_LEN];
        const char *x = col->name;
        if (strlen(x) + 8 >= FL_ONNX_NAME_LEN) {
            rc = fl_seterr(err, FL_EINVAL, "onnx: column name '%.40s...' is too long", x);
            break;
        }
        if (col->categorical) {
            int nk = col->n_levels + enc->n_missing;
            const char **keys = malloc((size_t)nk * sizeof *keys);
            int64_t *vals = malloc((size_t)nk * sizeof *vals);
            float *range = malloc((size_t)col->n_levels * sizeof *range);
            if (!keys || !vals || !range) rc = fl_seterr(err, FL_ENOMEM, "onnx: out of memory");
            for (int k = 0; !rc && k < col->n_levels; k++) {
                keys[k] = col->levels[k];
                vals[k] = k;
                range[k] = (float)k;
            }
            for (int k = 0; !rc && k < enc->n_missing; k++) {
                keys[col->n_levels + k] = enc->missing[k];
                vals[col->n_levels + k] = col->mode;
            }
            if (!rc) {
                snprintf(n[0], sizeof n[0], "%s.idx", x);
                snprintf(n[1], sizeof n[1], "%s.range", x);
                snprintf(n[2], sizeof n[2], "%s.onehot", x);
                snprintf(n[3], sizeof n[3], "%s.idxf", x);
                snprintf(n[4], sizeof n[4], "%s.enc", x);
                attr le[3] = {
                    {.name = "default_int64", .type = ATTR_INT, .i = -1},
                    {.name = "keys_strings", .type = ATTR_STRINGS, .strings = keys, .n = nk},
                    {.name = "values_int64s", .type = ATTR_INTS, .ints = vals, .n = nk}};
                const char *in0[1] = {x};
                node_ex(graph, "ai.onnx.ml", "LabelEncoder", in0, 1, n[0], le, 3);
                /* Compared as floats: level indices are small integers, exact. */
                tensor(graph, n[1], range, 1, col->n_levels);
                const char *in1[1] = {n[0]};
                node(graph, "Cast", in1, 1, n[3], "to", ONNX_FLOAT);
                const char *in2[2] = {n[3], n[1]};
                node(graph, "Equal", in2, 2, n[2], NULL, 0);
                const char *in3[1] = {n[2]};
                node(graph, "Cast", in3, 1, n[4], "to", ONNX_FLOAT);
                snprintf(parts[n_parts++], FL_ONNX_NAME_LEN, "%s", n[4]);
            }
            free(keys);
            free(vals);
            free(range);
            continue;
        }
        snprintf(n[0], sizeof n[0], "%s.nan", x);
        snprintf(n[1], sizeof n[1], "%s.mean", x);
        snprintf(n[2], sizeof n[2], "%s.std", x);
        snprintf(n[3], sizeof n[3], "%s.z", x);
        snprintf(n[4], sizeof n[4], "%s.enc", x);
        scalar(graph, n[1], col->mean);
        scalar(graph, n[2], col->std);
        const char *in0[1] = {x};
        node(graph, "IsNaN", in0, 1, n[0], NULL, 0);
        char v[FL_ONNX_NAME_LEN], p1[FL_ONNX_NAME_LEN], ctr[FL_ONNX_NAME_LEN];
        snprintf(v, sizeof v, "%s", x);
        if (col->log) {
            snprintf(p1, sizeof p1, "%s.p1", x);
            snprintf(v, sizeof v, "%s.log", x);
            const char *a[2] = {x, "cohort.one"};
            node(graph, "Add", a, 2, p1, NULL, 0);
            const char *l[1] = {p1};
            node(graph, "Log", l, 1, v, NULL, 0);
        }
        snprintf(ctr, sizeof ctr, "%s.c", x);
        const char *sub[2] = {v, n[1]};
        node(graph, "Sub", sub, 2, ctr, NULL, 0);
        const char *dv[2] = {ctr, n[2]};
        node(graph, "Div", dv, 2, n[3], NULL, 0);
        const char *wh[3] = {n[0], "cohort.zero", n[3]};
        node(graph, "Where", wh, 3, n[4], NULL, 0);
        snprintf(parts[n_parts++], FL_ONNX_NAME_LEN, "%s", n[4]);
        if (col->indicator) {
            snprintf(n[5], sizeof n[5], "%s.ind", x);
            const char *nan[1] = {n[0]};
            node(graph, "Cast", nan, 1, n[5], "to", ONNX_FLOAT);
            snprintf(parts[n_parts++], FL_ONNX_NAME_LEN, "%s", n[5]);
        }
    }
    if (!rc) {
        const char **in = malloc((size_t)n_parts * sizeof *in);
        if (!in) {
            rc = fl_seterr(err, FL_ENOMEM, "onnx: out of memory");
        } else {
            for (int i = 0; i < n_parts; i++)
                in[i] = parts[i];
            node(graph, "Concat", in, n_parts, "features", "axis", 1);
            free(in);
        }
    }
    free(parts);
    return rc;
}

int fl_onnx_export(uint8_t **buf, size_t *len, const fl_model_spec *spec, const float *params,
                   const fl_encoder *enc, int64_t model_version, const fl_onnx_prop *props,
                   int n_props, char err[FL_ERR_LEN]) {
    *buf = NULL;
    *len = 0;
    if (enc && (!enc->finished || enc->n_features != spec->n_in))
        return fl_seterr(err, FL_EINVAL,
                         "onnx: the encoder gives %d features, the model takes %d%s",
                         enc->n_features, spec->n_in, enc->finished ? "" : " (encoder not fitted)");
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
    int rc = enc ? encoder_graph(&graph, enc, err) : FL_OK;
    if (rc) {
        free(graph.p);
        return rc;
    }
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
    if (enc)
        for (int c = 0; c < enc->n_cols; c++)
            value_info(&graph, 11, enc->cols[c].name,
                       enc->cols[c].categorical ? ONNX_STRING : ONNX_FLOAT, 1);
    else
        value_info(&graph, 11, "features", ONNX_FLOAT, spec->n_in);
    value_info(&graph, 12, "probability", ONNX_FLOAT, outputs);

    pb_int(&model, 1, FL_ONNX_IR_VERSION);
    pb_str(&model, 2, "cohort");
    pb_str(&model, 3, "1");
    pb_str(&model, 4, "org.cohort");
    pb_int(&model, 5, model_version);
    char name[FL_SPEC_LEN], doc[FL_SPEC_LEN + 160];
    fl_model_spec_name(name, spec);
    snprintf(doc, sizeof doc, "Cohort %s model: %s in, class probabilities out", name,
             enc ? "raw columns (NaN or a missing token = missing)" : "encoded features");
    pb_str(&model, 6, doc);
    pb_msg(&model, 7, &graph);
    pb opset = {0};
    pb_str(&opset, 1, "");
    pb_int(&opset, 2, FL_ONNX_OPSET);
    pb_msg(&model, 8, &opset);
    if (enc) {
        pb ml = {0};
        pb_str(&ml, 1, "ai.onnx.ml");
        pb_int(&ml, 2, FL_ONNX_ML_OPSET);
        pb_msg(&model, 8, &ml);
    }
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
