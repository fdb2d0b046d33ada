/* rpc.c: unary gRPC over mutual TLS on the gRPC C core API (see rpc.h; the
 * design is in DESIGN.md §3 and §5, the guide in docs/transport.md).
 *
 * Server. One completion queue, driven by cfg.threads threads. Each method
 * keeps a few outstanding grpc_server_request_registered_call "slots" (with
 * the request payload read by gRPC before the call is published); one more
 * slot takes calls to unknown methods and answers UNIMPLEMENTED. When a call
 * arrives its slot becomes the fl_rpc_call, a fresh slot is posted, a
 * RECV_CLOSE_ON_SERVER batch is started (so a client that goes away is
 * noticed even while the application sits on the call), and the handler is
 * invoked. The reply is a single SEND_INITIAL_METADATA + SEND_MESSAGE +
 * SEND_STATUS_FROM_SERVER batch, started from whichever thread replies.
 *
 * Lifetime of a call, all under srv->mu: `ops` counts our batches gRPC has
 * not completed yet, `replied` says the application gave the call back. The
 * grpc_call is unreferenced once ops is 0 and either the application replied
 * or the server is stopping; the struct is freed once ops is 0 and the
 * application replied. So a reply after cancellation or after shutdown finds
 * a valid struct and is dropped, and gRPC never sees a freed tag. The server
 * struct itself outlives fl_rpc_server_free while the application still holds
 * calls; the last reply frees it.
 *
 * Client. A channel is a grpc_channel; each call makes its own completion
 * queue and runs all six client ops as one batch, so calls are independent
 * and thread-safe. */
#include "net/rpc.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <sodium.h>

#include "core/log.h"

/* rpc.h promises the numbers of grpc_status_code without including gRPC. */
#define SAME_CODE(a, b) _Static_assert((int)(a) == (int)(b), #a " must equal " #b)
SAME_CODE(FL_RPC_OK, GRPC_STATUS_OK);
SAME_CODE(FL_RPC_CANCELLED, GRPC_STATUS_CANCELLED);
SAME_CODE(FL_RPC_UNKNOWN, GRPC_STATUS_UNKNOWN);
SAME_CODE(FL_RPC_INVALID_ARGUMENT, GRPC_STATUS_INVALID_ARGUMENT);
SAME_CODE(FL_RPC_DEADLINE_EXCEEDED, GRPC_STATUS_DEADLINE_EXCEEDED);
SAME_CODE(FL_RPC_NOT_FOUND, GRPC_STATUS_NOT_FOUND);
SAME_CODE(FL_RPC_ALREADY_EXISTS, GRPC_STATUS_ALREADY_EXISTS);
SAME_CODE(FL_RPC_PERMISSION_DENIED, GRPC_STATUS_PERMISSION_DENIED);
SAME_CODE(FL_RPC_RESOURCE_EXHAUSTED, GRPC_STATUS_RESOURCE_EXHAUSTED);
SAME_CODE(FL_RPC_FAILED_PRECONDITION, GRPC_STATUS_FAILED_PRECONDITION);
SAME_CODE(FL_RPC_ABORTED, GRPC_STATUS_ABORTED);
SAME_CODE(FL_RPC_OUT_OF_RANGE, GRPC_STATUS_OUT_OF_RANGE);
SAME_CODE(FL_RPC_UNIMPLEMENTED, GRPC_STATUS_UNIMPLEMENTED);
SAME_CODE(FL_RPC_INTERNAL, GRPC_STATUS_INTERNAL);
SAME_CODE(FL_RPC_UNAVAILABLE, GRPC_STATUS_UNAVAILABLE);
SAME_CODE(FL_RPC_DATA_LOSS, GRPC_STATUS_DATA_LOSS);
SAME_CODE(FL_RPC_UNAUTHENTICATED, GRPC_STATUS_UNAUTHENTICATED);

#define MAX_METHODS 64
/* Outstanding request slots per method and server thread: enough that a
 * burst of calls rarely waits for a slot to be re-posted. */
#define SLOTS_PER_THREAD 4

/* ============================ Shared helpers ============================ */

static const char *const g_status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *fl_rpc_status_name(int status) {
    if (status < 0 || status > FL_RPC_UNAUTHENTICATED) return "UNKNOWN_STATUS";
    return g_status_names[status];
}

int fl_rpc_status_to_code(int status) {
    switch (status) {
    case FL_RPC_OK:
        return FL_OK;
    case FL_RPC_DEADLINE_EXCEEDED:
        return FL_ETIMEOUT;
    case FL_RPC_UNAVAILABLE:
    case FL_RPC_CANCELLED:
        return FL_EIO;
    case FL_RPC_UNAUTHENTICATED:
    case FL_RPC_PERMISSION_DENIED:
        return FL_EAUTH;
    case FL_RPC_INVALID_ARGUMENT:
    case FL_RPC_OUT_OF_RANGE:
    case FL_RPC_RESOURCE_EXHAUSTED:
        return FL_EINVAL;
    case FL_RPC_FAILED_PRECONDITION:
    case FL_RPC_ABORTED:
        return FL_ESTATE;
    case FL_RPC_UNIMPLEMENTED:
        return FL_ENOTSUP;
    default:
        return FL_EPROTO;
    }
}

