/* test_rpc.c: the transport layer (net/rpc.h) on loopback with real TLS: an
 * mTLS echo where the server sees the client's CN; refusal of a client whose
 * certificate comes from another CA, of a client without a certificate, of a
 * plaintext client and of a server the client cannot verify, all without the
 * handler ever running; a reply deferred to another thread; a long poll whose
 * client deadline passes (cleaned up, server keeps serving); 8 threads x 50
 * concurrent calls; a 64 MiB round trip and its refusal under a lower limit;
 * the retry helper against a port where nothing listens; and shutdown with
 * calls still pending or still arriving (leak-checked under ASan). Every
 * server binds 127.0.0.1:0. Certificates come from crypto/pki (two throwaway
 * federation CAs in the test's temporary directory). */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Only for the plaintext-client case, which the wrapper (rightly) cannot
 * express: a raw insecure gRPC channel. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "crypto/pki.h"
#include "net/rpc.h"

#define M_ECHO "/cohort.test.Echo/Echo"
#define M_DEFER "/cohort.test.Echo/Defer"
#define M_HOLD "/cohort.test.Echo/Hold"
#define M_FAIL "/cohort.test.Echo/Fail"
enum { I_ECHO, I_DEFER, I_HOLD, I_FAIL };
static const char *const g_methods[] = {M_ECHO, M_DEFER, M_HOLD, M_FAIL};

/* ============================ Certificates ============================== */

static char *g_ca, *g_srv_crt, *g_srv_key, *g_cli_crt, *g_cli_key;
static char *g_ca2, *g_rogue_crt, *g_rogue_key;

static char *slurp(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", fl_test_tmpdir(), dir, name);
    return fl_test_slurp(path, NULL);
}

/* Two federations' PKIs (crypto/pki, EC P-256): in the first an aggregator
 * certificate (SAN DNS:aggregator, DNS:localhost, IP:127.0.0.1) and a site
 * "site-1"; in the second another "site-1", same name, other CA. */
static int make_certs(void) {
    char d1[4096], d2[4096], err[FL_ERR_LEN];
    snprintf(d1, sizeof d1, "%s/pki1", fl_test_tmpdir());
    snprintf(d2, sizeof d2, "%s/pki2", fl_test_tmpdir());
    if (fl_pki_init(d1, "test-fed", 2, err) || fl_pki_init(d2, "other-fed", 2, err) ||
        fl_pki_issue(d1, "aggregator", FL_ROLE_AGGREGATOR, 2, err) ||
        fl_pki_issue(d1, "site-1", FL_ROLE_CLIENT, 2, err) ||
        fl_pki_issue(d2, "site-1", FL_ROLE_CLIENT, 2, err)) {
        fprintf(stderr, "pki: %s\n", err);
        return -1;
    }
    g_ca = slurp("pki1", "ca.crt");
    g_srv_crt = slurp("pki1", "aggregator.crt");
    g_srv_key = slurp("pki1", "aggregator.key");
    g_cli_crt = slurp("pki1", "site-1.crt");
    g_cli_key = slurp("pki1", "site-1.key");
    g_ca2 = slurp("pki2", "ca.crt");
    g_rogue_crt = slurp("pki2", "site-1.crt");
    g_rogue_key = slurp("pki2", "site-1.key");
    return g_ca && g_srv_crt && g_srv_key && g_cli_crt && g_cli_key && g_ca2 && g_rogue_crt &&
                   g_rogue_key
               ? 0
               : -1;
}

/* ============================ Test server =============================== */

static atomic_int g_handled; /* handler invocations, all servers */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static char g_last_cn[256];
static char g_last_pem[4096];
static int64_t g_last_left_ms;
#define MAX_HELD 16
static fl_rpc_call *g_held[MAX_HELD];
static int g_n_held;

static void *deferred_main(void *arg) {
    fl_rpc_call *call = arg;
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    size_t n;
    const uint8_t *req = fl_rpc_call_request(call, &n);
    char buf[128];
    int len = snprintf(buf, sizeof buf, "late:%.*s", (int)n, (const char *)req);
    fl_rpc_call_reply(call, FL_RPC_OK, NULL, (const uint8_t *)buf, (size_t)len);
    return NULL;
}

