/* dpsource.c: see dpsource.h. */
#include "dpsource.h"

#include <stdlib.h>

#include "crypto/csprng.h"
#include "crypto/dpnoise.h"

struct fl_dp_source {
    fl_csprng *coins;  /* Poisson sampling */
    fl_dpnoise *noise; /* Gaussian noise, drawn ahead on a worker thread */
    fl_noise_source src;
};

static int dp_uniform32(void *ctx, uint32_t *out, size_t n) {
    fl_csprng_bytes(((fl_dp_source *)ctx)->coins, out, n * sizeof *out);
    return 0;
}

static int dp_gaussian(void *ctx, float *out, size_t n, double stddev) {
    return fl_dpnoise_gaussian(((fl_dp_source *)ctx)->noise, out, n, stddev, NULL);
}

static int dp_add(void *ctx, float *x, size_t n, double stddev, float scale) {
    return fl_dpnoise_add(((fl_dp_source *)ctx)->noise, x, n, stddev, scale, NULL);
}

int fl_dp_source_new(fl_dp_source **out, size_t n_params, double stddev_hint,
                     char err[FL_ERR_LEN]) {
    *out = NULL;
    fl_dp_source *s = calloc(1, sizeof *s);
    if (!s) return fl_seterr(err, FL_ENOMEM, "out of memory");
    int rc = fl_csprng_new(&s->coins, err);
    if (!rc) rc = fl_dpnoise_new(&s->noise, NULL, FL_DPNOISE_BACKGROUND, err);
    /* A failed prefetch only costs time: the first draw then waits. */
    if (!rc && n_params > 0 && stddev_hint > 0.0)
        (void)fl_dpnoise_prefetch(s->noise, n_params, stddev_hint, NULL);
    if (rc) {
        fl_dp_source_free(s);
        return rc;
    }
    s->src.ctx = s;
    s->src.gaussian = dp_gaussian;
    s->src.uniform32 = dp_uniform32;
    s->src.add_gaussian = dp_add;
    s->src.grid_bits = FL_DPNOISE_GRID_BITS;
    *out = s;
    return FL_OK;
}

const fl_noise_source *fl_dp_source_noise(const fl_dp_source *s) {
    return &s->src;
}

void fl_dp_source_free(fl_dp_source *s) {
    if (!s) return;
    fl_dpnoise_free(s->noise);
    fl_csprng_free(s->coins);
    free(s);
}