void fl_rpc_global_init(void) {
    grpc_init();
}

void fl_rpc_global_shutdown(void) {
    grpc_shutdown();
}

int64_t fl_rpc_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A cheap sanity check so that an obviously wrong argument (a path instead
 * of PEM text, an empty string) fails with FL_EINVAL and a clear message,
 * rather than as an opaque bind or handshake failure later. */
static int looks_like_pem(const char *s) {
    return s && strstr(s, "-----BEGIN ") != NULL;
}

/* Copies a received message into one malloc'd block (at least 1 byte, so a
 * successful empty message is never NULL). NULL bb means no message. */
static int bb_to_buf(grpc_byte_buffer *bb, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    size_t total = 0;
    grpc_byte_buffer_reader r;
    grpc_slice *s;
    if (bb) {
        if (!grpc_byte_buffer_reader_init(&r, bb)) return FL_EPROTO;
        while (grpc_byte_buffer_reader_peek(&r, &s))
            total += GRPC_SLICE_LENGTH(*s);
        grpc_byte_buffer_reader_destroy(&r);
    }
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf) return FL_ENOMEM;
    if (bb) {
        if (!grpc_byte_buffer_reader_init(&r, bb)) {
            free(buf);
            return FL_EPROTO;
        }
        size_t off = 0;
        while (grpc_byte_buffer_reader_peek(&r, &s)) {
            size_t n = GRPC_SLICE_LENGTH(*s);
            memcpy(buf + off, GRPC_SLICE_START_PTR(*s), n);
            off += n;
        }
        grpc_byte_buffer_reader_destroy(&r);
    }
    *out = buf;
    *out_len = total;
    return FL_OK;
}

/* A byte buffer holding a copy of data[0..len); NULL on allocation failure. */
static grpc_byte_buffer *buf_to_bb(const uint8_t *data, size_t len) {
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static int check_max_msg(size_t max_msg, int *out, char *err) {
    if (max_msg == 0) max_msg = FL_RPC_DEFAULT_MAX_MSG;
    if (max_msg > FL_RPC_MAX_MSG_LIMIT)
        return fl_seterr(err, FL_EINVAL, "max message size %zu is above gRPC's limit of %zu bytes",
                         max_msg, FL_RPC_MAX_MSG_LIMIT);
    *out = (int)max_msg;
    return FL_OK;
}

static grpc_arg int_arg(const char *key, int value) {
    grpc_arg a;
    memset(&a, 0, sizeof a);
    a.type = GRPC_ARG_INTEGER;
    a.key = (char *)key; /* gRPC copies args; the cast only drops const */
    a.value.integer = value;
    return a;
}

/* ================================ Server ================================ */

enum tag_kind { TAG_NEW, TAG_CLOSE, TAG_SEND, TAG_SHUTDOWN };

typedef struct rpc_tag {
    enum tag_kind kind;
    struct fl_rpc_call *call;
} rpc_tag;

struct fl_rpc_call {
    fl_rpc_server *srv;
    int method; /* index into srv->methods; -1 for the unknown-method slot */
    rpc_tag t_new, t_close, t_send;

    /* Written by gRPC when the call is published (the slot's request). */
    grpc_call *gcall;
    gpr_timespec deadline_ts;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* the unknown-method slot only */
    int close_cancelled;       /* written by RECV_CLOSE_ON_SERVER */

    /* Set in the loop before the handler runs; read-only afterwards. */
    uint8_t *req;
    size_t req_len;
    char *peer_pem, *peer_cn;
    int64_t deadline_ms;

    /* Under srv->mu. */
    int ops;     /* our batches gRPC has not completed */
    int replied; /* the application gave the call back */
    int closed;  /* RECV_CLOSE completed: nothing more can be sent */
    grpc_byte_buffer *resp_bb;
    struct fl_rpc_call *prev, *next; /* srv->live, calls past arrival */
};

struct fl_rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    void *reg[MAX_METHODS];
    char *methods[MAX_METHODS];
    size_t n_methods;
    fl_rpc_handler on_call;
    void *user;
    int port;
    int slots;
    pthread_t *threads;
    int n_threads;

    /* mu protects everything below and the locked fields of every call. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;      /* fl_rpc_server_free began: no new calls, replies dropped */
    int shutdown_done; /* gRPC reported the server shut down */
    int busy;          /* threads in on_new still calling into the grpc_server */
    int freed;         /* fl_rpc_server_free returned; held calls keep this alive */
    fl_rpc_call *live;
    rpc_tag t_shutdown;
};

static void call_destroy(fl_rpc_call *c) {
    if (!c) return;
    grpc_metadata_array_destroy(&c->md);
    if (c->method < 0) grpc_call_details_destroy(&c->details);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->resp_bb) grpc_byte_buffer_destroy(c->resp_bb);
    free(c->req);
    free(c->peer_pem);
    free(c->peer_cn);
    free(c);
}

static void server_destroy_struct(fl_rpc_server *srv) {
    for (size_t i = 0; i < srv->n_methods; i++)
        free(srv->methods[i]);
    free(srv->threads);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv);
}

