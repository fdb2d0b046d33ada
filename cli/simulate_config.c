/* simulate_config.c: federation.ini for `cohort simulate` (DESIGN.md §4,
 * "Federation config"; every key in docs/simulate.md), read strictly so a
 * typo fails with its file and line instead of silently running the default,
 * and the aggregator.ini / client.ini files of the simulated federation. The
 * [train] section is read by the same function as aggregator.ini's, so the
 * two cannot drift apart. */
#include "cli/simulate.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aggregator/strategy.h"
#include "core/train.h"
#include "kernels/backend.h"

static const char *const SECTIONS[] = {"federation", "data",   "model",    "train", "privacy",
                                       "secagg",     "faults", "fairness", NULL};
static const char *const FED_KEYS[] = {
    "sites",     "rounds", "partition", "seed",         "strategy",      "min_sites", "fraction",
    "server_lr", "trim",   "prox_mu",   "join_timeout", "stage_timeout", "device",    NULL};
static const char *const DATA_KEYS[] = {"csv", "schema", "test_fraction", "val_fraction", NULL};
static const char *const MODEL_KEYS[] = {"type", NULL};
static const char *const PRIVACY_KEYS[] = {"mode",  "noise_multiplier", "clip",
                                           "delta", "max_epsilon",      NULL};
static const char *const SECAGG_KEYS[] = {"enabled",    "threshold",          "neighbors",
                                          "clip_range", "quantization_range", NULL};
/* [fairness] is written through to aggregator.ini (aggregator/config.h). */
static const char *const FAIRNESS_KEYS[] = {"intersections",
                                            "threshold",
                                            "bins",
                                            "min_group_count",
                                            "max_demographic_parity_difference",
                                            "min_demographic_parity_ratio",
                                            "max_equalized_odds_difference",
                                            "min_equalized_odds_ratio",
                                            "max_equal_opportunity_difference",
                                            "max_average_odds_difference",
                                            "min_disparate_impact",
                                            "max_generalized_entropy_index",
                                            "max_theil_index",
                                            NULL};
static const char *const FAULT_KEYS[] = {"kill_site", NULL};

/* The stages a fault may name: those of a federation without secure
 * aggregation, then those of one with it (DESIGN.md §6). */
static const char *const STAGES_NOW[] = {"STATS", "TRAIN", "EVALUATE", NULL};
static const char *const STAGES_LATER[] = {"ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_INPUT", "UNMASK",
                                           NULL};

static int in_list(const char *const *list, const char *s) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(list[i], s)) return 1;
    return 0;
}

/* fl_ini keeps no line for a section header, so an unknown section is
 * located by reading the file again. 0 when not found. */
static int section_line(const char *path, const char *name) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[4096];
    int line = 0, found = 0;
    size_t nlen = strlen(name);
    while (!found && fgets(buf, sizeof buf, f)) {
        line++;
        char *p = buf;
        if (line == 1 && !strncmp(p, "\xef\xbb\xbf", 3)) p += 3;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '[') continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, name, nlen)) continue;
        p += nlen;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == ']') found = 1;
    }
    fclose(f);
    return found ? line : 0;
}

const char *fl_sim_where(char *buf, size_t len, const fl_sim_config *c, const char *section,
                         const char *key) {
    const fl_ini_entry *e = fl_ini_find(&c->ini, section, key);
    if (e)
        snprintf(buf, len, "%s:%d: ", c->path, e->line);
    else
        snprintf(buf, len, "%s: ", c->path);
    return buf;
}

/* A required path key: resolved against the federation.ini's directory and
 * readable now, so a missing file is reported against the line naming it. */
static int path_key(char out[FL_PATH_LEN], const fl_sim_config *c, const char *section,
                    const char *key, char *err) {
    const fl_ini_entry *e = fl_ini_find(&c->ini, section, key);
    if (!e || !*e->value)
        return fl_seterr(err, FL_EINVAL, "%s: [%s] needs '%s'", c->path, section, key);
    fl_path_resolve(out, c->path, e->value);
    if (access(out, R_OK))
        return fl_seterr(err, FL_EINVAL, "%s:%d: key '%s' in [%s]: cannot read %s: %s", c->path,
                         e->line, key, section, out, strerror(errno));
    return FL_OK;
}