static void handler(void *user, fl_rpc_call *call) {
    (void)user;
    atomic_fetch_add(&g_handled, 1);
    size_t n;
    const uint8_t *req = fl_rpc_call_request(call, &n);
    switch (fl_rpc_call_method(call)) {
    case I_ECHO:
        pthread_mutex_lock(&g_mu);
        snprintf(g_last_cn, sizeof g_last_cn, "%s", fl_rpc_call_peer_cn(call));
        snprintf(g_last_pem, sizeof g_last_pem, "%s", fl_rpc_call_peer_cert_pem(call));
        g_last_left_ms = fl_rpc_call_deadline(call) - fl_rpc_now_ms();
        pthread_mutex_unlock(&g_mu);
        fl_rpc_call_reply(call, FL_RPC_OK, NULL, req, n);
        break;
    case I_DEFER: {
        pthread_t t;
        if (pthread_create(&t, NULL, deferred_main, call) != 0)
            fl_rpc_call_reply(call, FL_RPC_UNAVAILABLE, "no thread", NULL, 0);
        else
            pthread_detach(t);
        break;
    }
    case I_HOLD:
        pthread_mutex_lock(&g_mu);
        if (g_n_held < MAX_HELD) {
            g_held[g_n_held++] = call;
            call = NULL;
        }
        pthread_cond_broadcast(&g_cv);
        pthread_mutex_unlock(&g_mu);
        if (call) fl_rpc_call_reply(call, FL_RPC_RESOURCE_EXHAUSTED, "too many held", NULL, 0);
        break;
    case I_FAIL:
        fl_rpc_call_reply(call, FL_RPC_PERMISSION_DENIED, "site-1 is not enrolled", req, n);
        break;
    default:
        fl_rpc_call_reply(call, FL_RPC_INTERNAL, "unexpected method", NULL, 0);
    }
}

/* Waits (up to 10 s) until at least n calls are held; returns how many. */
static int wait_held(int n) {
    int64_t until = fl_rpc_now_ms() + 10000;
    pthread_mutex_lock(&g_mu);
    while (g_n_held < n && fl_rpc_now_ms() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g_cv, &g_mu, &ts);
    }
    int r = g_n_held;
    pthread_mutex_unlock(&g_mu);
    return r;
}

static fl_rpc_call *take_held(void) {
    pthread_mutex_lock(&g_mu);
    fl_rpc_call *c = g_n_held ? g_held[--g_n_held] : NULL;
    pthread_mutex_unlock(&g_mu);
    return c;
}

static fl_rpc_server *start_server(size_t max_msg, int threads) {
    fl_rpc_server_config cfg = {
        .listen_addr = "127.0.0.1:0",
        .ca_pem = g_ca,
        .cert_pem = g_srv_crt,
        .key_pem = g_srv_key,
        .max_msg = max_msg,
        .methods = g_methods,
        .n_methods = 4,
        .threads = threads,
        .on_call = handler,
    };
    fl_rpc_server *srv = NULL;
    char err[FL_ERR_LEN] = "";
    int rc = fl_rpc_server_new(&srv, &cfg, err);
    if (rc) fprintf(stderr, "server: %s\n", err);
    assert_int_equal(rc, FL_OK);
    assert_true(fl_rpc_server_port(srv) > 0);
    return srv;
}

static fl_rpc_channel *open_channel(int port, const char *ca, const char *crt, const char *key,
                                    size_t max_msg) {
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    fl_rpc_channel *ch = NULL;
    char err[FL_ERR_LEN] = "";
    int rc = fl_rpc_channel_new(&ch, target, ca, crt, key, NULL, max_msg, err);
    if (rc) fprintf(stderr, "channel: %s\n", err);
    assert_int_equal(rc, FL_OK);
    return ch;
}

