/* cmd_train.c: `cohort train`, centralized training on one dataset
 * (DESIGN.md §4): the baseline every federated result is compared with.
 * Progress goes to stderr one line per epoch; with --json the result is one
 * JSON object on stdout.
 *
 * With --dp-clip it trains with DP-SGD (DESIGN.md §7, §8; docs/privacy.md):
 * Poisson sampling from an OS-keyed CSPRNG, per-example clipping, float-safe
 * noise from crypto/dpnoise drawn ahead on a worker thread, and the chosen
 * accountant's epsilon for the steps taken. DP runs never stop early and
 * never pick an epoch by its validation loss: that choice looks at data
 * outside the accounted mechanism (the validation rows, and the sequence of
 * models), so the model returned is the last iterate, whose privacy is
 * exactly what the accountant computes. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/clikit.h"
#include "cli/commands.h"
#include "core/accountant.h"
#include "core/dataset.h"
#include "core/idx.h"
#include "core/log.h"
#include "core/model.h"
#include "core/train.h"
#include "crypto/dpsource.h"
#include "kernels/backend.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: cohort train --data F.csv --schema S.ini [options]\n"
            "       cohort train --data DIR [options]   (DIR holds IDX files, e.g. Fashion-MNIST)\n"
            "  --model logreg|mlp:H1,H2,..  model (default logreg)\n"
            "  --device auto|cpu|cuda       compute backend (default auto)\n"
            "  --epochs N                   maximum epochs (default 100)\n"
            "  --batch N                    batch size (default 64)\n"
            "  --optimizer sgd|adam         (default adam)\n"
            "  --lr X                       learning rate (default 0.01 adam, 0.1 sgd)\n"
            "  --momentum X                 SGD momentum (default 0.9)\n"
            "  --weight-decay X             L2 weight decay (default 1e-4)\n"
            "  --patience N                 early-stopping patience in epochs (default 10)\n"
            "  --val-fraction X             validation share of the rows (default 0.1)\n"
            "  --test-fraction X            test share of the rows (default 0.2)\n"
            "  --seed N                     split, initialisation and shuffling seed (default 42)\n"
            "  --limit N                    read at most N rows of each IDX file\n"
            "  --out F                      write the trained model (Cohort format) to F\n"
            "  --json                       print the result as one JSON object on stdout\n"
            "DP-SGD (record-level differential privacy, docs/privacy.md):\n"
            "  --dp-clip C                  clip each example's gradient to norm C: DP on\n"
            "  --dp-noise S                 noise multiplier: Gaussian noise of stddev S*C\n"
            "  --dp-epsilon E               or: the smallest S meeting (E, delta) in the\n"
            "                               planned steps\n"
            "  --dp-batch B                 expected Poisson batch size (default --batch)\n"
            "  --dp-delta D                 delta of the reported epsilon (default 1e-5)\n"
            "  --accountant rdp|pld         privacy accountant (default rdp)\n"
            "  DP runs train every epoch: no early stopping, no best-epoch pick.\n");
}

typedef struct train_opts {
    const char *data, *schema, *model, *device, *out;
    long epochs, batch, patience, limit;
    int optimizer;
    double lr, momentum, weight_decay, val_frac, test_frac;
    unsigned long long seed;
    int json;
    /* DP-SGD; dp is on when dp_clip > 0 */
    double dp_clip, dp_noise, dp_eps, dp_delta;
    long dp_batch;
    int accountant, have_delta, have_accountant;
} train_opts;