static int check_partition(const fl_sim_config *c, char *err) {
    const char *p = c->partition;
    if (!strcmp(p, "iid")) return FL_OK;
    if (!strncmp(p, "by:", 3) && p[3]) return FL_OK;
    if (!strncmp(p, "dirichlet:", 10)) {
        char *end;
        errno = 0;
        double a = strtod(p + 10, &end);
        if (!errno && end != p + 10 && !*end && isfinite(a) && a > 0) return FL_OK;
    }
    return fl_seterr(err, FL_EINVAL,
                     "%s:%d: key 'partition' in [federation]: expected iid, by:<column> or "
                     "dirichlet:<alpha> (alpha > 0), got '%s'",
                     c->path, c->partition_line, p);
}

/* One "K@R:STAGE" of kill_site. */
static int parse_fault(fl_sim_fault *f, const fl_sim_config *c, const char *text, int line,
                       char *err) {
    char stage[FL_SIM_STAGE_LEN];
    int site, round, used = 0;
    memset(f, 0, sizeof *f);
    if (sscanf(text, "%d@%d:%23[A-Z_]%n", &site, &round, stage, &used) != 3 || text[used] != '\0')
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'kill_site' in [faults]: expected SITE@ROUND:STAGE (e.g. "
                         "2@3:TRAIN), got '%s'",
                         c->path, line, text);
    if (site < 1 || site > c->sites)
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'kill_site' in [faults]: site %d is not one of the %d sites",
                         c->path, line, site, c->sites);
    if (round < 1 || round > c->rounds)
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'kill_site' in [faults]: round %d is outside 1..%d", c->path,
                         line, round, c->rounds);
    if (!in_list(STAGES_NOW, stage) && !in_list(STAGES_LATER, stage))
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'kill_site' in [faults]: expected a stage among STATS, TRAIN, "
                         "EVALUATE, ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT, UNMASK, got '%s'",
                         c->path, line, stage);
    if (!strcmp(stage, "STATS") && round != 1)
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'kill_site' in [faults]: the statistics stage runs once, "
                         "before round 1: write %d@1:STATS",
                         c->path, line, site);
    f->site = site;
    f->round = round;
    snprintf(f->stage, sizeof f->stage, "%s", stage);
    f->exists = in_list(c->secagg_enabled ? STAGES_LATER : STAGES_NOW, stage);
    return FL_OK;
}

static int parse_faults(fl_sim_config *c, char *err) {
    const fl_ini_entry *e = fl_ini_find(&c->ini, "faults", "kill_site");
    if (!e || !*e->value) return FL_OK;
    char *list = strdup(e->value);
    if (!list) return fl_seterr(err, FL_ENOMEM, "out of memory");
    int rc = FL_OK;
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t n = strlen(tok);
        while (n && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
            tok[--n] = 0;
        if (c->n_faults == FL_SIM_MAX_FAULTS) {
            rc = fl_seterr(err, FL_EINVAL, "%s:%d: key 'kill_site' in [faults]: at most %d faults",
                           c->path, e->line, FL_SIM_MAX_FAULTS);
            break;
        }
        fl_sim_fault *f = &c->faults[c->n_faults];
        if ((rc = parse_fault(f, c, tok, e->line, err))) break;
        for (int i = 0; i < c->n_faults; i++)
            if (c->faults[i].site == f->site)
                rc = fl_seterr(err, FL_EINVAL,
                               "%s:%d: key 'kill_site' in [faults]: site %d is killed twice",
                               c->path, e->line, f->site);
        c->n_faults++;
    }
    free(list);
    return rc;
}

static int get_u64(uint64_t *out, const fl_sim_config *c, const char *section, const char *key,
                   uint64_t def, char *err) {
    const fl_ini_entry *e = fl_ini_find(&c->ini, section, key);
    *out = def;
    if (!e) return FL_OK;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(e->value, &end, 10);
    if (e->value[0] == '-' || errno || end == e->value || *end)
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key '%s' in [%s]: expected a non-negative integer, got '%s'",
                         c->path, e->line, key, section, e->value);
    *out = v;
    return FL_OK;
}

/* A double in the open interval (lo, hi): fl_ini_get_double checks [lo, hi],
 * and an endpoint is refused here with the same kind of message. */