static void live_add(fl_rpc_server *srv, fl_rpc_call *c) {
    c->prev = NULL;
    c->next = srv->live;
    if (srv->live) srv->live->prev = c;
    srv->live = c;
}

static void live_remove(fl_rpc_server *srv, fl_rpc_call *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->live = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* With srv->mu held, after ops or replied changed: drops the grpc_call once
 * gRPC and the application are both done with it (or the server is
 * stopping, when the application's half no longer needs gRPC). Returns 1 when
 * the struct must now be freed by the caller, after unlocking. */
static int call_settle(fl_rpc_call *c) {
    fl_rpc_server *srv = c->srv;
    if (c->ops > 0) return 0;
    if ((c->replied || srv->stopping) && c->gcall) {
        grpc_call_unref(c->gcall);
        c->gcall = NULL;
    }
    if (!c->replied) return 0;
    live_remove(srv, c);
    return 1;
}

/* Posts one request slot for method (or -1: any unknown method). */
static int post_slot(fl_rpc_server *srv, int method) {
    fl_rpc_call *c = calloc(1, sizeof *c);
    if (!c) return FL_ENOMEM;
    c->srv = srv;
    c->method = method;
    c->t_new = (rpc_tag){TAG_NEW, c};
    c->t_close = (rpc_tag){TAG_CLOSE, c};
    c->t_send = (rpc_tag){TAG_SEND, c};
    grpc_metadata_array_init(&c->md);
    grpc_call_error e;
    if (method >= 0) {
        e = grpc_server_request_registered_call(srv->server, srv->reg[method], &c->gcall,
                                                &c->deadline_ts, &c->md, &c->payload, srv->cq,
                                                srv->cq, &c->t_new);
    } else {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(srv->server, &c->gcall, &c->details, &c->md, srv->cq, srv->cq,
                                     &c->t_new);
    }
    if (e != GRPC_CALL_OK) {
        call_destroy(c);
        return FL_ESTATE;
    }
    return FL_OK;
}

/* Copies one auth-context property, "" when absent. */
static char *auth_prop(grpc_auth_context *ctx, const char *name) {
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, name);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    size_t n = p && p->value ? p->value_length : 0;
    char *s = malloc(n + 1);
    if (!s) return NULL;
    if (n) memcpy(s, p->value, n);
    s[n] = '\0';
    return s;
}

/* Fills the call's read-only fields from what gRPC published. Returns the
 * status to answer with when the call cannot be handed to the application. */
static int call_prepare(fl_rpc_call *c) {
    grpc_auth_context *ctx = grpc_call_auth_context(c->gcall);
    /* The TLS policy already refuses unauthenticated peers; this is the
     * second line, so a misconfiguration can never deliver an anonymous call. */
    if (!ctx || !grpc_auth_context_peer_is_authenticated(ctx)) {
        if (ctx) grpc_auth_context_release(ctx);
        return FL_RPC_UNAUTHENTICATED;
    }
    c->peer_pem = auth_prop(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
    c->peer_cn = auth_prop(ctx, GRPC_X509_CN_PROPERTY_NAME);
    grpc_auth_context_release(ctx);
    if (!c->peer_pem || !c->peer_cn) return FL_RPC_RESOURCE_EXHAUSTED;

    /* gRPC's monotonic clock need not share CLOCK_MONOTONIC's origin, so
     * carry over the remaining time rather than the absolute value. */
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    gpr_timespec dl = gpr_convert_clock_type(c->deadline_ts, GPR_CLOCK_MONOTONIC);
    gpr_timespec left = gpr_time_sub(dl, now);
    if (left.tv_sec > (int64_t)1e9) /* infinite, or as good as */
        c->deadline_ms = INT64_MAX;
    else
        c->deadline_ms = fl_rpc_now_ms() + left.tv_sec * 1000 + left.tv_nsec / 1000000;

    int rc = bb_to_buf(c->payload, &c->req, &c->req_len);
    /* Nothing else reads them: give the memory back now rather than when the
     * application replies, possibly much later. */
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    grpc_metadata_array_destroy(&c->md);
    grpc_metadata_array_init(&c->md);
    if (rc == FL_ENOMEM) return FL_RPC_RESOURCE_EXHAUSTED;
    if (rc) return FL_RPC_INTERNAL;
    return FL_RPC_OK;
}

static void on_new(fl_rpc_server *srv, fl_rpc_call *c, int ok) {
    if (!ok) { /* the server is shutting down: the slot was never filled */
        call_destroy(c);
        return;
    }
    pthread_mutex_lock(&srv->mu);
    int stopping = srv->stopping;
    if (!stopping) {
        c->ops = 1; /* the RECV_CLOSE batch started below */
        live_add(srv, c);
        srv->busy++; /* keeps grpc_server_destroy waiting for post_slot below */
    }
    pthread_mutex_unlock(&srv->mu);
    if (stopping) {
        grpc_call_cancel(c->gcall, NULL);
        grpc_call_unref(c->gcall);
        c->gcall = NULL;
        call_destroy(c);
        return;
    }
    /* Keep the pipeline full before doing anything slow. A failure here
     * means the server is shutting down, so no slot is lost. */
    post_slot(srv, c->method);
    /* Before RECV_CLOSE is started: once it is, another server thread may
     * complete it and, if the server is stopping, release the grpc_call. */
    int st = call_prepare(c);

    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    int started = grpc_call_start_batch(c->gcall, &op, 1, &c->t_close, NULL) == GRPC_CALL_OK;
    pthread_mutex_lock(&srv->mu);
    if (!started) { /* cannot happen on a fresh call; if it does, act as if closed */
        c->ops = 0;
        c->closed = 1;
        call_settle(c); /* never frees: not replied yet */
    }
    if (--srv->busy == 0) pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);

    if (c->method < 0) {
        fl_rpc_call_reply(c, FL_RPC_UNIMPLEMENTED, "unknown method", NULL, 0);
    } else if (st != FL_RPC_OK) {
        fl_debug("rpc: refused a call to %s: %s", srv->methods[c->method], fl_rpc_status_name(st));
        fl_rpc_call_reply(c, st, "call could not be accepted", NULL, 0);
    } else {
        srv->on_call(srv->user, c);
    }
}

static void on_done(fl_rpc_server *srv, fl_rpc_call *c, int closing) {
    pthread_mutex_lock(&srv->mu);
    c->ops--;
    if (closing) c->closed = 1;
    int release = call_settle(c);
    pthread_mutex_unlock(&srv->mu);
    if (release) call_destroy(c);
}

static void *loop_main(void *arg) {
    fl_rpc_server *srv = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        rpc_tag *t = ev.tag;
        switch (t->kind) {
        case TAG_NEW:
            on_new(srv, t->call, ev.success);
            break;
        case TAG_CLOSE:
            on_done(srv, t->call, 1);
            break;
        case TAG_SEND:
            on_done(srv, t->call, 0);
            break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&srv->mu);
            srv->shutdown_done = 1;
            pthread_cond_broadcast(&srv->cv);
            pthread_mutex_unlock(&srv->mu);
            break;
        }
    }
    return NULL;
}

