/* train_throughput.c: samples/s and GFLOP/s of one training step (forward,
 * backward, Adam) of a three-layer MLP at batch 256, next to the sgemm
 * GFLOP/s that the backend reaches on exactly the same GEMM shapes in the same
 * run. The ratio says how much of the achievable matrix throughput training
 * keeps after the element-wise work, staging and the optimiser.
 *
 *   train_throughput [--json] [--device cpu|cuda|auto] [--steps N] [--dp]
 *
 * --dp runs the DP-SGD step (per-example clipping; noise excluded) instead,
 * for the DP overhead figures of bench/dp_overhead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "core/model.h"
#include "core/rng.h"
#include "kernels/backend.h"

#define BATCH 256
#define REPS 7

static int step(fl_model *m, float *d_m1, float *d_m2, int64_t t, float clip) {
    const fl_backend_ops *o = m->be->ops;
    int rc = fl_model_forward(m, BATCH);
    if (!rc) rc = fl_model_backward(m, BATCH, 1.0f / BATCH, clip, 0);
    if (!rc)
        rc = o->adam_step(m->be, m->d_params, d_m1, d_m2, m->d_grads, m->n_params, 1e-3f, 0.9f,
                          0.999f, 1e-8f, 0.0f, t);
    return rc;
}

int main(int argc, char **argv) {
    int json = fl_bench_json(argc, argv), dp = 0, steps = 30;
    const char *device = "cpu";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dp"))
            dp = 1;
        else if (strcmp(argv[i], "--json")) {
            fprintf(stderr, "usage: train_throughput [--json] [--device D] [--steps N] [--dp]\n");
            return 2;
        }
    }
    if (steps < 5) steps = 5;
    char err[FL_ERR_LEN];
    enum fl_device dev;
    fl_backend *be = NULL;
    if (fl_device_parse(&dev, device) || fl_backend_open(&be, dev, err)) {
        fprintf(stderr, "train_throughput: cannot open device '%s': %s\n", device, err);
        return 1;
    }
    fl_model_spec spec;
    fl_model m;
    if (fl_model_spec_parse(&spec, "mlp:256,256", 784, 10, err) ||
        fl_model_init(&m, be, &spec, BATCH, 1, err)) {
        fprintf(stderr, "train_throughput: %s\n", err);
        return 1;
    }
    const fl_backend_ops *o = be->ops;
    size_t pb = (size_t)m.n_params * sizeof(float);
    float *d_m1, *d_m2, *h_x = malloc((size_t)BATCH * 784 * sizeof(float));
    int32_t h_y[BATCH];
    fl_rng r;
    fl_rng_seed(&r, 3);
    for (int i = 0; i < BATCH * 784; i++)
        h_x[i] = (float)fl_rng_uniform(&r);
    for (int i = 0; i < BATCH; i++)
        h_y[i] = (int32_t)fl_rng_below(&r, 10);
    if (o->alloc(be, (void **)&d_m1, pb) || o->alloc(be, (void **)&d_m2, pb) ||
        o->upload(be, m.d_act[0], h_x, (size_t)BATCH * 784 * sizeof(float)) ||
        o->upload(be, m.d_y, h_y, sizeof h_y)) {
        fprintf(stderr, "train_throughput: %s\n", fl_backend_error(be));
        return 1;
    }
    float clip = dp ? 1.0f : 0.0f;
    /* The same GEMMs alone: forward Z = A W^T, dW = dZ^T A, and dX = dZ W for
     * every layer but the first (training never needs the input's gradient). */
    double flop = 0.0;
    for (int l = 0; l < m.n_layers; l++) {
        double f = 2.0 * BATCH * m.layer[l].in * m.layer[l].out;
        flop += l == 0 ? 2.0 * f : 3.0 * f;
    }
    /* Warm up, then alternate timed blocks of training steps and of the bare
     * GEMMs, keeping the fastest block of each: both see the same machine
     * state, and a burst of other load cannot favour one side. */
    int64_t t = 0;
    for (int i = 0; i < 5; i++)
        step(&m, d_m1, d_m2, ++t, clip);
    o->sync(be);
    double t_step = 1e30, t_gemm = 1e30;
    for (int rep = 0; rep < REPS; rep++) {
        double t0 = fl_bench_now();
        for (int i = 0; i < steps; i++)
            if (step(&m, d_m1, d_m2, ++t, clip)) {
                fprintf(stderr, "train_throughput: %s\n", fl_backend_error(be));
                return 1;
            }
        o->sync(be);
        double dt = (fl_bench_now() - t0) / steps;
        t_step = dt < t_step ? dt : t_step;
        t0 = fl_bench_now();
        for (int i = 0; i < steps; i++) {
            for (int l = 0; l < m.n_layers; l++) {
                const fl_layer *L = &m.layer[l];
                o->sgemm(be, 1, 0, L->out, BATCH, L->in, 1.0f, m.d_params + L->w_off, L->in,
                         m.d_act[l], L->in, 0.0f, m.d_act[l + 1], L->out);
            }
            for (int l = m.n_layers - 1; l >= 0; l--) {
                const fl_layer *L = &m.layer[l];
                o->sgemm(be, 0, 1, L->in, L->out, BATCH, 1.0f, m.d_act[l], L->in, m.d_dz[l], L->out,
                         0.0f, m.d_grads + L->w_off, L->in);
                if (l > 0)
                    o->sgemm(be, 0, 0, L->in, BATCH, L->out, 1.0f, m.d_params + L->w_off, L->in,
                             m.d_dz[l], L->out, 0.0f, m.d_dz[l - 1], L->in);
            }
        }
        o->sync(be);
        dt = (fl_bench_now() - t0) / steps;
        t_gemm = dt < t_gemm ? dt : t_gemm;
    }
    double step_gflops = flop / t_step * 1e-9, gemm_gflops = flop / t_gemm * 1e-9;
    double ratio = step_gflops / gemm_gflops;
    if (json) {
        printf("{\"model\":\"mlp:256,256\",\"inputs\":784,\"classes\":10,\"batch\":%d,"
               "\"device\":\"%s\",\"dp\":%s,\"steps\":%d,\"step_ms\":%.4f,\"samples_per_s\":%.1f,"
               "\"step_gflops\":%.3f,\"sgemm_gflops\":%.3f,\"ratio\":%.4f}\n",
               BATCH, fl_backend_name(be), dp ? "true" : "false", steps, t_step * 1e3,
               BATCH / t_step, step_gflops, gemm_gflops, ratio);
    } else {
        printf("MLP 784-256-256-10, batch %d, %s%s, %d steps\n", BATCH, fl_backend_name(be),
               dp ? ", DP-SGD clipping" : "", steps);
        printf("  training step : %8.3f ms  %10.1f samples/s  %8.2f GFLOP/s\n", t_step * 1e3,
               BATCH / t_step, step_gflops);
        printf("  sgemm alone   : %8.3f ms  (same shapes)          %8.2f GFLOP/s\n", t_gemm * 1e3,
               gemm_gflops);
        printf("  ratio (step / sgemm throughput): %.3f\n", ratio);
    }
    o->free(be, d_m1);
    o->free(be, d_m2);
    free(h_x);
    fl_model_free(&m);
    fl_backend_close(be);
    return 0;
}