static int get_open(double *out, const fl_sim_config *c, const char *section, const char *key,
                    double def, double lo, double hi, char *err) {
    int rc = fl_ini_get_double(out, &c->ini, section, key, def, lo, hi, err);
    if (rc) return rc;
    if (*out > lo && *out < hi) return FL_OK;
    const fl_ini_entry *e = fl_ini_find(&c->ini, section, key);
    return fl_seterr(err, FL_EINVAL,
                     "%s:%d: key '%s' in [%s]: expected a number in (%g, %g), got '%s'", c->path,
                     e ? e->line : 0, key, section, lo, hi, e ? e->value : "");
}

static int check_sections(const fl_sim_config *c, char *err) {
    for (int i = 0; i < c->ini.n_sections; i++)
        if (!in_list(SECTIONS, c->ini.sections[i]))
            return fl_seterr(err, FL_EINVAL,
                             "%s:%d: unknown section [%s] (expected federation, data, model, "
                             "train, privacy, secagg, fairness or faults)",
                             c->path, section_line(c->path, c->ini.sections[i]),
                             c->ini.sections[i]);
    for (int i = 0; i < c->ini.n_entries; i++)
        if (!c->ini.entries[i].section[0])
            return fl_seterr(err, FL_EINVAL, "%s:%d: key '%s' outside any [section]", c->path,
                             c->ini.entries[i].line, c->ini.entries[i].key);
    int rc = fl_ini_check_keys(&c->ini, "federation", FED_KEYS, err);
    if (!rc) rc = fl_ini_check_keys(&c->ini, "data", DATA_KEYS, err);
    if (!rc) rc = fl_ini_check_keys(&c->ini, "model", MODEL_KEYS, err);
    if (!rc) rc = fl_ini_check_keys(&c->ini, "privacy", PRIVACY_KEYS, err);
    if (!rc) rc = fl_ini_check_keys(&c->ini, "secagg", SECAGG_KEYS, err);
    if (!rc) rc = fl_ini_check_keys(&c->ini, "faults", FAULT_KEYS, err);
    if (!rc) rc = fl_ini_check_keys(&c->ini, "fairness", FAIRNESS_KEYS, err);
    return rc;
}