/* One call; returns the status, with the response in *resp (caller frees). */
static int call(fl_rpc_channel *ch, const char *method, const char *req, int64_t timeout_ms,
                uint8_t **resp, size_t *len, char *details) {
    int st = -1;
    uint8_t *r = NULL;
    size_t n = 0;
    char d[512];
    int rc = fl_rpc_unary(ch, method, (const uint8_t *)req, strlen(req), timeout_ms, &r, &n, &st, d,
                          sizeof d);
    assert_int_equal(rc, fl_rpc_status_to_code(st));
    if (details) strcpy(details, d);
    if (resp) {
        *resp = r;
        *len = n;
    } else {
        free(r);
    }
    return st;
}

/* Shared by the tests that need an ordinary server. */
static fl_rpc_server *g_srv;
static int g_port;

static int group_setup(void **state) {
    if (make_certs() != 0) return -1;
    /* One reference for the whole run: channels come and go per test. */
    fl_rpc_global_init();
    g_srv = start_server(0, 2);
    g_port = fl_rpc_server_port(g_srv);
    return 0;
}

static int group_teardown(void **state) {
    fl_rpc_server_free(g_srv);
    fl_rpc_global_shutdown();
    free(g_ca);
    free(g_srv_crt);
    free(g_srv_key);
    free(g_cli_crt);
    free(g_cli_key);
    free(g_ca2);
    free(g_rogue_crt);
    free(g_rogue_key);
    return 0;
}

/* ================================ Tests ================================= */

