/* dpsource.h: the randomness DP-SGD needs (core/train.h fl_noise_source),
 * from the CSPRNG (crypto/csprng.h: Poisson sampling coins) and the
 * float-safe discrete Gaussian (crypto/dpnoise.h: noise drawn ahead on a
 * worker thread). Shared by `cohort train` and the site agent, so both train
 * privately from the same sources (docs/privacy.md). */
#ifndef FL_DPSOURCE_H
#define FL_DPSOURCE_H

#include <stddef.h>

#include "core/status.h"
#include "core/train.h"

typedef struct fl_dp_source fl_dp_source;

/* A new source seeded from the operating system. When n_params > 0 and
 * stddev_hint > 0 the first noise vector of that shape (n_params values of
 * standard deviation stddev_hint = noise_multiplier * clip) is drawn ahead.
 * FL_ECRYPTO / FL_ENOMEM with the reason in err. */
int fl_dp_source_new(fl_dp_source **out, size_t n_params, double stddev_hint, char err[FL_ERR_LEN]);

/* The callbacks for fl_train_config.noise; valid until fl_dp_source_free. */
const fl_noise_source *fl_dp_source_noise(const fl_dp_source *s);

/* Stops the worker and wipes the state. NULL does nothing. */
void fl_dp_source_free(fl_dp_source *s);

#endif