static int load_federation(fl_sim_config *c, char *err) {
    long v;
    const fl_ini *ini = &c->ini;
    if (!fl_ini_find(ini, "federation", "sites"))
        return fl_seterr(err, FL_EINVAL, "%s: [federation] needs 'sites' (1..%d)", c->path,
                         FL_SIM_MAX_SITES);
    int rc = fl_ini_get_int(&v, ini, "federation", "sites", 0, 1, FL_SIM_MAX_SITES, err);
    if (rc) return rc;
    c->sites = (int)v;
    if ((rc = fl_ini_get_int(&v, ini, "federation", "rounds", 10, 1, 100000, err))) return rc;
    c->rounds = (int)v;
    if ((rc = fl_ini_get_int(&v, ini, "federation", "min_sites", c->sites < 2 ? 1 : 2, 1,
                             FL_SIM_MAX_SITES, err)))
        return rc;
    c->min_sites = (int)v;
    if (c->min_sites > c->sites) {
        char w[FL_PATH_LEN + 32];
        return fl_seterr(err, FL_EINVAL, "%smin_sites = %d is more than sites = %d",
                         fl_sim_where(w, sizeof w, c, "federation", "min_sites"), c->min_sites,
                         c->sites);
    }
    if ((rc = fl_ini_get_double(&c->fraction, ini, "federation", "fraction", 1.0, 1e-6, 1.0, err)))
        return rc;
    if ((rc = get_u64(&c->seed, c, "federation", "seed", 42, err))) return rc;
    /* Site K splits with seed + K, which cohort-client reads as an integer
     * below 2^62. */
    if (c->seed > FL_SIM_SEED_MAX) {
        char w[FL_PATH_LEN + 32];
        return fl_seterr(err, FL_EINVAL, "%skey 'seed' in [federation]: expected at most %llu",
                         fl_sim_where(w, sizeof w, c, "federation", "seed"),
                         (unsigned long long)FL_SIM_SEED_MAX);
    }
    const fl_ini_entry *e = fl_ini_find(ini, "federation", "partition");
    snprintf(c->partition, sizeof c->partition, "%s", e ? e->value : "iid");
    c->partition_line = e ? e->line : 0;
    if ((rc = check_partition(c, err))) return rc;
    e = fl_ini_find(ini, "federation", "strategy");
    snprintf(c->strategy, sizeof c->strategy, "%s", e ? e->value : "fedavg");
    int kind;
    if (fl_strategy_parse(&kind, c->strategy))
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'strategy' in [federation]: expected fedavg, fedprox, "
                         "fedadam, fedyogi, median or trimmed_mean, got '%s'",
                         c->path, e->line, e->value);
    /* Checked with the aggregator's ranges, written through only when given. */
    double d;
    if ((rc = fl_ini_get_double(&d, ini, "federation", "server_lr", 1.0, 1e-9, 1e3, err)) ||
        (rc = fl_ini_get_double(&d, ini, "federation", "trim", 0.1, 0, 0.49, err)) ||
        (rc = fl_ini_get_double(&d, ini, "federation", "prox_mu", 0.01, 0, 1e3, err)))
        return rc;
    if ((rc = fl_ini_get_int(&c->join_timeout, ini, "federation", "join_timeout", 60, 1, 86400,
                             err)))
        return rc;
    /* A killed site is only noticed at the stage deadline: keep it short
     * when faults are injected, so the demo does not sit idle. */
    double def_stage = fl_ini_find(ini, "faults", "kill_site") ? 5.0 : 30.0;
    if ((rc = fl_ini_get_double(&c->stage_timeout, ini, "federation", "stage_timeout", def_stage,
                                0.1, 86400, err)))
        return rc;
    e = fl_ini_find(ini, "federation", "device");
    snprintf(c->device, sizeof c->device, "%s", e ? e->value : "cpu");
    enum fl_device dev;
    if (e && (strlen(e->value) >= sizeof c->device || fl_device_parse(&dev, e->value)))
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'device' in [federation]: expected auto, cpu or cuda, got "
                         "'%s'",
                         c->path, e->line, e->value);
    return FL_OK;
}

static int load_data_model_train(fl_sim_config *c, char *err) {
    int rc = path_key(c->csv, c, "data", "csv", err);
    if (!rc) rc = path_key(c->schema, c, "data", "schema", err);
    if (!rc) rc = get_open(&c->test_fraction, c, "data", "test_fraction", 0.2, 0.0, 0.9, err);
    if (!rc)
        rc = fl_ini_get_double(&c->val_fraction, &c->ini, "data", "val_fraction", 0.2, 0.0, 0.5,
                               err);
    if (rc) return rc;
    const fl_ini_entry *e = fl_ini_find(&c->ini, "model", "type");
    snprintf(c->model, sizeof c->model, "%s", e ? e->value : "logreg");
    fl_model_spec spec;
    char why[FL_ERR_LEN];
    if (e &&
        (strlen(e->value) >= sizeof c->model || fl_model_spec_parse(&spec, e->value, 1, 2, why)))
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'type' in [model]: expected logreg or mlp:H1,H2,.. (%s)",
                         c->path, e->line, why);
    /* The aggregator's defaults (aggregator/round.c fl_fed_config_default). */
    c->local_epochs = 1;
    c->batch_size = 64;
    c->optimizer = FL_OPT_SGD;
    c->lr = 0.1;
    c->momentum = 0.0;
    c->weight_decay = 0.0;
    return fl_config_train_section(&c->ini, &c->local_epochs, &c->batch_size, &c->optimizer, &c->lr,
                                   &c->momentum, &c->weight_decay, err);
}