static void test_echo_mtls(void **state) {
    fl_rpc_channel *ch = open_channel(g_port, g_ca, g_cli_crt, g_cli_key, 0);
    uint8_t *resp;
    size_t len;
    assert_int_equal(call(ch, M_ECHO, "hello", 5000, &resp, &len, NULL), FL_RPC_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(resp, "hello", 5);
    free(resp);
    pthread_mutex_lock(&g_mu);
    assert_string_equal(g_last_cn, "site-1");
    /* the PEM is the client's verified leaf: the application reads its
     * Cohort identity from it */
    char name[FL_PKI_NAME_MAX], err[FL_ERR_LEN];
    int role = FL_ROLE_NONE;
    assert_int_equal(fl_pki_peer_role(g_last_pem, strlen(g_last_pem), name, &role, err), FL_OK);
    assert_string_equal(name, "site-1");
    assert_int_equal(role, FL_ROLE_CLIENT);
    /* the server sees the client's deadline, less the time in flight */
    assert_true(g_last_left_ms > 3000 && g_last_left_ms <= 5000);
    pthread_mutex_unlock(&g_mu);

    /* an empty request and an empty response are still a message */
    assert_int_equal(call(ch, M_ECHO, "", 5000, &resp, &len, NULL), FL_RPC_OK);
    assert_non_null(resp);
    assert_int_equal(len, 0);
    free(resp);

    /* an application error: status and details, no message */
    char det[512];
    assert_int_equal(call(ch, M_FAIL, "x", 5000, &resp, &len, det), FL_RPC_PERMISSION_DENIED);
    assert_null(resp);
    assert_string_equal(det, "site-1 is not enrolled");

    /* a method the server does not serve */
    int before = atomic_load(&g_handled);
    assert_int_equal(call(ch, "/cohort.test.Echo/Nope", "x", 5000, NULL, NULL, NULL),
                     FL_RPC_UNIMPLEMENTED);
    assert_int_equal(atomic_load(&g_handled), before);

    /* the server's name checked through the override instead of the IP */
    fl_rpc_channel *ch2;
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", g_port);
    assert_int_equal(
        fl_rpc_channel_new(&ch2, target, g_ca, g_cli_crt, g_cli_key, "localhost", 0, err), FL_OK);
    assert_int_equal(call(ch2, M_ECHO, "x", 5000, NULL, NULL, NULL), FL_RPC_OK);
    fl_rpc_channel_free(ch2);
    /* ... and a name the certificate does not carry is refused */
    assert_int_equal(
        fl_rpc_channel_new(&ch2, target, g_ca, g_cli_crt, g_cli_key, "evil.example", 0, err),
        FL_OK);
    assert_int_equal(call(ch2, M_ECHO, "x", 5000, NULL, NULL, NULL), FL_RPC_UNAVAILABLE);
    fl_rpc_channel_free(ch2);

    /* round-trip latency of a small call on an established connection */
    enum { N = 500 };
    int64_t t0 = fl_rpc_now_ms();
    for (int i = 0; i < N; i++)
        assert_int_equal(call(ch, M_ECHO, "ping", 5000, NULL, NULL, NULL), FL_RPC_OK);
    int64_t dt = fl_rpc_now_ms() - t0;
    printf("rpc: small unary round trip %.1f us (mean of %d, loopback, mTLS)\n",
           1000.0 * (double)dt / N, N);
    fl_rpc_channel_free(ch);
}

/* A client the server must refuse at the handshake: no handler runs. */
static void expect_refused(const char *ca, const char *crt, const char *key) {
    int before = atomic_load(&g_handled);
    fl_rpc_channel *ch = open_channel(g_port, ca, crt, key, 0);
    char det[512];
    int64_t t0 = fl_rpc_now_ms();
    assert_int_equal(call(ch, M_ECHO, "hi", 5000, NULL, NULL, det), FL_RPC_UNAVAILABLE);
    /* refused at the handshake, not left to time out */
    assert_true(fl_rpc_now_ms() - t0 < 4000);
    fl_rpc_channel_free(ch);
    assert_int_equal(atomic_load(&g_handled), before);
}

static void test_client_from_other_ca(void **state) {
    expect_refused(g_ca, g_rogue_crt, g_rogue_key);
}

static void test_client_without_cert(void **state) {
    expect_refused(g_ca, NULL, NULL);
}

static void test_server_not_trusted(void **state) {
    /* the client trusts only CA 2, so the server's certificate fails */
    expect_refused(g_ca2, g_cli_crt, g_cli_key);
}

static void test_plaintext_client(void **state) {
    int before = atomic_load(&g_handled);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", g_port);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(5000, GPR_TIMESPAN));
    grpc_slice method = grpc_slice_from_static_string(M_ECHO);
    grpc_call *c = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
                                            deadline, NULL);
    grpc_slice s = grpc_slice_from_static_string("hi");
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_byte_buffer *rb = NULL;
    grpc_metadata_array im, tm;
    grpc_metadata_array_init(&im);
    grpc_metadata_array_init(&tm);
    grpc_status_code st = GRPC_STATUS_OK;
    grpc_slice det;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &rb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tm;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &det;
    int tag;
    assert_int_equal(grpc_call_start_batch(c, ops, 6, &tag, NULL), GRPC_CALL_OK);
    grpc_event ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    assert_int_equal(st, GRPC_STATUS_UNAVAILABLE);
    assert_null(rb);
    grpc_slice_unref(det);
    grpc_metadata_array_destroy(&im);
    grpc_metadata_array_destroy(&tm);
    grpc_byte_buffer_destroy(bb);
    grpc_call_unref(c);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    assert_int_equal(atomic_load(&g_handled), before);
}

static void test_deferred_reply(void **state) {
    fl_rpc_channel *ch = open_channel(g_port, g_ca, g_cli_crt, g_cli_key, 0);
    /* connect first, so the timing below is the deferral alone */
    assert_int_equal(call(ch, M_ECHO, "warm", 5000, NULL, NULL, NULL), FL_RPC_OK);
    uint8_t *resp;
    size_t len;
    int64_t t0 = fl_rpc_now_ms();
    assert_int_equal(call(ch, M_DEFER, "poll", 5000, &resp, &len, NULL), FL_RPC_OK);
    int64_t dt = fl_rpc_now_ms() - t0;
    assert_true(dt >= 195);
    assert_int_equal(len, 9);
    assert_memory_equal(resp, "late:poll", 9);
    free(resp);
    fl_rpc_channel_free(ch);
}

