/* config.h: aggregator.ini (DESIGN.md §4): the server's own settings and the
 * federation it runs.
 *
 *   [aggregator]
 *   listen = 127.0.0.1:7443      ; host:port (port 0 = any free port)
 *   federation_id = demo
 *   db = aggregator.db           ; relative paths are relative to this file
 *   ca = pki/ca.crt
 *   crl = pki/ca.crl             ; optional; revoked certificates are refused
 *   cert = pki/aggregator.crt
 *   key = pki/aggregator.key
 *   sites = site-1,site-2,site-3 ; the allow-list (certificate names)
 *   port_file = agg.port         ; optional: the bound port is written here
 *   spool_dir = uploads          ; optional, default: the db's directory;
 *                                ; chunked uploads in flight are spooled
 *                                ; here (one model per site at most), not
 *                                ; held in memory
 *   join_timeout = 60            ; seconds
 *   stage_timeout = 120          ; seconds per stage
 *   [federation]  rounds, min_sites, fraction, seed, strategy, server_lr, trim, prox_mu
 *   [model]       type = logreg | mlp:64,32
 *   [train]       local_epochs, batch_size, optimizer = sgd|adam, lr, momentum, weight_decay
 *   [evaluate]    hist_bins
 *   [privacy]     mode = none | record, noise_multiplier, clip, delta, max_epsilon
 *                 (record: DP-SGD at every site, each enforcing its own budget;
 *                 site: not implemented yet, refused)
 *   [secagg]      enabled = false, threshold = 0.66 (fraction of a site's
 *                 neighbours needed to unmask it, > 0.5), neighbors = 0 (all),
 *                 clip_range = 8 (updates' values clipped to +-clip_range),
 *                 quantization_range = 1073741824 (levels over the clip range)
 *   [fairness]    schema = site.schema.ini (the sites' schema: sensitive and
 *                 [groups]; no schema = no audit), intersections = A*B,
 *                 threshold = 0.5, bins = 20, min_group_count = 30, and alert
 *                 limits max_demographic_parity_difference,
 *                 min_demographic_parity_ratio, max_equalized_odds_difference,
 *                 min_equalized_odds_ratio, max_equal_opportunity_difference,
 *                 max_average_odds_difference, min_disparate_impact (0.8),
 *                 max_generalized_entropy_index, max_theil_index (0 = off) */
#ifndef FL_AGG_CONFIG_H
#define FL_AGG_CONFIG_H

#include "aggregator/round.h"

#include "core/ini.h"

typedef struct fl_agg_config {
    char listen[256];
    char db[FL_PATH_LEN], ca[FL_PATH_LEN], crl[FL_PATH_LEN], cert[FL_PATH_LEN], key[FL_PATH_LEN],
        port_file[FL_PATH_LEN], spool_dir[FL_PATH_LEN];
    fl_fed_config fed;
    /* [fairness] */
    char fairness_schema[FL_PATH_LEN]; /* "" = no audit */
    int64_t min_group_count;
    double fair_limits[9]; /* in the order of FL_FAIR_LIMIT_KEYS */
} fl_agg_config;

/* The [fairness] alert-limit keys, in the order of fl_agg_config.fair_limits. */
extern const char *const FL_FAIR_LIMIT_KEYS[9];

/* Loads and validates path. Errors name the file, line and key. */
int fl_agg_config_load(fl_agg_config *cfg, const char *path, char err[FL_ERR_LEN]);

/* Shared between aggregator.ini, client.ini and federation.ini: the [train]
 * section into the fields of a training configuration. */
struct fl_ini;
int fl_config_train_section(const struct fl_ini *ini, int *local_epochs, int *batch_size,
                            int *optimizer, double *lr, double *momentum, double *weight_decay,
                            char err[FL_ERR_LEN]);

#endif