static int load_privacy_secagg(fl_sim_config *c, char *err) {
    const fl_ini *ini = &c->ini;
    const fl_ini_entry *e = fl_ini_find(ini, "privacy", "mode");
    snprintf(c->privacy_mode, sizeof c->privacy_mode, "%s", e ? e->value : "none");
    if (e && strcmp(e->value, "none") && strcmp(e->value, "record") && strcmp(e->value, "site"))
        return fl_seterr(err, FL_EINVAL,
                         "%s:%d: key 'mode' in [privacy]: expected none, record or site, got '%s'",
                         c->path, e->line, e->value);
    double d;
    long v;
    int rc = fl_ini_get_double(&d, ini, "privacy", "noise_multiplier", 1.0, 0.0, 1e6, err);
    if (!rc && fl_ini_find(ini, "privacy", "clip"))
        rc = get_open(&d, c, "privacy", "clip", 1.0, 0.0, 1e6, err);
    if (!rc) rc = fl_ini_get_double(&d, ini, "privacy", "delta", 1e-5, 1e-300, 0.5, err);
    if (!rc && fl_ini_find(ini, "privacy", "max_epsilon"))
        rc = get_open(&d, c, "privacy", "max_epsilon", 3.0, 0.0, 1e6, err);
    if (!rc) rc = fl_ini_get_bool(&c->secagg_enabled, ini, "secagg", "enabled", 0, err);
    if (!rc) rc = fl_ini_get_double(&d, ini, "secagg", "threshold", 0.66, 0.5000001, 1.0, err);
    if (!rc) rc = fl_ini_get_int(&v, ini, "secagg", "neighbors", 0, 0, FL_SIM_MAX_SITES, err);
    return rc;
}

int fl_sim_config_load(fl_sim_config *c, const char *path, char err[FL_ERR_LEN]) {
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    int rc = fl_ini_load(&c->ini, path, err);
    if (rc) {
        /* fl_ini_load leaves nothing to free on failure */
        memset(&c->ini, 0, sizeof c->ini);
        return rc == FL_EIO ? FL_EINVAL : rc;
    }
    if (!rc) rc = check_sections(c, err);
    if (!rc) rc = load_federation(c, err);
    if (!rc) rc = load_data_model_train(c, err);
    if (!rc) rc = load_privacy_secagg(c, err);
    if (!rc) rc = parse_faults(c, err);
    if (rc) fl_sim_config_free(c);
    return rc;
}

void fl_sim_config_free(fl_sim_config *c) {
    if (!c) return;
    fl_ini_free(&c->ini);
    memset(&c->ini, 0, sizeof c->ini);
}

/* ============================ writing ==================================== */

/* The shortest of %.15g / %.17g that reads back as the same double, so the
 * aggregator trains with exactly the configured values and the file stays
 * readable ("0.1", not "0.10000000000000001"). */
static const char *fmt_double(char buf[40], double v) {
    snprintf(buf, 40, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, 40, "%.17g", v);
    return buf;
}

/* Every key of a section, exactly as federation.ini had it. */
static void write_through(FILE *f, const fl_ini *ini, const char *section) {
    if (!fl_ini_has_section(ini, section)) return;
    fprintf(f, "[%s]\n", section);
    for (int i = 0; i < ini->n_entries; i++)
        if (!strcmp(ini->entries[i].section, section))
            fprintf(f, "%s = %s\n", ini->entries[i].key, ini->entries[i].value);
}

static int finish_file(FILE *f, const char *path, char *err) {
    int bad = ferror(f);
    if (fclose(f) || bad) return fl_seterr(err, FL_EIO, "%s: write failed", path);
    return FL_OK;
}