static void test_long_poll_expires(void **state) {
    fl_rpc_channel *ch = open_channel(g_port, g_ca, g_cli_crt, g_cli_key, 0);
    assert_int_equal(call(ch, M_HOLD, "poll", 300, NULL, NULL, NULL), FL_RPC_DEADLINE_EXCEEDED);
    assert_int_equal(wait_held(1), 1);
    fl_rpc_call *held = take_held();
    assert_non_null(held);
    /* the server learns that the client has gone */
    int64_t until = fl_rpc_now_ms() + 5000;
    while (!fl_rpc_call_is_cancelled(held) && fl_rpc_now_ms() < until) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_true(fl_rpc_call_is_cancelled(held));
    /* a late answer is dropped safely */
    const uint8_t task[] = "task";
    assert_int_equal(fl_rpc_call_reply(held, FL_RPC_OK, NULL, task, 4), FL_EIO);
    /* and the server keeps serving */
    assert_int_equal(call(ch, M_ECHO, "still here", 5000, NULL, NULL, NULL), FL_RPC_OK);
    fl_rpc_channel_free(ch);
}

/* The peer check of fl_rpc_channel_new_ex sees the server's certificate
 * during the handshake; a refusal fails the call before anything is sent,
 * is not retried, and names the reason. */
typedef struct {
    int calls, refuse;
    char pem_head[32];
} peer_seen;

static int peer_check(void *user, const char *pem, char *why, size_t why_len) {
    peer_seen *p = user;
    p->calls++;
    snprintf(p->pem_head, sizeof p->pem_head, "%.27s", pem);
    if (p->refuse) snprintf(why, why_len, "certificate revoked (test)");
    return p->refuse;
}

static void test_peer_check(void **state) {
    (void)state;
    char target[64], err[FL_ERR_LEN] = "", det[512] = "";
    snprintf(target, sizeof target, "127.0.0.1:%d", g_port);
    fl_rpc_backoff bo = {.max_attempts = 5, .base_ms = 20, .cap_ms = 80};
    uint8_t *resp = NULL;
    size_t len;
    int st, attempts;
    for (int refuse = 0; refuse <= 1; refuse++) {
        peer_seen seen = {.refuse = refuse};
        fl_rpc_channel *ch = NULL;
        assert_int_equal(fl_rpc_channel_new_ex(&ch, target, g_ca, g_cli_crt, g_cli_key, NULL, 0,
                                               peer_check, &seen, err),
                         FL_OK);
        int rc = fl_rpc_unary_retry(ch, M_ECHO, (const uint8_t *)"x", 1, 5000, &bo, &resp, &len,
                                    &st, det, sizeof det, &attempts);
        assert_true(seen.calls >= 1);
        assert_string_equal(seen.pem_head, "-----BEGIN CERTIFICATE-----");
        if (!refuse) {
            assert_int_equal(rc, FL_OK);
            free(resp);
            resp = NULL;
        } else {
            assert_int_equal(rc, FL_EAUTH);
            assert_int_equal(st, FL_RPC_UNAVAILABLE);
            assert_int_equal(attempts, 1);
            assert_null(resp);
            if (!strstr(det, "server certificate refused: certificate revoked (test)"))
                fail_msg("details '%s'", det);
        }
        fl_rpc_channel_free(ch);
    }
}

typedef struct {
    fl_rpc_channel *ch;
    int id;
    int ok;
} worker_arg;

static void *worker_main(void *arg) {
    worker_arg *w = arg;
    for (int i = 0; i < 50; i++) {
        char req[64];
        int n = snprintf(req, sizeof req, "thread %d call %d", w->id, i);
        uint8_t *resp = NULL;
        size_t len = 0;
        int st;
        int rc = fl_rpc_unary(w->ch, M_ECHO, (const uint8_t *)req, (size_t)n, 10000, &resp, &len,
                              &st, NULL, 0);
        if (rc == FL_OK && len == (size_t)n && memcmp(resp, req, len) == 0) w->ok++;
        free(resp);
    }
    return NULL;
}

