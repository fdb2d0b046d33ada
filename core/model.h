/* model.h: the models Cohort trains (DESIGN.md §2, §7): logistic regression
 * and a multi-layer perceptron with ReLU hidden layers. Logistic regression is
 * the MLP with no hidden layer. Binary labels get one sigmoid output; k > 2
 * classes get k softmax outputs.
 *
 * A model's parameters are one flat float vector plus a spec: layer by layer,
 * W (out, in) row-major then b (out). That vector is what the federation
 * exchanges, averages and signs, and what the optimisers step over with a
 * single kernel call.
 *
 * All tensors live in backend memory (kernels/backend.h), so the same code
 * runs on the CPU and the GPU; the model borrows its backend. */
#ifndef FL_MODEL_H
#define FL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "kernels/backend.h"

#define FL_MAX_HIDDEN 8
#define FL_MAX_CLASSES 1024
#define FL_SPEC_LEN 128

typedef struct fl_model_spec {
    int n_in;                  /* encoded input features */
    int n_hidden;              /* 0 = logistic regression */
    int hidden[FL_MAX_HIDDEN]; /* hidden layer widths */
    int n_classes;             /* 2 = binary (one sigmoid output) */
} fl_model_spec;

/* Parses "logreg" or "mlp:H1,H2,..." (1..FL_MAX_HIDDEN widths in 1..65536)
 * for n_in inputs and n_classes classes. FL_EINVAL with the reason in err. */
int fl_model_spec_parse(fl_model_spec *spec, const char *text, int n_in, int n_classes,
                        char err[FL_ERR_LEN]);
/* "logreg" or "mlp:64,32" into buf (FL_SPEC_LEN bytes). */
void fl_model_spec_name(char buf[FL_SPEC_LEN], const fl_model_spec *spec);
/* Output units: 1 for binary, n_classes otherwise. */
int fl_model_spec_outputs(const fl_model_spec *spec);
int64_t fl_model_spec_nparams(const fl_model_spec *spec);
/* Multiply-adds of one forward pass for one example (GFLOP accounting). */
int64_t fl_model_spec_macs(const fl_model_spec *spec);

typedef struct fl_layer {
    int in, out;
    int64_t w_off, b_off; /* offsets of W (out, in) and b (out) in the flat vector */
} fl_layer;

typedef struct fl_model {
    fl_model_spec spec;
    fl_backend *be; /* borrowed */
    int n_layers;   /* n_hidden + 1 */
    fl_layer layer[FL_MAX_HIDDEN + 1];
    int64_t n_params;
    float *d_params; /* (n_params) */
    float *d_grads;  /* (n_params) */
    /* Workspace for batches of up to max_batch rows. */
    int max_batch;
    float *d_act[FL_MAX_HIDDEN + 2];           /* act[0] input (B, n_in); act[l+1] output of layer l
                                                  (ReLU applied for hidden layers; logits for the last) */
    float *d_dz[FL_MAX_HIDDEN + 1];            /* dL/d(pre-activation) of layer l (B, out_l) */
    float *d_loss;                             /* (B) per-row loss */
    int32_t *d_y;                              /* (B) labels */
    float *d_sq_a, *d_sq_g, *d_norm, *d_clipf; /* (B) DP-SGD per-example norm work */
} fl_model;

/* Allocates a model for spec on be with workspace for max_batch rows.
 * Parameters: zeros for logistic regression; He-uniform weights (seeded,
 * deterministic) and zero biases for the MLP. Caller owns *m (fl_model_free). */
int fl_model_init(fl_model *m, fl_backend *be, const fl_model_spec *spec, int max_batch,
                  uint64_t seed, char err[FL_ERR_LEN]);
void fl_model_free(fl_model *m);

/* Host <-> backend copies of the flat parameter vector (n_params floats). */
int fl_model_get_params(const fl_model *m, float *params);
int fl_model_set_params(fl_model *m, const float *params);

/* Forward pass over the rows already in d_act[0] (rows <= max_batch). */
int fl_model_forward(fl_model *m, int rows);

/* Loss and gradient for the rows in d_act[0] with labels in d_y, after
 * fl_model_forward. Writes per-row losses to d_loss. The gradient of
 * scale * sum_i loss_i is added to d_grads when accumulate is 1, stored
 * otherwise.
 *
 * clip > 0 turns on per-example clipping (DP-SGD, DESIGN.md §7): each example's
 * whole gradient is scaled by min(1, clip/||g_i||) before it enters the sum,
 * with ||g_i|| from the dense-layer identity ||g a^T||^2 + ||g||^2 =
 * (||a||^2 + 1) ||g||^2, so per-example gradients are never materialised and
 * the GEMMs are the same as without clipping. */
int fl_model_backward(fl_model *m, int rows, float scale, float clip, int accumulate);

/* Class probabilities for n rows of X (n, n_in) on the host: probs is (n, 1)
 * for binary models (P(class 1)) and (n, n_classes) otherwise. */
int fl_model_predict(fl_model *m, float *probs, const float *X, int64_t n);

/* ---- serialisation: spec + flat vector ---- */

/* A self-describing byte string: "COHORTM1" magic, the spec, n_params, the
 * float32 parameters in little-endian order. *buf is malloc'd (caller frees). */
int fl_model_serialize(uint8_t **buf, size_t *len, const fl_model_spec *spec, const float *params);
/* Parses what fl_model_serialize wrote. *params is malloc'd (caller frees).
 * FL_EPARSE with the reason for a truncated or inconsistent buffer, or a
 * non-finite parameter. */
int fl_model_deserialize(fl_model_spec *spec, float **params, const uint8_t *buf, size_t len,
                         char err[FL_ERR_LEN]);

#endif
