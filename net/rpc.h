/* rpc.h: the transport layer (DESIGN.md §3, §5; guide in docs/transport.md).
 * A small wrapper over the gRPC C core library for UNARY calls over mutual
 * TLS, used by the aggregator (server) and the client agent (channel).
 * Messages are opaque byte strings here: protobuf packing lives in
 * proto/wire.c, and deciding who a peer is (certificate CN, SAN, role) is the
 * application's job, from the certificate this layer hands it.
 *
 * Security policy, fixed and not configurable: the server only listens with
 * TLS and REQUIRES a client certificate that chains to the federation CA
 * (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY); a client only
 * talks TLS and verifies the server's certificate against the same CA and the
 * target host name (or the override). There is no plaintext mode.
 *
 * Functions return 0 or a negative FL_E* code (core/status.h); where an `err`
 * buffer (FL_ERR_LEN bytes) is given it is filled on failure. Private-key PEM
 * text passed in is read by gRPC, which keeps its own copy inside its
 * credentials for as long as the server or channel lives; this layer makes no
 * copy of its own and never logs key material.
 *
 * gRPC does not survive fork() after initialisation: create servers and
 * channels only in the process that uses them (spawn, then create). */
#ifndef FL_RPC_H
#define FL_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* gRPC status codes, with the same numbers as grpc_status_code (rpc.c checks
 * this at compile time), so callers need no gRPC header. */
enum fl_rpc_status {
    FL_RPC_OK = 0,
    FL_RPC_CANCELLED = 1,
    FL_RPC_UNKNOWN = 2,
    FL_RPC_INVALID_ARGUMENT = 3,
    FL_RPC_DEADLINE_EXCEEDED = 4,
    FL_RPC_NOT_FOUND = 5,
    FL_RPC_ALREADY_EXISTS = 6,
    FL_RPC_PERMISSION_DENIED = 7,
    FL_RPC_RESOURCE_EXHAUSTED = 8,
    FL_RPC_FAILED_PRECONDITION = 9,
    FL_RPC_ABORTED = 10,
    FL_RPC_OUT_OF_RANGE = 11,
    FL_RPC_UNIMPLEMENTED = 12,
    FL_RPC_INTERNAL = 13,
    FL_RPC_UNAVAILABLE = 14,
    FL_RPC_DATA_LOSS = 15,
    FL_RPC_UNAUTHENTICATED = 16,
};

/* "OK", "UNAVAILABLE", ...; "UNKNOWN_STATUS" for a number outside the set. */
const char *fl_rpc_status_name(int status);

/* The FL_E* code a non-OK status stands for (FL_OK for FL_RPC_OK):
 * DEADLINE_EXCEEDED -> FL_ETIMEOUT, UNAVAILABLE and CANCELLED -> FL_EIO,
 * UNAUTHENTICATED and PERMISSION_DENIED -> FL_EAUTH, INVALID_ARGUMENT,
 * OUT_OF_RANGE and RESOURCE_EXHAUSTED -> FL_EINVAL, FAILED_PRECONDITION and
 * ABORTED -> FL_ESTATE, UNIMPLEMENTED -> FL_ENOTSUP, anything else -> FL_EPROTO. */
int fl_rpc_status_to_code(int status);

/* Default message-size limit when a config says 0 (gRPC's own default). */
#define FL_RPC_DEFAULT_MAX_MSG ((size_t)4 << 20)
/* The largest limit gRPC accepts (its argument is an int). */
#define FL_RPC_MAX_MSG_LIMIT ((size_t)2147483647)

/* Optional explicit reference on the gRPC library. Every server and channel
 * takes its own reference, so calling these is never required; a program
 * that creates and frees channels repeatedly can hold one reference for its
 * whole life so gRPC is not torn down and restarted each time. Thread-safe;
 * pairs must balance. */
void fl_rpc_global_init(void);
void fl_rpc_global_shutdown(void);

/* Milliseconds on CLOCK_MONOTONIC: the clock of fl_rpc_call_deadline(). */
int64_t fl_rpc_now_ms(void);

/* ================================ Server ================================ */

typedef struct fl_rpc_server fl_rpc_server;
typedef struct fl_rpc_call fl_rpc_call;

/* Called once for every accepted call to one of the configured methods, on
 * one of the server's own threads, with `user` from the config. The handler
 * owns the call from here on and must answer it EXACTLY ONCE with
 * fl_rpc_call_reply(), either before returning or later from any thread
 * (PollTask is a long poll, answered when a task exists). The handler must
 * return promptly: while it runs, its thread drives no network I/O for the
 * server. It must not call fl_rpc_server_free(). */
