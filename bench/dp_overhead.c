/* dp_overhead.c: the cost of DP-SGD against non-private training, measured
 * in the same run on the same model, batch and backend (DESIGN.md §7, §13):
 * the MLP 784-256-256-10 at batch 256 on the CPU backend.
 *
 *   dp_overhead [--json] [--steps N] [--reps R] [--threads T] [--rows N]
 *
 * Three steps, each exactly what core/train.c does for one batch:
 *  - plain: forward, backward (mean gradient), Adam;
 *  - clip:  forward, backward with per-example clipping (the norm identity of
 *           DESIGN.md §7), scaling by 1/B, Adam; no noise;
 *  - dp:    forward, clipped backward, float-safe noise added and snapped to
 *           the grid with the 1/B scaling (crypto/dpnoise fl_dpnoise_add),
 *           Adam. The noise vector of each step is drawn by dpnoise's worker
 *           thread while the previous step computes (it does not depend on
 *           the data); the DP step waits for it whenever it is not ready, so
 *           no noise work is left out, only overlapped.
 * The batch is staged once for all three (staging is the same for DP and
 * non-DP); the Poisson coin draw that a DP step needs on top of that depends
 * on the data set's size, so it is timed on its own (--rows, default the
 * 54000 rows of Fashion-MNIST's training split) and reported as
 * ratio_with_sampling as well. BLAS runs on T threads (default 1) for every
 * step kind, so the DP side's worker thread has the machine's other core on
 * a two-core machine and the comparison stays fair. Blocks of the step kinds
 * alternate and the fastest block of each is kept (bench/train_throughput.c).
 * Also reported: the noise alone on one core (noise_ms), the DP step with the
 * noise drawn inline on the same thread (ratio_inline), and GFLOP/s of the
 * steps against the sgemm GFLOP/s of the same GEMM shapes. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "core/model.h"
#include "core/rng.h"
#include "crypto/csprng.h"
#include "crypto/dpnoise.h"
#include "kernels/backend.h"

#define BATCH 256
#define NOISE_MULT 1.0
#define CLIP 1.0

enum { PLAIN = 0, CLIPPED = 1, DP = 2, DP_INLINE = 3, GEMM = 4, KINDS = 5 };

typedef struct bench {
    fl_model m;
    float *d_m1, *d_m2;
    int64_t t;
    fl_dpnoise *bg, *inl; /* worker-thread and inline noise */
    float clip_eff;
    char err[FL_ERR_LEN];
} bench;

static int adam(bench *b) {
    fl_model *m = &b->m;
    return m->be->ops->adam_step(m->be, m->d_params, b->d_m1, b->d_m2, m->d_grads, m->n_params,
                                 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, ++b->t);
}

static int step(bench *b, int kind) {
    fl_model *m = &b->m;
    const fl_backend_ops *o = m->be->ops;
    int rc = fl_model_forward(m, BATCH);
    if (rc) return rc;
    if (kind == PLAIN) {
        rc = fl_model_backward(m, BATCH, 1.0f / BATCH, 0.0f, 0);
    } else {
        rc = fl_model_backward(m, BATCH, 1.0f, b->clip_eff, 0);
        if (!rc && kind == CLIPPED) rc = o->scal(m->be, m->d_grads, 1.0f / BATCH, m->n_params);
        if (!rc && kind != CLIPPED)
            /* CPU backend: d_grads is host memory, as core/train.c uses it */
            rc = fl_dpnoise_add(kind == DP ? b->bg : b->inl, m->d_grads, (size_t)m->n_params,
                                NOISE_MULT * CLIP, 1.0f / BATCH, b->err);
    }
    return rc ? rc : adam(b);
}

/* The GEMMs of one training step alone (bench/train_throughput.c). */
static void gemms(fl_model *m) {
    const fl_backend_ops *o = m->be->ops;
    fl_backend *be = m->be;
    for (int l = 0; l < m->n_layers; l++) {
        const fl_layer *L = &m->layer[l];
        o->sgemm(be, 1, 0, L->out, BATCH, L->in, 1.0f, m->d_params + L->w_off, L->in, m->d_act[l],
                 L->in, 0.0f, m->d_act[l + 1], L->out);
    }
    for (int l = m->n_layers - 1; l >= 0; l--) {
        const fl_layer *L = &m->layer[l];
        o->sgemm(be, 0, 1, L->in, L->out, BATCH, 1.0f, m->d_act[l], L->in, m->d_dz[l], L->out, 0.0f,
                 m->d_grads + L->w_off, L->in);
        if (l > 0)
            o->sgemm(be, 0, 0, L->in, BATCH, L->out, 1.0f, m->d_params + L->w_off, L->in,
                     m->d_dz[l], L->out, 0.0f, m->d_dz[l - 1], L->in);
    }
}