/* Disposes of one event while no server thread runs (the failure paths of
 * fl_rpc_server_new): only request slots can be in the queue then. */
static void abort_event(grpc_event ev) {
    rpc_tag *t = ev.tag;
    if (ev.type != GRPC_OP_COMPLETE || t->kind != TAG_NEW) return;
    if (ev.success) { /* a call slipped in before the shutdown: refuse it */
        grpc_call_cancel(t->call->gcall, NULL);
        grpc_call_unref(t->call->gcall);
        t->call->gcall = NULL;
    }
    call_destroy(t->call);
}

/* Takes down a server that has no threads running, on the failure paths of
 * fl_rpc_server_new, and releases everything, the gRPC reference included. */
static void server_abort(fl_rpc_server *srv) {
    if (srv->server) {
        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);
        grpc_server_cancel_all_calls(srv->server);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type != GRPC_OP_COMPLETE) break;
            if (((rpc_tag *)ev.tag)->kind == TAG_SHUTDOWN) break;
            abort_event(ev);
        }
        grpc_server_destroy(srv->server);
    }
    if (srv->cq) {
        grpc_completion_queue_shutdown(srv->cq);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
            abort_event(ev);
        }
        grpc_completion_queue_destroy(srv->cq);
    }
    server_destroy_struct(srv);
    grpc_shutdown();
}