static int parse_args(train_opts *o, int argc, char **argv) {
    static const struct option longopts[] = {{"data", required_argument, 0, 'd'},
                                             {"schema", required_argument, 0, 's'},
                                             {"model", required_argument, 0, 'm'},
                                             {"device", required_argument, 0, 'D'},
                                             {"epochs", required_argument, 0, 'e'},
                                             {"batch", required_argument, 0, 'b'},
                                             {"optimizer", required_argument, 0, 'o'},
                                             {"lr", required_argument, 0, 'l'},
                                             {"momentum", required_argument, 0, 'M'},
                                             {"weight-decay", required_argument, 0, 'w'},
                                             {"patience", required_argument, 0, 'p'},
                                             {"val-fraction", required_argument, 0, 'v'},
                                             {"test-fraction", required_argument, 0, 't'},
                                             {"seed", required_argument, 0, 'S'},
                                             {"out", required_argument, 0, 'O'},
                                             {"limit", required_argument, 0, 'L'},
                                             {"json", no_argument, 0, 'j'},
                                             {"dp-clip", required_argument, 0, 'C'},
                                             {"dp-noise", required_argument, 0, 'N'},
                                             {"dp-epsilon", required_argument, 0, 'E'},
                                             {"dp-batch", required_argument, 0, 'B'},
                                             {"dp-delta", required_argument, 0, 'Q'},
                                             {"accountant", required_argument, 0, 'A'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->model = "logreg";
    o->device = "auto";
    o->epochs = 100;
    o->batch = 64;
    o->patience = 10;
    o->optimizer = FL_OPT_ADAM;
    o->lr = -1.0;
    o->momentum = 0.9;
    o->weight_decay = 1e-4;
    o->val_frac = 0.1;
    o->test_frac = 0.2;
    o->seed = 42;
    o->dp_delta = 1e-5;
    o->accountant = FL_ACCOUNTANT_RDP;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'd':
            o->data = optarg;
            break;
        case 's':
            o->schema = optarg;
            break;
        case 'm':
            o->model = optarg;
            break;
        case 'D':
            o->device = optarg;
            break;
        case 'O':
            o->out = optarg;
            break;
        case 'e':
            bad = fl_cli_long(&o->epochs, "--epochs", optarg, 1, 1000000);
            break;
        case 'b':
            bad = fl_cli_long(&o->batch, "--batch", optarg, 1, 1 << 20);
            break;
        case 'L':
            bad = fl_cli_long(&o->limit, "--limit", optarg, 1, 1L << 40);
            break;
        case 'p':
            bad = fl_cli_long(&o->patience, "--patience", optarg, 0, 1000000);
            break;
        case 'l':
            bad = fl_cli_double(&o->lr, "--lr", optarg, 1e-12, 1e6);
            break;
        case 'M':
            bad = fl_cli_double(&o->momentum, "--momentum", optarg, 0.0, 0.999999);
            break;
        case 'w':
            bad = fl_cli_double(&o->weight_decay, "--weight-decay", optarg, 0.0, 1e3);
            break;
        case 'v':
            bad = fl_cli_double(&o->val_frac, "--val-fraction", optarg, 0.0, 0.9);
            break;
        case 't':
            bad = fl_cli_double(&o->test_frac, "--test-fraction", optarg, 0.0, 0.9);
            break;
        case 'S':
            bad = fl_cli_u64(&o->seed, "--seed", optarg);
            break;
        case 'j':
            o->json = 1;
            break;
        case 'C':
            bad = fl_cli_double(&o->dp_clip, "--dp-clip", optarg, 0.0, 1e6);
            if (!bad && !(o->dp_clip > 0.0))
                bad = fl_cli_bad("--dp-clip", optarg, "a clipping norm > 0");
            break;
        case 'N':
            bad = fl_cli_double(&o->dp_noise, "--dp-noise", optarg, 0.0, 1e4);
            if (!bad && !(o->dp_noise >= 0.01))
                bad = fl_cli_bad("--dp-noise", optarg, "a noise multiplier in [0.01, 10000]");
            break;
        case 'E':
            bad = fl_cli_double(&o->dp_eps, "--dp-epsilon", optarg, 0.0, 1e4);
            if (!bad && !(o->dp_eps > 0.0))
                bad = fl_cli_bad("--dp-epsilon", optarg, "a target epsilon > 0");
            break;
        case 'B':
            bad = fl_cli_long(&o->dp_batch, "--dp-batch", optarg, 1, 1 << 20);
            break;
        case 'Q':
            bad = fl_cli_double(&o->dp_delta, "--dp-delta", optarg, 0.0, 1.0);
            if (!bad && !(o->dp_delta > 0.0 && o->dp_delta < 1.0))
                bad = fl_cli_bad("--dp-delta", optarg, "a probability in (0, 1)");
            o->have_delta = 1;
            break;
        case 'A':
            if (fl_accountant_parse(&o->accountant, optarg, NULL))
                bad = fl_cli_bad("--accountant", optarg, "rdp or pld");
            o->have_accountant = 1;
            break;
        case 'o':
            if (!strcmp(optarg, "sgd"))
                o->optimizer = FL_OPT_SGD;
            else if (!strcmp(optarg, "adam"))
                o->optimizer = FL_OPT_ADAM;
            else
                bad = fl_cli_bad("--optimizer", optarg, "sgd or adam");
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "cohort train: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "cohort train: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    struct stat st;
    int is_dir = o->data && stat(o->data, &st) == 0 && S_ISDIR(st.st_mode);
    if (!o->data || (!o->schema && !is_dir)) {
        fprintf(stderr, "cohort train: --data and --schema are required (--schema is not "
                        "needed when --data is a directory of IDX files)\n");
        usage(stderr);
        return 2;
    }
    if (o->val_frac + o->test_frac >= 0.95) {
        fprintf(stderr, "cohort train: --val-fraction + --test-fraction must be below 0.95\n");
        return 2;
    }
    if (o->lr < 0.0) o->lr = o->optimizer == FL_OPT_ADAM ? 0.01 : 0.1;
    if (!(o->dp_clip > 0.0)) {
        const char *dp_only = o->dp_noise > 0.0    ? "--dp-noise"
                              : o->dp_eps > 0.0    ? "--dp-epsilon"
                              : o->dp_batch > 0    ? "--dp-batch"
                              : o->have_delta      ? "--dp-delta"
                              : o->have_accountant ? "--accountant"
                                                   : NULL;
        if (dp_only) {
            fprintf(stderr, "cohort train: %s: only with --dp-clip (DP-SGD)\n", dp_only);
            return 2;
        }
        return 0;
    }
    if ((o->dp_noise > 0.0) == (o->dp_eps > 0.0)) {
        fprintf(stderr, "cohort train: --dp-clip: expected exactly one of --dp-noise and "
                        "--dp-epsilon\n");
        return 2;
    }
    return 0;
}

/* ================================ DP-SGD ================================== */

/* The private side of a run: where its randomness comes from, and what the
 * accountant needs. */
typedef struct dp_run {
    fl_dp_source *source; /* Poisson coins and Gaussian noise (crypto/dpsource.h) */
    double q, sigma, delta;
    int accountant;
    long batch; /* expected batch: q n */
    int64_t steps_per_epoch;
} dp_run;

static int dp_epsilon(double *eps, double *order, const dp_run *d, int64_t steps, char *err) {
    fl_dp_phase ph = {d->q, d->sigma, steps};
    return fl_accountant_epsilon(eps, order, d->accountant, &ph, 1, d->delta, err);
}

/* Sets up d for a training set of n rows: sampling rate, sigma (calibrated
 * for the planned steps with --dp-epsilon), randomness. Bad flag values are
 * FL_EINVAL with the flag named in err. */
static int dp_setup(dp_run *d, const train_opts *o, int64_t n, char *err) {
    long B = o->dp_batch > 0 ? o->dp_batch : o->batch;
    if (B > n)
        return fl_seterr(err, FL_EINVAL,
                         "--dp-batch: the expected batch %ld is larger than the %lld training rows",
                         B, (long long)n);
    d->batch = B;
    d->q = (double)B / (double)n;
    d->delta = o->dp_delta;
    d->accountant = o->accountant;
    d->steps_per_epoch = (n + B - 1) / B;
    d->sigma = o->dp_noise;
    if (o->dp_eps > 0.0) {
        char why[FL_ERR_LEN] = "";
        int64_t planned = d->steps_per_epoch * o->epochs;
        int rc = fl_dp_calibrate_sigma(&d->sigma, d->q, planned, o->dp_eps, d->delta, d->accountant,
                                       why);
        if (rc)
            return fl_seterr(err, FL_EINVAL, "--dp-epsilon: cannot calibrate for %g: %s", o->dp_eps,
                             why[0] ? why : fl_strerror(rc));
        fl_info("dp: sigma %.6f meets epsilon %g at delta %g over %lld steps (q %.6g, %s)",
                d->sigma, o->dp_eps, d->delta, (long long)planned, d->q,
                fl_accountant_name(d->accountant));
    }
    return 0;
}

static void dp_free(dp_run *d) {
    fl_dp_source_free(d->source);
}

static void on_epoch(void *ctx, const fl_epoch_report *r) {
    const dp_run *d = ctx;
    if (d) {
        double eps = NAN;
        dp_epsilon(&eps, NULL, d, d->steps_per_epoch * r->epoch, NULL);
        fl_info("epoch %3d  train loss %.5f  epsilon %.4f (delta %g, %s, poisson)", r->epoch,
                r->train_loss, eps, d->delta, fl_accountant_name(d->accountant));
        return;
    }
    if (!isfinite(r->val_loss)) { /* no validation split (--val-fraction 0) */
        fl_info("epoch %3d  train loss %.5f", r->epoch, r->train_loss);
        return;
    }
    fl_info("epoch %3d  train loss %.5f  val loss %.5f  val acc %.4f%s", r->epoch, r->train_loss,
            r->val_loss, r->val_accuracy, r->improved ? "  *" : "");
}

static cJSON *eval_json(const fl_eval *ev) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", (double)ev->n);
    cJSON_AddNumberToObject(o, "accuracy", ev->accuracy);
    if (isfinite(ev->auc))
        cJSON_AddNumberToObject(o, "auc", ev->auc);
    else
        cJSON_AddNullToObject(o, "auc");
    cJSON_AddNumberToObject(o, "loss", ev->loss);
    return o;
}

/* IDX mode: the directory's training files give train and validation (a
 * stratified --val-fraction), its t10k files the test set. */
static int load_idx(fl_dataset *tr, fl_dataset *va, fl_dataset *te, const train_opts *o,
                    char *err) {
    fl_dataset all = {0};
    int32_t *itr = NULL, *iva = NULL, *ite = NULL;
    int64_t ntr, nva, nte;
    int rc = fl_idx_load_dir(&all, o->data, 0, o->limit, err);
    if (!rc) rc = fl_idx_load_dir(te, o->data, 1, o->limit, err);
    if (rc) goto cleanup;
    if (te->d != all.d || te->n_classes > all.n_classes) {
        rc = fl_seterr(err, FL_EINVAL, "%s: test images do not match the training images", o->data);
        goto cleanup;
    }
    te->n_classes = all.n_classes;
    if ((rc = fl_split_stratified(&itr, &ntr, &iva, &nva, &ite, &nte, all.y, all.n, all.n_classes,
                                  o->val_frac, 0.0, o->seed)))
        goto cleanup;
    rc = fl_dataset_subset(tr, &all, itr, ntr);
    if (!rc) rc = fl_dataset_subset(va, &all, iva, nva);
cleanup:
    free(itr);
    free(iva);
    free(ite);
    fl_dataset_free(&all);
    return rc;
}

int cmd_train(int argc, char **argv) {
    train_opts o;
    int prc = parse_args(&o, argc, argv);
    if (prc) return prc == 1 ? 0 : prc;
    fl_log_set_tag("train");
    char err[FL_ERR_LEN] = "";
    int rc = FL_OK;
    fl_schema schema = {0};
    fl_csv csv = {0};
    fl_encoder enc = {0};
    fl_dataset tr = {0}, va = {0}, te = {0};
    fl_backend *be = NULL;
    fl_model model = {0};
    dp_run dp = {0};
    int is_dp = o.dp_clip > 0.0;
    enum fl_device dev;
    if (fl_device_parse(&dev, o.device)) {
        fl_cli_bad("--device", o.device, "auto, cpu or cuda");
        return 2;
    }
    struct stat st;
    if (stat(o.data, &st) == 0 && S_ISDIR(st.st_mode)) {
        if ((rc = load_idx(&tr, &va, &te, &o, err))) goto cleanup;
    } else {
        if ((rc = fl_schema_load(&schema, o.schema, err))) goto cleanup;
        if ((rc = fl_csv_load(&csv, o.data, err))) goto cleanup;
        if ((rc = fl_dataset_load_split(&tr, &va, &te, &enc, &csv, &schema, o.val_frac, o.test_frac,
                                        o.seed, err)))
            goto cleanup;
    }
    fl_info("%s: train %lld, validation %lld, test %lld rows; %d features, %d classes", o.data,
            (long long)tr.n, (long long)va.n, (long long)te.n, tr.d, tr.n_classes);
    fl_model_spec spec;
    if ((rc = fl_model_spec_parse(&spec, o.model, tr.d, tr.n_classes, err))) goto cleanup;
    if (is_dp && (rc = dp_setup(&dp, &o, tr.n, err))) goto cleanup;
    if ((rc = fl_backend_open(&be, dev, err))) goto cleanup;
    /* Room for a Poisson batch six standard deviations above its mean. */
    long max_batch = o.batch;
    if (is_dp) max_batch = (long)fmin((double)tr.n, ceil(dp.batch + 6.0 * sqrt(dp.batch) + 16.0));
    if ((rc = fl_model_init(&model, be, &spec, (int)max_batch, o.seed, err))) goto cleanup;
    fl_train_config cfg;
    fl_train_config_default(&cfg);
    cfg.epochs = (int)o.epochs;
    cfg.batch_size = (int)o.batch;
    cfg.optimizer = o.optimizer;
    cfg.lr = o.lr;
    cfg.momentum = o.optimizer == FL_OPT_SGD ? o.momentum : 0.0;
    cfg.weight_decay = o.weight_decay;
    cfg.patience = (int)o.patience;
    cfg.seed = o.seed;
    cfg.on_epoch = on_epoch;
    if (is_dp) {
        cfg.batch_size = (int)dp.batch;
        cfg.patience = 0;
        cfg.dp_clip = o.dp_clip;
        cfg.dp_noise = dp.sigma;
        cfg.ctx = &dp;
        if ((rc = fl_dp_source_new(&dp.source, (size_t)model.n_params, dp.sigma * o.dp_clip, err)))
            goto cleanup;
        cfg.noise = fl_dp_source_noise(dp.source);
    }
    fl_train_result res;
    /* DP: no validation set, so no early stopping and no best-epoch pick. */
    if ((rc = fl_train(&res, &model, &tr, is_dp ? NULL : &va, &cfg, err))) goto cleanup;
    double dp_eps = NAN, dp_order = NAN;
    if (is_dp && (rc = dp_epsilon(&dp_eps, &dp_order, &dp, res.steps, err))) goto cleanup;
    fl_eval ev_test, ev_val;
    if ((rc = fl_model_evaluate(&ev_test, &model, &te)) ||
        (va.n > 0 && (rc = fl_model_evaluate(&ev_val, &model, &va)))) {
        fl_seterr(err, rc, "evaluation: %s", fl_backend_error(be));
        goto cleanup;
    }
    char name[FL_SPEC_LEN];
    fl_model_spec_name(name, &spec);
    fl_info("test: accuracy %.4f  auc %.4f  loss %.4f  (best epoch %d of %d)", ev_test.accuracy,
            ev_test.auc, ev_test.loss, res.best_epoch, res.epochs_run);
    if (is_dp)
        fl_info("privacy: epsilon %.4f at delta %g (%s accountant, Poisson sampling q %.6g, "
                "noise multiplier %.6g, clip %g, %lld steps)",
                dp_eps, dp.delta, fl_accountant_name(dp.accountant), dp.q, dp.sigma, o.dp_clip,
                (long long)res.steps);
    if (o.out && (rc = fl_cli_save_model(o.out, &model, err))) goto cleanup;
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddItemToObject(j, "test", eval_json(&ev_test));
        if (va.n > 0) cJSON_AddItemToObject(j, "validation", eval_json(&ev_val));
        cJSON *t = cJSON_AddObjectToObject(j, "train");
        cJSON_AddNumberToObject(t, "n", (double)tr.n);
        cJSON_AddNumberToObject(t, "epochs", res.epochs_run);
        cJSON_AddNumberToObject(t, "best_epoch", res.best_epoch);
        cJSON_AddNumberToObject(t, "steps", (double)res.steps);
        cJSON_AddStringToObject(j, "model", name);
        cJSON_AddNumberToObject(j, "n_params", (double)model.n_params);
        cJSON_AddNumberToObject(j, "features", tr.d);
        cJSON_AddNumberToObject(j, "classes", tr.n_classes);
        cJSON_AddStringToObject(j, "device", fl_backend_name(be));
        cJSON_AddNumberToObject(j, "seed", (double)o.seed);
        cJSON_AddStringToObject(j, "data", o.data);
        if (is_dp) {
            cJSON *pj = cJSON_AddObjectToObject(j, "privacy");
            cJSON_AddNumberToObject(pj, "epsilon", dp_eps);
            cJSON_AddNumberToObject(pj, "delta", dp.delta);
            cJSON_AddStringToObject(pj, "accountant", fl_accountant_name(dp.accountant));
            if (isfinite(dp_order))
                cJSON_AddNumberToObject(pj, "order", dp_order);
            else
                cJSON_AddNullToObject(pj, "order");
            cJSON_AddNumberToObject(pj, "noise_multiplier", dp.sigma);
            cJSON_AddNumberToObject(pj, "clip", o.dp_clip);
            cJSON_AddNumberToObject(pj, "sample_rate", dp.q);
            cJSON_AddNumberToObject(pj, "expected_batch", (double)dp.batch);
            cJSON_AddNumberToObject(pj, "steps", (double)res.steps);
            cJSON_AddStringToObject(pj, "sampling", "poisson");
            cJSON_AddStringToObject(pj, "adjacency", "add_remove_one");
            cJSON_AddStringToObject(pj, "noise", "dpnoise (discrete, grid 2^-20 stddev, snapped)");
            if (o.dp_eps > 0.0) cJSON_AddNumberToObject(pj, "target_epsilon", o.dp_eps);
        }
        if (fl_cli_print_json(j)) rc = FL_EIO;
    }
cleanup:
    /* An input file that cannot be read is bad input (exit 2), like one that
     * cannot be parsed; I/O failures after that are runtime failures. */
    if (rc == FL_EIO && !model.be) rc = FL_EINVAL;
    if (rc) fprintf(stderr, "cohort train: %s\n", err[0] ? err : fl_strerror(rc));
    fl_model_free(&model);
    fl_backend_close(be);
    dp_free(&dp);
    fl_dataset_free(&tr);
    fl_dataset_free(&va);
    fl_dataset_free(&te);
    fl_encoder_free(&enc);
    fl_csv_free(&csv);
    fl_schema_free(&schema);
    return fl_exit_code(rc);
}
