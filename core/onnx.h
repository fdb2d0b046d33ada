/* onnx.h: a Cohort model as an ONNX file (DESIGN.md §4, `cohort export`).
 *
 * The graph takes the encoded feature vector (the federation's layout:
 * standardised numeric values, missing indicators, one-hot levels, as
 * core/dataset.h builds it) and gives class probabilities:
 *
 *   input  "features"    float (N, n_in)
 *   layer l: Gemm(x, W_l, b_l, transB = 1) -> z_l, then Relu for hidden layers
 *   output "probability" float (N, 1) = Sigmoid(z) for binary models,
 *                        float (N, k) = Softmax(z, axis 1) for k classes
 *
 * W_l is stored (out, in) row-major, as in the flat parameter vector, hence
 * transB.
 *
 * With an encoder (fitted: the federation's statistics), the graph starts
 * from the raw columns instead, one input per feature column named after it:
 * float (N, 1) for a numeric column (NaN = missing), string (N, 1) for a
 * categorical one (the schema's missing tokens = missing), and encodes them
 * exactly as core/dataset.c does (log, mean imputation, standardisation,
 * missing indicators, one-hot; a level the federation never saw encodes as
 * all zeros, where Cohort itself refuses it). See encoder_graph in onnx.c.
 *
 * IR version 7, default-domain opset 13 (and ai.onnx.ml opset 2 with an
 * encoder): what ONNX Runtime and the
 * onnx package of Debian 12 (1.12) both load. The protobuf encoding is
 * written here directly, field by field, after onnx/onnx.proto3 (the ONNX IR
 * specification, docs/IR.md); it needs no generated code. */
#ifndef FL_ONNX_H
#define FL_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "core/dataset.h"
#include "core/model.h"
#include "core/status.h"

#define FL_ONNX_IR_VERSION 7
#define FL_ONNX_OPSET 13
#define FL_ONNX_ML_OPSET 2 /* ai.onnx.ml: LabelEncoder with keys_strings / values_int64s */
#define FL_ONNX_MAX_BYTES ((int64_t)1 << 31) /* protobuf's message limit */

/* A metadata_props entry (both strings borrowed). */
typedef struct fl_onnx_prop {
    const char *key, *value;
} fl_onnx_prop;

/* Writes the ONNX ModelProto for spec and its flat parameters into *buf
 * (malloc'd, caller frees), model_version and the n_props metadata entries
 * included. FL_EINVAL for a spec this writer does not know or a model too
 * large for one protobuf message (checked before params is read), FL_ENOMEM. */
int fl_onnx_export(uint8_t **buf, size_t *len, const fl_model_spec *spec, const float *params,
                   const fl_encoder *enc, int64_t model_version, const fl_onnx_prop *props,
                   int n_props, char err[FL_ERR_LEN]);

#endif