typedef void (*fl_rpc_handler)(void *user, fl_rpc_call *call);

typedef struct fl_rpc_server_config {
    /* "127.0.0.1:0" (a free port; see fl_rpc_server_port), "0.0.0.0:7443",
     * "[::]:7443". The port is bound exclusively (no SO_REUSEPORT sharing). */
    const char *listen_addr;
    const char *ca_pem;   /* CA that every client certificate must chain to */
    const char *cert_pem; /* the server's certificate (chain), PEM */
    const char *key_pem;  /* its private key, PEM (copied by gRPC) */
    /* Largest message accepted or sent, bytes; 0 = FL_RPC_DEFAULT_MAX_MSG.
     * A bigger request fails with RESOURCE_EXHAUSTED before any handler runs. */
    size_t max_msg;
    /* Full method names, "/cohort.v1.Federation/Join", ...; the handler sees
     * the index into this array. Calls to any other method are answered
     * UNIMPLEMENTED by the server itself. Copied; 1..64 names. */
    const char *const *methods;
    size_t n_methods;
    /* Threads that drive the completion queue and run the handler; 0 = 1.
     * With more than one, handlers run concurrently. */
    int threads;
    fl_rpc_handler on_call;
    void *user;
} fl_rpc_server_config;

/* Creates, binds and starts a server; the config and every string in it may
 * be freed when this returns. On success *out owns the server (free it with
 * fl_rpc_server_free). Fails with FL_EINVAL (missing field, bad PEM, limit
 * too large), FL_EIO (address cannot be bound), FL_ENOMEM. */
int fl_rpc_server_new(fl_rpc_server **out, const fl_rpc_server_config *cfg, char err[FL_ERR_LEN]);

/* The bound TCP port (the real one when the config asked for port 0). */
int fl_rpc_server_port(const fl_rpc_server *srv);

/* Stops the server: no new calls are admitted, every call in progress is
 * cancelled (its client sees CANCELLED or UNAVAILABLE), the completion queue
 * is drained and the threads are joined. Calls the application still holds
 * stay valid objects: fl_rpc_call_reply on them drops the reply and releases
 * them (the last one also releases the server's remaining bookkeeping), so
 * the application must still answer every call it was given. Must not be
 * called from a handler. NULL does nothing. */
void fl_rpc_server_free(fl_rpc_server *srv);

/* Accessors. Valid from the handler's call until fl_rpc_call_reply; safe
 * from any thread; strings and bytes are owned by the call. */
int fl_rpc_call_method(const fl_rpc_call *call);              /* index into cfg.methods */
const char *fl_rpc_call_method_name(const fl_rpc_call *call); /* "/pkg.Svc/Method" */
const uint8_t *fl_rpc_call_request(const fl_rpc_call *call, size_t *len);
/* The client's leaf certificate, PEM, as verified by the TLS handshake, and
 * its subject common name; never NULL ("" if gRPC reported none). */
const char *fl_rpc_call_peer_cert_pem(const fl_rpc_call *call);
const char *fl_rpc_call_peer_cn(const fl_rpc_call *call);
/* The client's deadline on fl_rpc_now_ms()'s clock; INT64_MAX when none. */
int64_t fl_rpc_call_deadline(const fl_rpc_call *call);
/* 1 once the client has gone away (cancelled, deadline passed, connection
 * lost) or the server is stopping: a reply would be dropped. A long-poll
 * holder can use this to prune its waiters early. */
int fl_rpc_call_is_cancelled(fl_rpc_call *call);

/* Answers a call and releases it: `call` is invalid after this returns,
 * whatever the result. For FL_RPC_OK, resp[0..len) is sent as the response
 * message (copied; NULL with len 0 sends an empty message). For any other
 * status no message is sent and `details` (may be NULL; copied; never put
 * secrets in it) goes to the client as the status message.
 * Returns 0 when the answer was handed to gRPC. FL_EINVAL (a status outside
 * 0..16) and FL_ENOMEM mean INTERNAL or RESOURCE_EXHAUSTED went out instead.
 * FL_ESTATE (the server is stopping or stopped) and FL_EIO (the client has
 * already gone: normal for a long poll whose client timed out) mean the
 * answer was dropped. */
int fl_rpc_call_reply(fl_rpc_call *call, int status, const char *details, const uint8_t *resp,
                      size_t len);

/* ================================ Client ================================ */

typedef struct fl_rpc_channel fl_rpc_channel;