static void test_concurrent_calls(void **state) {
    enum { T = 8 };
    /* one channel shared by all threads, and a server with several threads */
    fl_rpc_server *srv = start_server(0, 4);
    fl_rpc_channel *ch = open_channel(fl_rpc_server_port(srv), g_ca, g_cli_crt, g_cli_key, 0);
    pthread_t th[T];
    worker_arg w[T];
    for (int i = 0; i < T; i++) {
        w[i] = (worker_arg){ch, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        total += w[i].ok;
    }
    assert_int_equal(total, T * 50);
    fl_rpc_channel_free(ch);
    fl_rpc_server_free(srv);
}

static void test_large_message(void **state) {
    const size_t big = (size_t)64 << 20, limit = (size_t)80 << 20;
    uint8_t *req = malloc(big);
    assert_non_null(req);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        req[i] = (uint8_t)x;
    }
    fl_rpc_server *srv = start_server(limit, 1);
    fl_rpc_channel *ch = open_channel(fl_rpc_server_port(srv), g_ca, g_cli_crt, g_cli_key, limit);
    assert_int_equal(call(ch, M_ECHO, "warm", 5000, NULL, NULL, NULL), FL_RPC_OK);
    uint8_t *resp = NULL;
    size_t len = 0;
    int st;
    int64_t t0 = fl_rpc_now_ms();
    assert_int_equal(fl_rpc_unary(ch, M_ECHO, req, big, 60000, &resp, &len, &st, NULL, 0), FL_OK);
    int64_t dt = fl_rpc_now_ms() - t0;
    assert_int_equal(len, big);
    assert_true(memcmp(resp, req, big) == 0);
    free(resp);
    printf("rpc: 64 MiB echo in %lld ms: %.0f MiB/s each way (loopback, mTLS)\n", (long long)dt,
           dt > 0 ? 128.0 * 1000.0 / (double)dt : 0.0);
    fl_rpc_channel_free(ch);
    fl_rpc_server_free(srv);

    /* a server with a lower limit refuses it before any handler runs */
    int before = atomic_load(&g_handled);
    srv = start_server((size_t)16 << 20, 1);
    ch = open_channel(fl_rpc_server_port(srv), g_ca, g_cli_crt, g_cli_key, limit);
    assert_int_equal(fl_rpc_unary(ch, M_ECHO, req, big, 60000, &resp, &len, &st, NULL, 0),
                     FL_EINVAL);
    assert_int_equal(st, FL_RPC_RESOURCE_EXHAUSTED);
    assert_null(resp);
    assert_int_equal(atomic_load(&g_handled), before);
    /* the connection survives the refusal */
    assert_int_equal(call(ch, M_ECHO, "after", 5000, NULL, NULL, NULL), FL_RPC_OK);
    fl_rpc_channel_free(ch);
    /* a client with a lower limit refuses to send it at all */
    ch = open_channel(fl_rpc_server_port(srv), g_ca, g_cli_crt, g_cli_key, (size_t)1 << 20);
    assert_int_equal(fl_rpc_unary(ch, M_ECHO, req, big, 60000, &resp, &len, &st, NULL, 0),
                     FL_EINVAL);
    assert_int_equal(st, FL_RPC_RESOURCE_EXHAUSTED);
    fl_rpc_channel_free(ch);
    fl_rpc_server_free(srv);
    free(req);
}