int fl_rpc_server_new(fl_rpc_server **out, const fl_rpc_server_config *cfg, char err[FL_ERR_LEN]) {
    *out = NULL;
    if (!cfg || !cfg->listen_addr || !cfg->on_call)
        return fl_seterr(err, FL_EINVAL, "rpc server: listen address and handler are required");
    if (!looks_like_pem(cfg->ca_pem) || !looks_like_pem(cfg->cert_pem) ||
        !looks_like_pem(cfg->key_pem))
        return fl_seterr(err, FL_EINVAL,
                         "rpc server: CA certificate, certificate and key must be PEM text");
    if (!cfg->methods || cfg->n_methods == 0 || cfg->n_methods > MAX_METHODS)
        return fl_seterr(err, FL_EINVAL, "rpc server: 1..%d method names expected, got %zu",
                         MAX_METHODS, cfg->n_methods);
    for (size_t i = 0; i < cfg->n_methods; i++)
        if (!cfg->methods[i] || cfg->methods[i][0] != '/')
            return fl_seterr(err, FL_EINVAL,
                             "rpc server: method %zu must be a full name like "
                             "\"/cohort.v1.Federation/Join\"",
                             i);
    if (cfg->threads < 0 || cfg->threads > 64)
        return fl_seterr(err, FL_EINVAL, "rpc server: threads must be 0..64, got %d", cfg->threads);
    int max_msg = 0;
    int rc = check_max_msg(cfg->max_msg, &max_msg, err);
    if (rc) return rc;

    fl_rpc_server *srv = calloc(1, sizeof *srv);
    if (!srv) return fl_seterr(err, FL_ENOMEM, "rpc server: out of memory");
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    srv->on_call = cfg->on_call;
    srv->user = cfg->user;
    srv->n_threads = cfg->threads ? cfg->threads : 1;
    srv->slots = SLOTS_PER_THREAD * srv->n_threads;
    srv->t_shutdown = (rpc_tag){TAG_SHUTDOWN, NULL};
    for (size_t i = 0; i < cfg->n_methods; i++) {
        srv->methods[i] = strdup(cfg->methods[i]);
        srv->n_methods = i + 1;
        if (!srv->methods[i]) {
            server_destroy_struct(srv);
            return fl_seterr(err, FL_ENOMEM, "rpc server: out of memory");
        }
    }
    srv->threads = calloc((size_t)srv->n_threads, sizeof *srv->threads);
    if (!srv->threads) {
        server_destroy_struct(srv);
        return fl_seterr(err, FL_ENOMEM, "rpc server: out of memory");
    }

    grpc_init();
    grpc_arg args[] = {
        int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, max_msg),
        int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, max_msg),
        /* Two aggregators must not silently share a port. */
        int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0),
    };
    grpc_channel_args cargs = {sizeof args / sizeof args[0], args};
    srv->server = grpc_server_create(&cargs, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    for (size_t i = 0; i < srv->n_methods; i++) {
        srv->reg[i] = grpc_server_register_method(srv->server, srv->methods[i], NULL,
                                                  GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!srv->reg[i]) {
            rc = fl_seterr(err, FL_EINVAL, "rpc server: cannot register method %s (duplicate?)",
                           srv->methods[i]);
            server_abort(srv);
            return rc;
        }
    }

    grpc_ssl_pem_key_cert_pair pair = {cfg->key_pem, cfg->cert_pem};
    grpc_server_credentials *creds = grpc_ssl_server_credentials_create_ex(
        cfg->ca_pem, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
    if (!creds) {
        rc = fl_seterr(err, FL_EINVAL, "rpc server: unusable TLS credentials");
        server_abort(srv);
        return rc;
    }
    srv->port = grpc_server_add_http2_port(srv->server, cfg->listen_addr, creds);
    grpc_server_credentials_release(creds);
    if (srv->port <= 0) {
        rc = fl_seterr(err, FL_EIO,
                       "rpc server: cannot listen on %s (address in use or invalid, or the "
                       "certificate and key do not load or do not match)",
                       cfg->listen_addr);
        server_abort(srv);
        return rc;
    }
    grpc_server_start(srv->server);
    for (size_t m = 0; m < srv->n_methods; m++)
        for (int k = 0; k < srv->slots; k++)
            if (post_slot(srv, (int)m) == FL_ENOMEM) goto nomem;
    if (post_slot(srv, -1) == FL_ENOMEM) goto nomem;

    /* Signals belong to the program's own threads (the aggregator's SIGTERM
     * handling), so the server threads block them all. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < srv->n_threads; i++) {
        if (pthread_create(&srv->threads[i], NULL, loop_main, srv) != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            /* The threads already running drain the queue while we stop. */
            int started = i;
            srv->n_threads = started;
            if (started == 0) {
                rc = fl_seterr(err, FL_ENOMEM, "rpc server: cannot start a thread");
                server_abort(srv);
                return rc;
            }
            fl_rpc_server_free(srv);
            return fl_seterr(err, FL_ENOMEM, "rpc server: cannot start a thread");
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    *out = srv;
    return FL_OK;

nomem:
    server_abort(srv);
    return fl_seterr(err, FL_ENOMEM, "rpc server: out of memory");
}

int fl_rpc_server_port(const fl_rpc_server *srv) {
    return srv ? srv->port : 0;
}

void fl_rpc_server_free(fl_rpc_server *srv) {
    if (!srv) return;
    pthread_mutex_lock(&srv->mu);
    srv->stopping = 1;
    /* Calls whose client already left and that the application still holds
     * have no batch in flight: nothing else would release their grpc_call. */
    for (fl_rpc_call *c = srv->live; c; c = c->next)
        call_settle(c); /* never frees here: !replied for every live call with ops 0 */
    pthread_mutex_unlock(&srv->mu);

    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);
    grpc_server_cancel_all_calls(srv->server);
    pthread_mutex_lock(&srv->mu);
    while (!srv->shutdown_done || srv->busy > 0)
        pthread_cond_wait(&srv->cv, &srv->mu);
    pthread_mutex_unlock(&srv->mu);

    grpc_server_destroy(srv->server);
    srv->server = NULL;
    grpc_completion_queue_shutdown(srv->cq);
    for (int i = 0; i < srv->n_threads; i++)
        pthread_join(srv->threads[i], NULL);
    grpc_completion_queue_destroy(srv->cq);
    srv->cq = NULL;

    pthread_mutex_lock(&srv->mu);
    srv->freed = 1;
    int last = srv->live == NULL;
    pthread_mutex_unlock(&srv->mu);
    /* Every grpc_call is released by now (ops reached 0 for all calls while
     * stopping), so gRPC may be torn down even if calls are still held. */
    grpc_shutdown();
    if (last) server_destroy_struct(srv);
}

int fl_rpc_call_method(const fl_rpc_call *call) {
    return call->method;
}

const char *fl_rpc_call_method_name(const fl_rpc_call *call) {
    return call->method >= 0 ? call->srv->methods[call->method] : "";
}

