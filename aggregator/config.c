/* config.c: see config.h. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "core/ini.h"
#include "core/train.h"

int fl_config_train_section(const fl_ini *ini, int *local_epochs, int *batch_size, int *optimizer,
                            double *lr, double *momentum, double *weight_decay,
                            char err[FL_ERR_LEN]) {
    static const char *const keys[] = {"local_epochs", "batch_size",   "optimizer", "lr",
                                       "momentum",     "weight_decay", NULL};
    int rc = fl_ini_check_keys(ini, "train", keys, err);
    long e, b;
    if (!rc) rc = fl_ini_get_int(&e, ini, "train", "local_epochs", *local_epochs, 1, 10000, err);
    if (!rc) rc = fl_ini_get_int(&b, ini, "train", "batch_size", *batch_size, 1, 1 << 20, err);
    if (!rc) rc = fl_ini_get_double(lr, ini, "train", "lr", *lr, 1e-9, 1e3, err);
    if (!rc) rc = fl_ini_get_double(momentum, ini, "train", "momentum", *momentum, 0, 0.999, err);
    if (!rc)
        rc = fl_ini_get_double(weight_decay, ini, "train", "weight_decay", *weight_decay, 0, 10,
                               err);
    if (rc) return rc;
    *local_epochs = (int)e;
    *batch_size = (int)b;
    const fl_ini_entry *o = fl_ini_find(ini, "train", "optimizer");
    if (o) {
        if (!strcmp(o->value, "sgd"))
            *optimizer = FL_OPT_SGD;
        else if (!strcmp(o->value, "adam"))
            *optimizer = FL_OPT_ADAM;
        else
            return fl_seterr(err, FL_EINVAL,
                             "%s:%d: key 'optimizer' in [train]: expected sgd or "
                             "adam, got '%s'",
                             ini->path, o->line, o->value);
    }
    return FL_OK;
}

static int section_path(char out[FL_PATH_LEN], const fl_ini *ini, const char *section,
                        const char *key, int required, char *err) {
    const fl_ini_entry *e = fl_ini_find(ini, section, key);
    if (!e || !*e->value) {
        out[0] = 0;
        return required ? fl_seterr(err, FL_EINVAL, "%s: [%s] needs '%s'", ini->path, section, key)
                        : FL_OK;
    }
    fl_path_resolve(out, ini->path, e->value);
    return FL_OK;
}

static int path_key(char out[FL_PATH_LEN], const fl_ini *ini, const char *key, int required,
                    char *err) {
    return section_path(out, ini, "aggregator", key, required, err);
}

/* [privacy] mode = none | record, noise_multiplier, clip, delta, max_epsilon. */
static int privacy_section(fl_fed_config *f, const fl_ini *ini, char *err) {
    static const char *const keys[] = {"mode",  "noise_multiplier", "clip",
                                       "delta", "max_epsilon",      NULL};
    int rc = fl_ini_check_keys(ini, "privacy", keys, err);
    if (rc) return rc;
    const fl_ini_entry *m = fl_ini_find(ini, "privacy", "mode");
    if (!m || !strcmp(m->value, "none")) {
        f->dp_record = 0;
    } else if (!strcmp(m->value, "record")) {
        f->dp_record = 1;
    } else if (!strcmp(m->value, "site")) {
        /* A configuration error (exit 2): the federation must not start
         * with less privacy than it asked for. */
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'mode' in [privacy]: site-level DP is not implemented yet "
                         "(use none or record)",
                         ini->path, m->line);
    } else {
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'mode' in [privacy]: expected none, record or site, got '%s'",
                         ini->path, m->line, m->value);
    }
    if ((rc = fl_ini_get_double(&f->dp_noise, ini, "privacy", "noise_multiplier", 1.0, 0.01, 1e4,
                                err)) ||
        (rc = fl_ini_get_double(&f->dp_clip, ini, "privacy", "clip", 1.0, 1e-6, 1e6, err)) ||
        (rc = fl_ini_get_double(&f->dp_delta, ini, "privacy", "delta", 1e-5, 1e-300, 0.5, err)) ||
        (rc = fl_ini_get_double(&f->dp_max_epsilon, ini, "privacy", "max_epsilon", 0.0, 0.0, 1e6,
                                err)))
        return rc;
    return FL_OK;
}