static void test_retry_unavailable(void **state) {
    /* A bound socket that never listens: connections are refused, and no
     * other process can take the port while the test runs. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    fl_rpc_channel *ch = open_channel(ntohs(a.sin_port), g_ca, g_cli_crt, g_cli_key, 0);
    fl_rpc_backoff bo = {.max_attempts = 4, .base_ms = 20, .cap_ms = 80};
    uint8_t *resp = NULL;
    size_t len;
    int st, attempts;
    char det[512];
    int64_t t0 = fl_rpc_now_ms();
    assert_int_equal(fl_rpc_unary_retry(ch, M_ECHO, (const uint8_t *)"x", 1, 2000, &bo, &resp, &len,
                                        &st, det, sizeof det, &attempts),
                     FL_EIO);
    int64_t dt = fl_rpc_now_ms() - t0;
    assert_int_equal(st, FL_RPC_UNAVAILABLE);
    assert_int_equal(attempts, 4);
    assert_null(resp);
    /* three sleeps of at most 20, 40 and 80 ms, plus refused connects */
    assert_true(dt < 2000);
    fl_rpc_channel_free(ch);
    close(fd);

    /* other statuses are never retried */
    ch = open_channel(g_port, g_ca, g_cli_crt, g_cli_key, 0);
    assert_int_equal(fl_rpc_unary_retry(ch, M_FAIL, (const uint8_t *)"x", 1, 2000, &bo, &resp, &len,
                                        &st, NULL, 0, &attempts),
                     FL_EAUTH);
    assert_int_equal(st, FL_RPC_PERMISSION_DENIED);
    assert_int_equal(attempts, 1);
    assert_int_equal(fl_rpc_unary_retry(ch, M_ECHO, (const uint8_t *)"x", 1, 2000, &bo, &resp, &len,
                                        &st, NULL, 0, &attempts),
                     FL_OK);
    assert_int_equal(attempts, 1);
    free(resp);
    fl_rpc_channel_free(ch);
}

typedef struct {
    fl_rpc_channel *ch;
    int64_t timeout_ms;
    int status;
} hold_arg;

static void *hold_main(void *arg) {
    hold_arg *h = arg;
    uint8_t *resp = NULL;
    size_t len;
    fl_rpc_unary(h->ch, M_HOLD, (const uint8_t *)"poll", 4, h->timeout_ms, &resp, &len, &h->status,
                 NULL, 0);
    free(resp);
    return NULL;
}

static void test_shutdown_with_pending_calls(void **state) {
    fl_rpc_server *srv = start_server(0, 1);
    fl_rpc_channel *ch = open_channel(fl_rpc_server_port(srv), g_ca, g_cli_crt, g_cli_key, 0);
    /* one held call whose client has already given up ... */
    assert_int_equal(call(ch, M_HOLD, "poll", 200, NULL, NULL, NULL), FL_RPC_DEADLINE_EXCEEDED);
    assert_int_equal(wait_held(1), 1);
    /* ... and three whose clients are still waiting */
    enum { P = 3 };
    pthread_t th[P];
    hold_arg h[P];
    for (int i = 0; i < P; i++) {
        h[i] = (hold_arg){ch, 30000, -1};
        assert_int_equal(pthread_create(&th[i], NULL, hold_main, &h[i]), 0);
    }
    assert_int_equal(wait_held(1 + P), 1 + P);
    int64_t t0 = fl_rpc_now_ms();
    fl_rpc_server_free(srv);
    for (int i = 0; i < P; i++) {
        pthread_join(th[i], NULL);
        /* cancelled by the shutdown, not left to their 30 s deadline */
        assert_true(h[i].status == FL_RPC_UNAVAILABLE || h[i].status == FL_RPC_CANCELLED);
    }
    assert_true(fl_rpc_now_ms() - t0 < 10000);
    /* the application still answers what it holds: dropped, and released */
    for (int i = 0; i < 1 + P; i++) {
        fl_rpc_call *c = take_held();
        assert_non_null(c);
        assert_true(fl_rpc_call_is_cancelled(c));
        assert_int_equal(fl_rpc_call_reply(c, FL_RPC_OK, NULL, (const uint8_t *)"t", 1), FL_ESTATE);
    }
    fl_rpc_channel_free(ch);
}

typedef struct {
    fl_rpc_channel *ch;
    atomic_int *stop;
    int ok, failed, other;
} load_arg;

static void *load_main(void *arg) {
    load_arg *l = arg;
    while (!atomic_load(l->stop)) {
        uint8_t *resp = NULL;
        size_t len;
        int st = -1;
        fl_rpc_unary(l->ch, M_ECHO, (const uint8_t *)"load", 4, 5000, &resp, &len, &st, NULL, 0);
        free(resp);
        if (st == FL_RPC_OK)
            l->ok++;
        else if (st == FL_RPC_UNAVAILABLE || st == FL_RPC_CANCELLED)
            l->failed++;
        else
            l->other++;
    }
    return NULL;
}