int fl_sim_write_aggregator_ini(const fl_sim_config *c, const char *path, char err[FL_ERR_LEN]) {
    FILE *f = fopen(path, "w");
    if (!f) return fl_seterr(err, FL_EIO, "%s: cannot create: %s", path, strerror(errno));
    char b[40];
    fprintf(f, "; written by cohort simulate from %s\n", c->path);
    fprintf(f, "[aggregator]\n"
               "listen = 127.0.0.1:0\n"
               "port_file = agg.port\n"
               "federation_id = sim\n"
               "db = aggregator.db\n"
               "ca = pki/ca.crt\n"
               "crl = pki/ca.crl\n"
               "cert = pki/aggregator.crt\n"
               "key = pki/aggregator.key\n"
               "sites = ");
    for (int s = 1; s <= c->sites; s++)
        fprintf(f, "%ssite-%d", s > 1 ? "," : "", s);
    fprintf(f, "\njoin_timeout = %ld\n", c->join_timeout);
    fprintf(f, "stage_timeout = %s\n", fmt_double(b, c->stage_timeout));
    fprintf(f, "[federation]\nrounds = %d\nmin_sites = %d\n", c->rounds, c->min_sites);
    fprintf(f, "fraction = %s\n", fmt_double(b, c->fraction));
    fprintf(f, "seed = %llu\nstrategy = %s\n", (unsigned long long)c->seed, c->strategy);
    static const char *const pass[] = {"server_lr", "trim", "prox_mu", NULL};
    for (int i = 0; pass[i]; i++) {
        const fl_ini_entry *e = fl_ini_find(&c->ini, "federation", pass[i]);
        if (e) fprintf(f, "%s = %s\n", pass[i], e->value);
    }
    fprintf(f, "[model]\ntype = %s\n", c->model);
    fprintf(f, "[train]\nlocal_epochs = %d\nbatch_size = %d\noptimizer = %s\n", c->local_epochs,
            c->batch_size, c->optimizer == FL_OPT_ADAM ? "adam" : "sgd");
    fprintf(f, "lr = %s\n", fmt_double(b, c->lr));
    fprintf(f, "momentum = %s\n", fmt_double(b, c->momentum));
    fprintf(f, "weight_decay = %s\n", fmt_double(b, c->weight_decay));
    /* site-level DP is not implemented: the aggregator would refuse it, so
     * such a run trains without DP (cmd_simulate.c warns). */
    if (strcmp(c->privacy_mode, "site")) write_through(f, &c->ini, "privacy");
    write_through(f, &c->ini, "secagg");
    /* The fairness audit runs on the sites' schema (sensitive and [groups]);
     * without sensitive attributes the aggregator audits nothing. */
    fprintf(f, "[fairness]\nschema = sites/site.schema.ini\n");
    for (int i = 0; i < c->ini.n_entries; i++)
        if (!strcmp(c->ini.entries[i].section, "fairness"))
            fprintf(f, "%s = %s\n", c->ini.entries[i].key, c->ini.entries[i].value);
    return finish_file(f, path, err);
}

int fl_sim_write_client_ini(const fl_sim_config *c, const char *path, int site, int port,
                            char err[FL_ERR_LEN]) {
    FILE *f = fopen(path, "w");
    if (!f) return fl_seterr(err, FL_EIO, "%s: cannot create: %s", path, strerror(errno));
    char b[40];
    fprintf(f, "; written by cohort simulate from %s\n", c->path);
    fprintf(f,
            "[client]\n"
            "aggregator = 127.0.0.1:%d\n"
            "ca = pki/ca.crt\n"
            "crl = pki/ca.crl\n"
            "cert = pki/site-%d.crt\n"
            "key = pki/site-%d.key\n"
            "data = sites/site-%d.csv\n"
            "schema = sites/site.schema.ini\n"
            "state = sites/site-%d.db\n",
            port, site, site, site, site);
    fprintf(f, "val_fraction = %s\n", fmt_double(b, c->val_fraction));
    /* The site's split seed; cmd_simulate.c reproduces the split with it. */
    fprintf(f, "seed = %llu\n", (unsigned long long)(c->seed + (uint64_t)site));
    fprintf(f, "device = %s\n", c->device);
    /* A site's own privacy cap (DESIGN.md §4: it overrides nothing on the
     * aggregator), from federation.ini when given there. */
    const fl_ini_entry *eps = fl_ini_find(&c->ini, "privacy", "max_epsilon");
    const fl_ini_entry *delta = fl_ini_find(&c->ini, "privacy", "delta");
    if (eps || delta) {
        fprintf(f, "[privacy]\n");
        if (eps) fprintf(f, "max_epsilon = %s\n", eps->value);
        if (delta) fprintf(f, "delta = %s\n", delta->value);
    }
    /* [faults]: the site ends itself the moment it receives that stage's
     * task, so the kill always lands inside the stage (the simulator's own
     * SIGKILL on the stage event stays as the fallback). */
    for (int i = 0; i < c->n_faults; i++)
        if (c->faults[i].site == site && c->faults[i].exists)
            fprintf(f, "[faults]\ndie_at = %d:%s\n",
                    strcmp(c->faults[i].stage, "STATS") ? c->faults[i].round : 0,
                    c->faults[i].stage);
    return finish_file(f, path, err);
}