/* Creates a channel to target ("host:port"). Nothing connects until the first
 * call; the connection is then kept and re-established on demand.
 *   ca_pem                     the federation CA the server must chain to
 *   cert_pem, key_pem          this site's certificate and key (both, or both
 *                              NULL for a channel without a client
 *                              certificate, which Cohort servers refuse)
 *   ssl_target_name_override   the name to check the server certificate
 *                              against instead of target's host; NULL = host
 *   max_msg                    largest message sent or received; 0 = default
 * On success *out owns the channel (fl_rpc_channel_free). The strings may be
 * freed when this returns. */
int fl_rpc_channel_new(fl_rpc_channel **out, const char *target, const char *ca_pem,
                       const char *cert_pem, const char *key_pem,
                       const char *ssl_target_name_override, size_t max_msg, char err[FL_ERR_LEN]);

/* An extra check of the server's certificate during the TLS handshake, after
 * gRPC has verified its chain to ca_pem and its host name: return 0 to
 * accept; anything else fails the handshake, with the reason in why. It runs
 * on a gRPC thread, so it must be short and thread-safe. A refusal is not
 * transient: fl_rpc_unary_retry stops retrying on that channel and returns
 * FL_EAUTH with the reason (status UNAVAILABLE). */
typedef int (*fl_rpc_peer_check)(void *user, const char *peer_pem, char *why, size_t why_len);

/* fl_rpc_channel_new with a peer check (NULL = none); user is passed to it
 * and must outlive the channel. */
int fl_rpc_channel_new_ex(fl_rpc_channel **out, const char *target, const char *ca_pem,
                          const char *cert_pem, const char *key_pem,
                          const char *ssl_target_name_override, size_t max_msg,
                          fl_rpc_peer_check check, void *user, char err[FL_ERR_LEN]);

/* Closes the channel. No call may be in progress on it. NULL does nothing. */
void fl_rpc_channel_free(fl_rpc_channel *ch);

/* One blocking unary call of method ("/cohort.v1.Federation/Join") with
 * request req[0..len), which must finish within timeout_ms (> 0) from now.
 * Thread-safe: any number of threads may call concurrently on one channel
 * (each call has its own completion queue).
 * On return:
 *   *resp, *resp_len  the response message (malloc'd, caller frees; NULL/0
 *                     unless the status is OK; a zero-length response is a
 *                     1-byte allocation so *resp is never NULL on success)
 *   *status           the gRPC status (FL_RPC_*), when status is not NULL
 *   details           the status message, NUL-terminated, when not NULL
 * Returns 0 when the status is OK, otherwise fl_rpc_status_to_code(status)
 * (FL_EINVAL for bad arguments, with status FL_RPC_INVALID_ARGUMENT and a
 * reason in details; FL_ENOMEM). Connection and TLS handshake failures
 * (unknown CA, missing client certificate, nothing listening) come back as
 * UNAVAILABLE. */
int fl_rpc_unary(fl_rpc_channel *ch, const char *method, const uint8_t *req, size_t len,
                 int64_t timeout_ms, uint8_t **resp, size_t *resp_len, int *status, char *details,
                 size_t details_len);

/* Exponential backoff with full jitter for fl_rpc_unary_retry: before retry
 * k (k = 1, 2, ...) the caller sleeps a uniform random time in
 * [0, min(cap_ms, base_ms * 2^(k-1))] ms. */
typedef struct fl_rpc_backoff {
    int max_attempts; /* total attempts, >= 1 */
    int64_t base_ms;  /* >= 1 */
    int64_t cap_ms;   /* >= base_ms */
} fl_rpc_backoff;

/* fl_rpc_unary, repeated while the status is UNAVAILABLE (nothing reached the
 * application: connection refused or lost, TLS handshake failed, server
 * stopping), at most bo->max_attempts times in all; any other status,
 * including DEADLINE_EXCEEDED, is returned at once, since the server may have
 * acted on the request. The first attempt gets timeout_ms; each retry waits
 * for the channel to be ready (gRPC's wait-for-ready, which makes it drive
 * the reconnect instead of failing at once with the old error) for at most
 * min(timeout_ms, 2 * cap_ms), and a retry that timed out without ever
 * connecting counts as UNAVAILABLE. The channel's own reconnect backoff is
 * reset before each retry so that this schedule is the one that applies. *attempts (may be NULL)
 * receives the number made. Use it only for requests the server treats idempotently (DESIGN.md §5:
 * stale or replayed submissions are refused). */
int fl_rpc_unary_retry(fl_rpc_channel *ch, const char *method, const uint8_t *req, size_t len,
                       int64_t timeout_ms, const fl_rpc_backoff *bo, uint8_t **resp,
                       size_t *resp_len, int *status, char *details, size_t details_len,
                       int *attempts);

#endif