const uint8_t *fl_rpc_call_request(const fl_rpc_call *call, size_t *len) {
    if (len) *len = call->req_len;
    return call->req;
}

const char *fl_rpc_call_peer_cert_pem(const fl_rpc_call *call) {
    return call->peer_pem ? call->peer_pem : "";
}

const char *fl_rpc_call_peer_cn(const fl_rpc_call *call) {
    return call->peer_cn ? call->peer_cn : "";
}

int64_t fl_rpc_call_deadline(const fl_rpc_call *call) {
    return call->deadline_ms;
}

int fl_rpc_call_is_cancelled(fl_rpc_call *call) {
    pthread_mutex_lock(&call->srv->mu);
    int r = call->closed || call->srv->stopping;
    pthread_mutex_unlock(&call->srv->mu);
    return r;
}

int fl_rpc_call_reply(fl_rpc_call *c, int status, const char *details, const uint8_t *resp,
                      size_t len) {
    fl_rpc_server *srv = c->srv;
    int rc = FL_OK;
    if (status < FL_RPC_OK || status > FL_RPC_UNAUTHENTICATED) {
        fl_error("rpc: reply with invalid status %d on %s", status, fl_rpc_call_method_name(c));
        status = FL_RPC_INTERNAL;
        details = "server error";
        rc = FL_EINVAL;
    }
    /* Build the message before taking the lock: copying a large model must
     * not hold up the server threads. */
    grpc_byte_buffer *bb = NULL;
    if (status == FL_RPC_OK) {
        bb = buf_to_bb(resp ? resp : (const uint8_t *)"", resp ? len : 0);
        if (!bb) {
            status = FL_RPC_RESOURCE_EXHAUSTED;
            details = "server out of memory";
            rc = FL_ENOMEM;
        }
    }
    grpc_slice det = grpc_slice_from_copied_string(details ? details : "");

    pthread_mutex_lock(&srv->mu);
    /* Answering twice is a bug in the caller; with the struct possibly
     * already freed there is nothing safe to do but document it (rpc.h). */
    c->replied = 1;
    c->resp_bb = bb;
    if (srv->stopping) {
        rc = FL_ESTATE;
    } else if (c->closed) {
        rc = FL_EIO;
    } else {
        grpc_op ops[3];
        size_t n = 0;
        memset(ops, 0, sizeof ops);
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        if (bb) {
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n].data.send_message.send_message = bb;
            n++;
        }
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)status;
        ops[n].data.send_status_from_server.status_details = &det;
        n++;
        /* Under the lock so fl_rpc_server_free cannot slip in between the
         * stopping check and the batch (it would miss this batch's event). */
        if (grpc_call_start_batch(c->gcall, ops, n, &c->t_send, NULL) == GRPC_CALL_OK)
            c->ops++;
        else
            rc = FL_EIO;
    }
    int release = call_settle(c);
    int last = release && srv->freed && srv->live == NULL;
    pthread_mutex_unlock(&srv->mu);
    grpc_slice_unref(det);
    if (release) call_destroy(c);
    if (last) server_destroy_struct(srv);
    return rc;
}

/* ================================ Client ================================ */

/* The peer check's state, owned by gRPC's credentials (freed by their
 * destruct callback, which may run after the channel is gone); the channel
 * reads it only while it is alive, and the credentials live at least as
 * long. */
typedef struct peer_ctx {
    fl_rpc_peer_check check;
    void *user;
    pthread_mutex_t mu;
    int refused;
    char why[256];
} peer_ctx;

static int peer_trampoline(const char *target, const char *pem, void *ud) {
    (void)target;
    peer_ctx *c = ud;
    char why[256] = "";
    int r = c->check(c->user, pem, why, sizeof why);
    if (r) {
        pthread_mutex_lock(&c->mu);
        c->refused = 1;
        snprintf(c->why, sizeof c->why, "%s", why[0] ? why : "the server certificate was refused");
        pthread_mutex_unlock(&c->mu);
    }
    return r ? 1 : 0;
}

static void peer_destruct(void *ud) {
    peer_ctx *c = ud;
    pthread_mutex_destroy(&c->mu);
    free(c);
}

struct fl_rpc_channel {
    grpc_channel *ch;
    int max_msg;
    peer_ctx *peer; /* NULL: no peer check */
};

int fl_rpc_channel_new(fl_rpc_channel **out, const char *target, const char *ca_pem,
                       const char *cert_pem, const char *key_pem,
                       const char *ssl_target_name_override, size_t max_msg, char err[FL_ERR_LEN]) {
    return fl_rpc_channel_new_ex(out, target, ca_pem, cert_pem, key_pem, ssl_target_name_override,
                                 max_msg, NULL, NULL, err);
}