const char *const FL_FAIR_LIMIT_KEYS[9] = {"max_demographic_parity_difference",
                                           "min_demographic_parity_ratio",
                                           "max_equalized_odds_difference",
                                           "min_equalized_odds_ratio",
                                           "max_equal_opportunity_difference",
                                           "max_average_odds_difference",
                                           "min_disparate_impact",
                                           "max_generalized_entropy_index",
                                           "max_theil_index"};

/* [secagg] (DESIGN.md §4, §9). */
static int secagg_section(fl_fed_config *f, const fl_ini *ini, char *err) {
    static const char *const keys[] = {"enabled",    "threshold",          "neighbors",
                                       "clip_range", "quantization_range", NULL};
    long v;
    int rc = fl_ini_check_keys(ini, "secagg", keys, err);
    if (!rc) rc = fl_ini_get_bool(&f->secagg, ini, "secagg", "enabled", 0, err);
    if (!rc)
        rc = fl_ini_get_double(&f->sa_threshold, ini, "secagg", "threshold", 0.66, 0.5000001, 1.0,
                               err);
    if (!rc) rc = fl_ini_get_int(&v, ini, "secagg", "neighbors", 0, 0, FL_SECAGG_MAX_SITES, err);
    if (!rc) f->sa_neighbors = (int)v;
    if (!rc) rc = fl_ini_get_double(&f->sa_clip, ini, "secagg", "clip_range", 8.0, 1e-6, 1e6, err);
    if (!rc)
        rc = fl_ini_get_int(&v, ini, "secagg", "quantization_range", 1L << 30, 2, 1L << 30, err);
    if (!rc) f->sa_levels = (uint32_t)v;
    return rc;
}

/* [fairness] (DESIGN.md §10): the layout itself is built by the caller from
 * the schema (core/fairness.h). */
static int fairness_section(fl_agg_config *cfg, const fl_ini *ini, char *err) {
    static const char *keys[16];
    int k = 0;
    keys[k++] = "schema";
    keys[k++] = "intersections";
    keys[k++] = "threshold";
    keys[k++] = "bins";
    keys[k++] = "min_group_count";
    for (int i = 0; i < 9; i++)
        keys[k++] = FL_FAIR_LIMIT_KEYS[i];
    keys[k] = NULL;
    fl_fed_config *f = &cfg->fed;
    long v;
    int rc = fl_ini_check_keys(ini, "fairness", keys, err);
    if (!rc) rc = section_path(cfg->fairness_schema, ini, "fairness", "schema", 0, err);
    const char *x = fl_ini_get(ini, "fairness", "intersections", "");
    if (!rc && strlen(x) >= sizeof f->fairness_intersections)
        rc = fl_seterr(err, FL_EINVAL, "[fairness] intersections: longer than %zu characters",
                       sizeof f->fairness_intersections - 1);
    if (!rc) snprintf(f->fairness_intersections, sizeof f->fairness_intersections, "%s", x);
    if (!rc)
        rc = fl_ini_get_double(&f->fairness_threshold, ini, "fairness", "threshold", 0.5, 0.0,
                               0.999999, err);
    if (!rc) rc = fl_ini_get_int(&v, ini, "fairness", "bins", 20, 0, 1000, err);
    if (!rc) f->fairness_bins = (int)v;
    if (!rc) rc = fl_ini_get_int(&v, ini, "fairness", "min_group_count", 30, 0, 1L << 40, err);
    if (!rc) cfg->min_group_count = v;
    for (int i = 0; i < 9 && !rc; i++)
        rc = fl_ini_get_double(&cfg->fair_limits[i], ini, "fairness", FL_FAIR_LIMIT_KEYS[i],
                               i == 6 ? 0.8 : 0.0, 0.0, 1e6, err);
    return rc;
}