/* Stopping a multi-threaded server while calls keep arriving: every call
 * ends OK or UNAVAILABLE/CANCELLED, and nothing leaks or is used after free. */
static void test_shutdown_under_load(void **state) {
    enum { T = 4 };
    fl_rpc_server *srv = start_server(0, 4);
    fl_rpc_channel *ch = open_channel(fl_rpc_server_port(srv), g_ca, g_cli_crt, g_cli_key, 0);
    atomic_int stop = 0;
    pthread_t th[T];
    load_arg l[T];
    for (int i = 0; i < T; i++) {
        l[i] = (load_arg){ch, &stop, 0, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, load_main, &l[i]), 0);
    }
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    fl_rpc_server_free(srv);
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    int ok = 0, failed = 0, other = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ok += l[i].ok;
        failed += l[i].failed;
        other += l[i].other;
    }
    assert_true(ok > 0);
    assert_true(failed > 0); /* the calls after the shutdown */
    assert_int_equal(other, 0);
    fl_rpc_channel_free(ch);
}

static void test_bad_config(void **state) {
    char err[FL_ERR_LEN];
    fl_rpc_server *srv = NULL;
    fl_rpc_server_config cfg = {
        .listen_addr = "127.0.0.1:0",
        .ca_pem = g_ca,
        .cert_pem = g_srv_crt,
        .key_pem = "/etc/cohort/aggregator.key", /* a path, not PEM */
        .methods = g_methods,
        .n_methods = 4,
        .on_call = handler,
    };
    assert_int_equal(fl_rpc_server_new(&srv, &cfg, err), FL_EINVAL);
    assert_null(srv);
    cfg.key_pem = g_srv_key;
    cfg.max_msg = (size_t)3 << 30;
    assert_int_equal(fl_rpc_server_new(&srv, &cfg, err), FL_EINVAL);
    cfg.max_msg = 0;
    /* the key does not match the certificate */
    cfg.key_pem = g_cli_key;
    assert_int_equal(fl_rpc_server_new(&srv, &cfg, err), FL_EIO);
    assert_null(srv);
    cfg.key_pem = g_srv_key;
    /* the port is taken (by the shared server): refused, not shared */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", g_port);
    cfg.listen_addr = addr;
    assert_int_equal(fl_rpc_server_new(&srv, &cfg, err), FL_EIO);
    assert_non_null(strstr(err, addr));
    assert_null(srv);

    fl_rpc_channel *ch = NULL;
    assert_int_equal(fl_rpc_channel_new(&ch, "127.0.0.1:1", g_ca, g_cli_crt, NULL, NULL, 0, err),
                     FL_EINVAL);
    assert_null(ch);
    assert_int_equal(fl_rpc_channel_new(&ch, "127.0.0.1:1", "not pem", NULL, NULL, NULL, 0, err),
                     FL_EINVAL);
    ch = open_channel(g_port, g_ca, g_cli_crt, g_cli_key, 0);
    uint8_t *resp;
    size_t len;
    int st;
    assert_int_equal(fl_rpc_unary(ch, "Echo", NULL, 0, 1000, &resp, &len, &st, NULL, 0), FL_EINVAL);
    assert_int_equal(fl_rpc_unary(ch, M_ECHO, NULL, 0, 0, &resp, &len, &st, NULL, 0), FL_EINVAL);
    fl_rpc_channel_free(ch);
    fl_rpc_server_free(NULL);
    fl_rpc_channel_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_mtls),
        cmocka_unit_test(test_client_from_other_ca),
        cmocka_unit_test(test_client_without_cert),
        cmocka_unit_test(test_server_not_trusted),
        cmocka_unit_test(test_plaintext_client),
        cmocka_unit_test(test_deferred_reply),
        cmocka_unit_test(test_long_poll_expires),
        cmocka_unit_test(test_concurrent_calls),
        cmocka_unit_test(test_large_message),
        cmocka_unit_test(test_retry_unavailable),
        cmocka_unit_test(test_peer_check),
        cmocka_unit_test(test_shutdown_with_pending_calls),
        cmocka_unit_test(test_shutdown_under_load),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