int fl_rpc_channel_new_ex(fl_rpc_channel **out, const char *target, const char *ca_pem,
                          const char *cert_pem, const char *key_pem,
                          const char *ssl_target_name_override, size_t max_msg,
                          fl_rpc_peer_check check, void *user, char err[FL_ERR_LEN]) {
    *out = NULL;
    if (!target || !*target) return fl_seterr(err, FL_EINVAL, "rpc channel: target is required");
    if (!looks_like_pem(ca_pem))
        return fl_seterr(err, FL_EINVAL, "rpc channel: CA certificate must be PEM text");
    if (!cert_pem != !key_pem)
        return fl_seterr(err, FL_EINVAL,
                         "rpc channel: a client certificate needs its key, and a key its "
                         "certificate");
    if (cert_pem && (!looks_like_pem(cert_pem) || !looks_like_pem(key_pem)))
        return fl_seterr(err, FL_EINVAL, "rpc channel: certificate and key must be PEM text");
    int maxm = 0;
    int rc = check_max_msg(max_msg, &maxm, err);
    if (rc) return rc;
    if (sodium_init() < 0) return fl_seterr(err, FL_ECRYPTO, "rpc channel: libsodium init failed");

    fl_rpc_channel *ch = calloc(1, sizeof *ch);
    if (!ch) return fl_seterr(err, FL_ENOMEM, "rpc channel: out of memory");
    ch->max_msg = maxm;
    grpc_init();
    grpc_ssl_pem_key_cert_pair pair = {key_pem, cert_pem};
    grpc_ssl_verify_peer_options vo;
    memset(&vo, 0, sizeof vo);
    if (check) {
        if (!(ch->peer = calloc(1, sizeof *ch->peer))) {
            free(ch);
            grpc_shutdown();
            return fl_seterr(err, FL_ENOMEM, "rpc channel: out of memory");
        }
        ch->peer->check = check;
        ch->peer->user = user;
        pthread_mutex_init(&ch->peer->mu, NULL);
        vo.verify_peer_callback = peer_trampoline;
        vo.verify_peer_callback_userdata = ch->peer;
        vo.verify_peer_destruct = peer_destruct;
    }
    grpc_channel_credentials *creds =
        grpc_ssl_credentials_create_ex(ca_pem, cert_pem ? &pair : NULL, check ? &vo : NULL, NULL);
    if (!creds) {
        if (ch->peer) peer_destruct(ch->peer);
        free(ch);
        grpc_shutdown();
        return fl_seterr(err, FL_EINVAL, "rpc channel: unusable TLS credentials");
    }
    grpc_arg args[6];
    size_t n = 0;
    args[n++] = int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, maxm);
    args[n++] = int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, maxm);
    /* Retries are ours (fl_rpc_unary_retry); gRPC's would also buffer
     * every outgoing message for replay. */
    args[n++] = int_arg(GRPC_ARG_ENABLE_RETRIES, 0);
    /* One connection per channel: two channels with different identities to
     * the same aggregator must never share a subchannel. */
    args[n++] = int_arg(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (ssl_target_name_override) {
        memset(&args[n], 0, sizeof args[n]);
        args[n].type = GRPC_ARG_STRING;
        args[n].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[n].value.string = (char *)ssl_target_name_override;
        n++;
    }
    grpc_channel_args cargs = {n, args};
    /* Never NULL: on a bad target gRPC returns a channel whose calls fail. */
    ch->ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    *out = ch;
    return FL_OK;
}

void fl_rpc_channel_free(fl_rpc_channel *ch) {
    if (!ch) return;
    grpc_channel_destroy(ch->ch);
    free(ch);
    grpc_shutdown();
}

static void set_details(char *details, size_t details_len, const char *s, size_t n) {
    if (!details || details_len == 0) return;
    if (n >= details_len) n = details_len - 1;
    memcpy(details, s, n);
    details[n] = '\0';
}

/* One call; md_flags go on the initial metadata (wait-for-ready for the
 * retried attempts of fl_rpc_unary_retry). */
static int unary(fl_rpc_channel *ch, const char *method, const uint8_t *req, size_t len,
                 int64_t timeout_ms, uint8_t **resp, size_t *resp_len, int *status, char *details,
                 size_t details_len, uint32_t md_flags) {
    if (resp) *resp = NULL;
    if (resp_len) *resp_len = 0;
    if (status) *status = FL_RPC_INVALID_ARGUMENT;
    set_details(details, details_len, "", 0);
    const char *why = NULL;
    if (!ch || !method || method[0] != '/' || !resp || !resp_len)
        why = "channel, method (\"/pkg.Service/Method\") and response pointers are required";
    else if (!req && len)
        why = "request is NULL";
    else if (timeout_ms <= 0)
        why = "timeout must be positive";
    if (why) {
        set_details(details, details_len, why, strlen(why));
        return FL_EINVAL;
    }

    int rc = FL_OK;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_slice mslice = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, mslice,
                                               NULL, deadline, NULL);
    grpc_slice_unref(mslice);
    grpc_byte_buffer *send_bb = buf_to_bb(req ? req : (const uint8_t *)"", len);
    grpc_byte_buffer *recv_bb = NULL;
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice st_details = grpc_empty_slice();
    int tag;

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = md_flags;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &st_details;
    grpc_call_error e = send_bb ? grpc_call_start_batch(call, ops, 6, &tag, NULL) : GRPC_CALL_ERROR;
    if (e != GRPC_CALL_OK) {
        rc = send_bb ? FL_EPROTO : FL_ENOMEM;
        st = send_bb ? GRPC_STATUS_INTERNAL : GRPC_STATUS_RESOURCE_EXHAUSTED;
        const char *m = send_bb ? grpc_call_error_to_string(e) : "out of memory";
        set_details(details, details_len, m, strlen(m));
        grpc_call_cancel(call, NULL);
    } else {
        /* The call's deadline bounds this wait. */
        grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        set_details(details, details_len, (const char *)GRPC_SLICE_START_PTR(st_details),
                    GRPC_SLICE_LENGTH(st_details));
        if (st == GRPC_STATUS_OK) {
            if (!recv_bb) { /* an OK unary call must carry its response */
                st = GRPC_STATUS_INTERNAL;
                const char *m = "server answered OK without a response message";
                set_details(details, details_len, m, strlen(m));
                rc = FL_EPROTO;
            } else {
                rc = bb_to_buf(recv_bb, resp, resp_len);
                if (rc) st = GRPC_STATUS_RESOURCE_EXHAUSTED;
            }
        } else {
            rc = fl_rpc_status_to_code((int)st);
        }
    }
    if (status) *status = (int)st;

    grpc_slice_unref(st_details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    if (recv_bb) grpc_byte_buffer_destroy(recv_bb);
    if (send_bb) grpc_byte_buffer_destroy(send_bb);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    return rc;
}