int fl_agg_config_load(fl_agg_config *cfg, const char *path, char err[FL_ERR_LEN]) {
    memset(cfg, 0, sizeof *cfg);
    fl_fed_config *f = &cfg->fed;
    fl_fed_config_default(f);
    fl_ini ini;
    int rc = fl_ini_load(&ini, path, err);
    if (rc) return rc;
    static const char *const agg_keys[] = {
        "listen",        "federation_id", "db",    "ca",        "crl",
        "cert",          "key",           "sites", "port_file", "join_timeout",
        "stage_timeout", "spool_dir",     NULL};
    static const char *const fed_keys[] = {"rounds",    "min_sites", "fraction", "seed", "strategy",
                                           "server_lr", "trim",      "prox_mu",  NULL};
    static const char *const model_keys[] = {"type", NULL};
    static const char *const eval_keys[] = {"hist_bins", NULL};
    for (int i = 0; i < ini.n_sections && !rc; i++) {
        const char *s = ini.sections[i];
        if (strcmp(s, "aggregator") && strcmp(s, "federation") && strcmp(s, "model") &&
            strcmp(s, "train") && strcmp(s, "evaluate") && strcmp(s, "privacy") &&
            strcmp(s, "secagg") && strcmp(s, "fairness"))
            rc = fl_seterr(err, FL_EINVAL, "%s: unknown section [%s]", path, s);
    }
    if (!rc) rc = fl_ini_check_keys(&ini, "aggregator", agg_keys, err);
    if (!rc) rc = fl_ini_check_keys(&ini, "federation", fed_keys, err);
    if (!rc) rc = fl_ini_check_keys(&ini, "model", model_keys, err);
    if (!rc) rc = fl_ini_check_keys(&ini, "evaluate", eval_keys, err);
    if (rc) goto cleanup;
    snprintf(cfg->listen, sizeof cfg->listen, "%s",
             fl_ini_get(&ini, "aggregator", "listen", "127.0.0.1:7443"));
    snprintf(f->federation_id, sizeof f->federation_id, "%s",
             fl_ini_get(&ini, "aggregator", "federation_id", "cohort"));
    if ((rc = path_key(cfg->db, &ini, "db", 1, err)) ||
        (rc = path_key(cfg->ca, &ini, "ca", 1, err)) ||
        (rc = path_key(cfg->cert, &ini, "cert", 1, err)) ||
        (rc = path_key(cfg->key, &ini, "key", 1, err)) ||
        (rc = path_key(cfg->crl, &ini, "crl", 0, err)) ||
        (rc = path_key(cfg->port_file, &ini, "port_file", 0, err)) ||
        (rc = path_key(cfg->spool_dir, &ini, "spool_dir", 0, err)))
        goto cleanup;
    if (!cfg->spool_dir[0]) { /* beside the database */
        const char *slash = strrchr(cfg->db, '/');
        if (!slash)
            snprintf(cfg->spool_dir, sizeof cfg->spool_dir, ".");
        else
            snprintf(cfg->spool_dir, sizeof cfg->spool_dir, "%.*s",
                     slash == cfg->db ? 1 : (int)(slash - cfg->db), cfg->db);
    }
    const fl_ini_entry *sites = fl_ini_find(&ini, "aggregator", "sites");
    if (!sites || !*sites->value) {
        rc = fl_seterr(err, FL_EINVAL, "%s: [aggregator] needs 'sites' (the allow-list)", path);
        goto cleanup;
    }
    for (const char *p = sites->value; *p;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        while (n && (*p == ' '))
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        if (n == 0 || n >= FL_NAME_LEN || f->n_allowed == FL_MAX_SITES) {
            rc = fl_seterr(err, FL_EINVAL,
                           "%s:%d: 'sites': expected 1..%d names of 1..%d "
                           "characters separated by ','",
                           path, sites->line, FL_MAX_SITES, FL_NAME_LEN - 1);
            goto cleanup;
        }
        snprintf(f->allowed[f->n_allowed++], FL_NAME_LEN, "%.*s", (int)n, p);
        p = c ? c + 1 : p + strlen(p);
    }
    long v;
    double d;
    if ((rc = fl_ini_get_int(&v, &ini, "aggregator", "join_timeout", 60, 1, 86400, err)))
        goto cleanup;
    f->join_timeout_ms = v * 1000;
    if ((rc = fl_ini_get_double(&d, &ini, "aggregator", "stage_timeout", 120, 0.1, 86400, err)))
        goto cleanup;
    f->stage_timeout_ms = (int64_t)(d * 1000);
    if ((rc = fl_ini_get_int(&v, &ini, "federation", "rounds", 10, 1, 100000, err))) goto cleanup;
    f->rounds = (int)v;
    if ((rc = fl_ini_get_int(&v, &ini, "federation", "min_sites", f->n_allowed < 2 ? 1 : 2, 1,
                             FL_MAX_SITES, err)))
        goto cleanup;
    f->min_sites = (int)v;
    if ((rc = fl_ini_get_double(&f->fraction, &ini, "federation", "fraction", 1.0, 1e-6, 1.0, err)))
        goto cleanup;
    unsigned long long seed = 42;
    const fl_ini_entry *se = fl_ini_find(&ini, "federation", "seed");
    if (se && sscanf(se->value, "%llu", &seed) != 1) {
        rc = fl_seterr(err, FL_EINVAL, "%s:%d: 'seed': expected a non-negative integer", path,
                       se->line);
        goto cleanup;
    }
    f->seed = seed;
    const fl_ini_entry *st = fl_ini_find(&ini, "federation", "strategy");
    int kind = FL_STRATEGY_FEDAVG;
    if (st && fl_strategy_parse(&kind, st->value)) {
        rc = fl_seterr(err, FL_EINVAL,
                       "%s:%d: 'strategy': expected fedavg, fedprox, fedadam, "
                       "fedyogi, median or trimmed_mean, got '%s'",
                       path, st->line, st->value);
        goto cleanup;
    }
    fl_strategy_config_default(&f->strategy, kind);
    if ((rc = fl_ini_get_double(&f->strategy.server_lr, &ini, "federation", "server_lr",
                                f->strategy.server_lr, 1e-9, 1e3, err)) ||
        (rc = fl_ini_get_double(&f->strategy.trim, &ini, "federation", "trim", f->strategy.trim, 0,
                                0.49, err)) ||
        (rc = fl_ini_get_double(&f->strategy.prox_mu, &ini, "federation", "prox_mu",
                                f->strategy.prox_mu, 0, 1e3, err)))
        goto cleanup;
    snprintf(f->model, sizeof f->model, "%s", fl_ini_get(&ini, "model", "type", "logreg"));
    if ((rc = fl_config_train_section(&ini, &f->local_epochs, &f->batch_size, &f->optimizer, &f->lr,
                                      &f->momentum, &f->weight_decay, err)))
        goto cleanup;
    if ((rc = fl_ini_get_int(&v, &ini, "evaluate", "hist_bins", 1000, 2, FL_HIST_BINS_MAX, err)))
        goto cleanup;
    f->hist_bins = (int)v;
    if ((rc = privacy_section(f, &ini, err))) goto cleanup;
    if ((rc = secagg_section(f, &ini, err))) goto cleanup;
    if ((rc = fairness_section(cfg, &ini, err))) goto cleanup;
    if (f->min_sites > f->n_allowed) {
        rc = fl_seterr(err, FL_EINVAL, "%s: min_sites %d is more than the %d allowed sites", path,
                       f->min_sites, f->n_allowed);
        goto cleanup;
    }
cleanup:
    fl_ini_free(&ini);
    return rc;
}