/* One step's Poisson coins for a set of `rows` rows, as core/train.c draws
 * them (one CSPRNG word per row, compared with q 2^32). */
static double poisson_ms(long rows, int reps) {
    fl_csprng *r = NULL;
    if (fl_csprng_new(&r, NULL)) return NAN;
    uint32_t *coins = malloc((size_t)rows * sizeof *coins);
    int32_t *idx = malloc((size_t)rows * sizeof *idx);
    uint64_t thresh = (uint64_t)ldexp((double)BATCH / (double)rows, 32);
    double best = INFINITY;
    volatile int64_t sink = 0;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = fl_bench_now();
        fl_csprng_bytes(r, coins, (size_t)rows * sizeof *coins);
        int64_t k = 0;
        for (long i = 0; i < rows; i++)
            if ((uint64_t)coins[i] < thresh) idx[k++] = (int32_t)i;
        sink += k;
        best = fmin(best, fl_bench_now() - t0);
    }
    free(coins);
    free(idx);
    fl_csprng_free(r);
    return best * 1e3;
}

int main(int argc, char **argv) {
    int json = fl_bench_json(argc, argv), steps = 40, reps = 9, threads = 1;
    long rows = 54000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = atol(argv[++i]);
        else if (strcmp(argv[i], "--json")) {
            fprintf(stderr, "usage: dp_overhead [--json] [--steps N] [--reps R] [--threads T] "
                            "[--rows N]\n");
            return 2;
        }
    }
    if (steps < 5) steps = 5;
    if (reps < 3) reps = 3;
    if (threads < 1) threads = 1;
    if (rows < BATCH) rows = BATCH;
    openblas_set_num_threads(threads);

    int rc = 1;
    bench b;
    memset(&b, 0, sizeof b);
    fl_backend *be = NULL;
    float *h_x = malloc((size_t)BATCH * 784 * sizeof(float));
    int32_t h_y[BATCH];
    fl_model_spec spec;
    if (fl_backend_cpu_open(&be, b.err) ||
        fl_model_spec_parse(&spec, "mlp:256,256", 784, 10, b.err) ||
        fl_model_init(&b.m, be, &spec, BATCH, 1, b.err) ||
        fl_dpnoise_new(&b.bg, NULL, FL_DPNOISE_BACKGROUND, b.err) ||
        fl_dpnoise_new(&b.inl, NULL, 0, b.err))
        goto cleanup;
    fl_model *m = &b.m;
    const fl_backend_ops *o = be->ops;
    size_t np = (size_t)m->n_params, pb = np * sizeof(float);
    /* the clip core/train.c applies with a float-safe noise source */
    b.clip_eff =
        (float)(CLIP * (1.0 - NOISE_MULT * sqrt((double)np) * ldexp(1.0, -FL_DPNOISE_GRID_BITS)));
    fl_rng r;
    fl_rng_seed(&r, 3);
    for (int i = 0; i < BATCH * 784; i++)
        h_x[i] = (float)fl_rng_uniform(&r);
    for (int i = 0; i < BATCH; i++)
        h_y[i] = (int32_t)fl_rng_below(&r, 10);
    if (o->alloc(be, (void **)&b.d_m1, pb) || o->alloc(be, (void **)&b.d_m2, pb) ||
        o->upload(be, m->d_act[0], h_x, (size_t)BATCH * 784 * sizeof(float)) ||
        o->upload(be, m->d_y, h_y, sizeof h_y)) {
        snprintf(b.err, sizeof b.err, "%s", fl_backend_error(be));
        goto cleanup;
    }
    double flop = 0.0;
    for (int l = 0; l < m->n_layers; l++) {
        double f = 2.0 * BATCH * m->layer[l].in * m->layer[l].out;
        flop += l == 0 ? 2.0 * f : 3.0 * f;
    }
    /* the noise alone, one core */
    int32_t *z = malloc(np * sizeof *z);
    double t_noise = INFINITY;
    for (int rep = 0; rep < reps; rep++) {
        double t0 = fl_bench_now();
        if (fl_dpnoise_sample(b.inl, z, np, NOISE_MULT * CLIP, b.err)) goto cleanup;
        t_noise = fmin(t_noise, fl_bench_now() - t0);
    }
    free(z);
    fl_dpnoise_prefetch(b.bg, np, NOISE_MULT * CLIP, NULL);
    for (int k = PLAIN; k <= DP_INLINE; k++)
        for (int i = 0; i < 5; i++)
            if (step(&b, k)) goto cleanup;
    double best[KINDS];
    for (int k = 0; k < KINDS; k++)
        best[k] = INFINITY;
    for (int rep = 0; rep < reps; rep++) {
        for (int k = 0; k < KINDS; k++) {
            double t0 = fl_bench_now();
            for (int i = 0; i < steps; i++) {
                if (k == GEMM)
                    gemms(m);
                else if (step(&b, k))
                    goto cleanup;
            }
            o->sync(be);
            best[k] = fmin(best[k], (fl_bench_now() - t0) / steps);
        }
    }
    double t_poisson = poisson_ms(rows, reps);
    double ratio = best[DP] / best[PLAIN], clip_ratio = best[CLIPPED] / best[PLAIN];
    double ratio_inline = best[DP_INLINE] / best[PLAIN];
    double ratio_samp = (best[DP] + t_poisson * 1e-3) / best[PLAIN];
    double gf = flop * 1e-9;
    if (json) {
        printf("{\"model\":\"mlp:256,256\",\"n_params\":%zu,\"batch\":%d,\"device\":\"%s\","
               "\"blas_threads\":%d,\"noise\":\"dpnoise worker thread\",\"noise_multiplier\":%g,"
               "\"steps\":%d,\"reps\":%d,\"ratio\":%.4f,\"clip_ratio\":%.4f,"
               "\"ratio_inline\":%.4f,\"ratio_with_sampling\":%.4f,\"step_ms\":%.4f,"
               "\"clip_step_ms\":%.4f,\"dp_step_ms\":%.4f,\"dp_inline_step_ms\":%.4f,"
               "\"noise_ms\":%.4f,\"noise_msamples_per_s\":%.1f,\"poisson_ms\":%.4f,"
               "\"poisson_rows\":%ld,\"step_gflops\":%.3f,\"dp_step_gflops\":%.3f,"
               "\"sgemm_gflops\":%.3f}\n",
               np, BATCH, fl_backend_name(be), threads, NOISE_MULT, steps, reps, ratio, clip_ratio,
               ratio_inline, ratio_samp, best[PLAIN] * 1e3, best[CLIPPED] * 1e3, best[DP] * 1e3,
               best[DP_INLINE] * 1e3, t_noise * 1e3, np / t_noise * 1e-6, t_poisson, rows,
               gf / best[PLAIN], gf / best[DP], gf / best[GEMM]);
    } else {
        printf("DP-SGD overhead: MLP 784-256-256-10 (%zu parameters), batch %d, %s backend, "
               "BLAS on %d thread(s)\n",
               np, BATCH, fl_backend_name(be), threads);
        printf("  (BLAS gets %d thread(s) for every step kind, DP and non-DP alike; the DP\n"
               "   noise is drawn by one worker thread, on the other core of a 2-core machine)\n",
               threads);
        printf("  non-private step             %8.3f ms  %7.2f GFLOP/s\n", best[PLAIN] * 1e3,
               gf / best[PLAIN]);
        printf("  clipped step, no noise       %8.3f ms  clip_ratio %.3f\n", best[CLIPPED] * 1e3,
               clip_ratio);
        printf("  DP step (noise on a worker)  %8.3f ms  ratio %.3f  %7.2f GFLOP/s\n",
               best[DP] * 1e3, ratio, gf / best[DP]);
        printf("  DP step (noise inline)       %8.3f ms  ratio %.3f\n", best[DP_INLINE] * 1e3,
               ratio_inline);
        printf("  noise alone, one core        %8.3f ms  (%.0f M samples/s)\n", t_noise * 1e3,
               np / t_noise * 1e-6);
        printf("  Poisson coins, %ld rows   %8.3f ms  (ratio with them %.3f)\n", rows, t_poisson,
               ratio_samp);
        printf("  sgemm alone, same shapes     %8.3f ms  %7.2f GFLOP/s\n", best[GEMM] * 1e3,
               gf / best[GEMM]);
    }
    rc = 0;
cleanup:
    if (rc) fprintf(stderr, "dp_overhead: %s\n", b.err[0] ? b.err : "failed");
    if (be) {
        be->ops->free(be, b.d_m1);
        be->ops->free(be, b.d_m2);
        fl_model_free(&b.m);
    }
    fl_dpnoise_free(b.bg);
    fl_dpnoise_free(b.inl);
    fl_backend_close(be);
    free(h_x);
    return rc;
}