int fl_rpc_unary(fl_rpc_channel *ch, const char *method, const uint8_t *req, size_t len,
                 int64_t timeout_ms, uint8_t **resp, size_t *resp_len, int *status, char *details,
                 size_t details_len) {
    return unary(ch, method, req, len, timeout_ms, resp, resp_len, status, details, details_len, 0);
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int fl_rpc_unary_retry(fl_rpc_channel *ch, const char *method, const uint8_t *req, size_t len,
                       int64_t timeout_ms, const fl_rpc_backoff *bo, uint8_t **resp,
                       size_t *resp_len, int *status, char *details, size_t details_len,
                       int *attempts) {
    if (attempts) *attempts = 0;
    if (!bo || bo->max_attempts < 1 || bo->base_ms < 1 || bo->cap_ms < bo->base_ms) {
        if (status) *status = FL_RPC_INVALID_ARGUMENT;
        const char *m = "backoff needs max_attempts >= 1 and 1 <= base_ms <= cap_ms";
        set_details(details, details_len, m, strlen(m));
        return FL_EINVAL;
    }
    /* randombytes_uniform takes a uint32_t bound. */
    int64_t cap = bo->cap_ms < INT32_MAX ? bo->cap_ms : INT32_MAX;
    int64_t window = bo->base_ms < cap ? bo->base_ms : cap;
    int st = FL_RPC_UNKNOWN, rc = FL_OK;
    for (int k = 1;; k++) {
        /* After a failure the channel sits in TRANSIENT_FAILURE and a plain
         * call fails at once with the old error even when the server is back;
         * a retried attempt therefore waits for the channel to become ready
         * (within its own timeout), which makes gRPC drive the reconnect. */
        uint32_t flags = k > 1 ? GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                                     GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET
                               : 0;
        /* ... bounded, so that a server that stays away costs each attempt
         * at most twice the backoff cap, not the full call timeout. */
        int64_t t = k > 1 && timeout_ms > 2 * cap ? 2 * cap : timeout_ms;
        rc = unary(ch, method, req, len, t, resp, resp_len, &st, details, details_len, flags);
        /* A wait-for-ready attempt that timed out without ever connecting is
         * still "unavailable", not a slow server. */
        if (k > 1 && st == FL_RPC_DEADLINE_EXCEEDED &&
            grpc_channel_check_connectivity_state(ch->ch, 0) != GRPC_CHANNEL_READY) {
            st = FL_RPC_UNAVAILABLE;
            rc = fl_rpc_status_to_code(st);
        }
        if (attempts) *attempts = k;
        if (st == FL_RPC_UNAVAILABLE && ch->peer) {
            /* The server's certificate was refused: waiting will not change it. */
            pthread_mutex_lock(&ch->peer->mu);
            int refused = ch->peer->refused;
            if (refused) {
                char m[320];
                int n = snprintf(m, sizeof m, "server certificate refused: %s", ch->peer->why);
                set_details(details, details_len, m, n < 0 ? 0 : (size_t)n);
            }
            pthread_mutex_unlock(&ch->peer->mu);
            if (refused) {
                rc = FL_EAUTH;
                break;
            }
        }
        if (st != FL_RPC_UNAVAILABLE || k >= bo->max_attempts) break;
        /* Full jitter (a uniform draw over the whole window) spreads out
         * clients that all lost the aggregator at the same moment. */
        int64_t wait = (int64_t)randombytes_uniform((uint32_t)window + 1);
        fl_debug("rpc: %s unavailable (attempt %d of %d), retrying in %lld ms", method, k,
                 bo->max_attempts, (long long)wait);
        sleep_ms(wait);
        window = window > cap / 2 ? cap : window * 2;
        /* Otherwise gRPC's own reconnect backoff (1 s growing to 120 s) makes
         * the next attempt fail at once without trying to connect. */
        grpc_channel_reset_connect_backoff(ch->ch);
    }
    if (status) *status = st;
    return rc;
}
