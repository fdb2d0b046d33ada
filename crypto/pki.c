/* pki.c: the federation CA, certificate issue and revocation, certificate
 * verification for the aggregator, and ECDSA P-256 signatures (see pki.h;
 * operator guide and threat notes in docs/pki.md; profile from RFC 5280).
 *
 * Only the OpenSSL 3 EVP / X509 / PEM APIs are used (OPENSSL_NO_DEPRECATED
 * below turns any deprecated call into a compile error). A CA directory holds
 * ca.key, ca.crt, ca.crl, index.txt and one <name>.key / <name>.crt pair per
 * participant; index.txt is the source of truth for revocation and the CRL is
 * always rebuilt from it, so a crash between the two writes is repaired by
 * the next `cohort pki revoke` or `cohort pki crl`. Writers take an exclusive
 * flock on the directory. Private keys are created with O_CREAT|O_EXCL and
 * mode 0600, so they are never readable by others, not even for an instant;
 * buffers that held key text are wiped with OPENSSL_cleanse. */
#define OPENSSL_API_COMPAT 30000
#define OPENSSL_NO_DEPRECATED

#include "crypto/pki.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/log.h"

#define PKI_PATH_MAX 4096
#define PEM_MAX (64 * 1024)       /* a certificate or key file */
#define CRL_MAX (8 * 1024 * 1024) /* ~100k revoked entries */
#define INDEX_MAX (16 * 1024 * 1024)
#define LABEL_LEN 128   /* "'<cn>' (serial <hex>)" in messages */
#define SERIAL_BYTES 16 /* 128 random bits, RFC 5280 §4.1.2.2 allows 20 octets */
/* Certificates start an hour in the past: sites' clocks drift, and a
 * certificate that is "not yet valid" for a few minutes after issue is the
 * most common PKI support call. */
#define BACKDATE_S 3600
#define INDEX_HEADER "# cohort pki index v1: serial status not_after revoked_at role name\n"

static const char *const role_names[] = {"none", "client", "aggregator", "operator"};

/* =============================== Errors =============================== */

/* fl_seterr plus OpenSSL's most recent reason, then clears OpenSSL's queue so
 * a later failure never reports a stale reason. */
static int ossl_err(char *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ossl_err(char *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err, FL_ERR_LEN, fmt, ap);
        va_end(ap);
        unsigned long e = ERR_peek_last_error();
        if (e && n >= 0 && n < FL_ERR_LEN - 16) {
            char reason[256];
            ERR_error_string_n(e, reason, sizeof reason);
            snprintf(err + n, FL_ERR_LEN - (size_t)n, " (OpenSSL: %s)", reason);
        }
    }
    ERR_clear_error();
    return code;
}

/* PEM readers must never prompt on a terminal: an encrypted key is an error
 * in a daemon, not a question. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* =============================== Names ================================ */

const char *fl_pki_role_name(int role) {
    return role >= FL_ROLE_CLIENT && role <= FL_ROLE_OPERATOR ? role_names[role] : "none";
}

int fl_pki_role_parse(const char *name) {
    if (!name) return FL_ROLE_NONE;
    for (int r = FL_ROLE_CLIENT; r <= FL_ROLE_OPERATOR; r++)
        if (!strcmp(name, role_names[r])) return r;
    return FL_ROLE_NONE;
}

int fl_pki_check_name(const char *name, char err[FL_ERR_LEN]) {
    if (!name || !name[0])
        return fl_seterr(err, FL_EINVAL, "name: expected 1-63 characters [A-Za-z0-9._-], got ''");
    size_t n = strlen(name);
    int ok = n < FL_PKI_NAME_MAX && isalnum((unsigned char)name[0]);
    for (size_t i = 1; ok && i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        ok = isalnum(c) || c == '.' || c == '_' || c == '-';
    }
    if (!ok)
        return fl_seterr(err, FL_EINVAL,
                         "name '%.80s': expected a letter or digit followed by up to 62 "
                         "letters, digits, '.', '_' or '-'",
                         name);
    if (!strcmp(name, "ca"))
        return fl_seterr(err, FL_EINVAL, "name 'ca' is reserved for the CA's own files");
    return 0;
}

static int check_federation(const char *fed, char *err) {
    size_t n = strlen(fed);
    int ok = n >= 1 && n <= FL_PKI_FEDERATION_MAX && fed[0] != ' ' && fed[n - 1] != ' ';
    for (size_t i = 0; ok && i < n; i++)
        ok = fed[i] >= 0x20 && fed[i] < 0x7f;
    if (!ok)
        return fl_seterr(err, FL_EINVAL,
                         "federation name '%.80s': expected 1-%d printable ASCII characters "
                         "without leading or trailing spaces",
                         fed, FL_PKI_FEDERATION_MAX);
    return 0;
}

static int check_days(int days, char *err) {
    if (days < 1 || days > FL_PKI_MAX_DAYS)
        return fl_seterr(err, FL_EINVAL, "days: expected an integer in [1, %d], got %d",
                         FL_PKI_MAX_DAYS, days);
    return 0;
}

static int join(char out[PKI_PATH_MAX], const char *dir, const char *name, const char *ext,
                char *err) {
    int n = snprintf(out, PKI_PATH_MAX, "%s/%s%s", dir, name, ext);
    if (n < 0 || n >= PKI_PATH_MAX) return fl_seterr(err, FL_EINVAL, "%.200s: path too long", dir);
    return 0;
}

/* "YYYY-MM-DDTHH:MM:SSZ" (UTC), the index's and `pki list`'s time format. */
static void iso_time(char out[21], time_t t) {
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int parse_iso_time(time_t *out, const char *s) {
    struct tm tm = {0};
    int used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &used) != 6 ||
        used != 20 || s[used])
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);
    return 0;
}

static int asn1_time_to_time_t(time_t *out, const ASN1_TIME *t) {
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm)) return -1;
    *out = timegm(&tm);
    return 0;
}

/* =============================== Files ================================ */

/* Reads a whole regular file of at most max bytes into a malloc'd,
 * NUL-terminated buffer. If *mode is wanted, it receives st_mode. */
static int read_file(char **out, size_t *len, mode_t *mode, const char *path, size_t max,
                     char *err) {
    int rc = FL_EIO;
    char *buf = NULL;
    size_t cap = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = fl_seterr(err, FL_EIO, "%s: %s", path, strerror(errno));
        goto cleanup;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        rc = fl_seterr(err, FL_EIO, "%s: expected a regular file", path);
        goto cleanup;
    }
    if ((size_t)st.st_size > max) {
        rc = fl_seterr(err, FL_EINVAL, "%s: %lld bytes, expected at most %zu", path,
                       (long long)st.st_size, max);
        goto cleanup;
    }
    cap = (size_t)st.st_size + 1;
    buf = malloc(cap);
    if (!buf) {
        rc = fl_seterr(err, FL_ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = fl_seterr(err, FL_EIO, "%s: read failed: %s", path,
                           n < 0 ? strerror(errno) : "file shrank");
            goto cleanup;
        }
        got += (size_t)n;
    }
    buf[got] = 0;
    *out = buf;
    *len = got;
    if (mode) *mode = st.st_mode;
    buf = NULL;
    rc = 0;
cleanup:
    if (buf) {
        OPENSSL_cleanse(buf, cap); /* may be key text */
        free(buf);
    }
    if (fd >= 0) close(fd);
    return rc;
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Creates path (which must not exist) with exactly these bytes. The mode is
 * given to open(), so a 0600 key is never visible with wider permissions;
 * O_NOFOLLOW refuses a planted symlink. FL_ESTATE if the file exists. */
static int write_new(const char *path, const void *data, size_t len, mode_t mode, char *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        if (errno == EEXIST)
            return fl_seterr(err, FL_ESTATE, "%s exists; refusing to overwrite it", path);
        return fl_seterr(err, FL_EIO, "%s: cannot create: %s", path, strerror(errno));
    }
    if (write_all(fd, data, len) || fsync(fd)) {
        int e = errno;
        close(fd);
        unlink(path);
        return fl_seterr(err, FL_EIO, "%s: write failed: %s", path, strerror(e));
    }
    if (close(fd)) {
        int e = errno;
        unlink(path);
        return fl_seterr(err, FL_EIO, "%s: write failed: %s", path, strerror(e));
    }
    return 0;
}

/* Replaces path atomically (temporary file + rename), so a reader never sees
 * a half-written CRL or index. Callers hold the directory lock, so a stale
 * temporary file can only be a crashed writer's and is removed. */
static int write_replace(const char *path, const void *data, size_t len, mode_t mode, char *err) {
    char tmp[PKI_PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (n < 0 || n >= (int)sizeof tmp) return fl_seterr(err, FL_EINVAL, "%s: path too long", path);
    unlink(tmp);
    int rc = write_new(tmp, data, len, mode, err);
    if (rc) return rc;
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return fl_seterr(err, FL_EIO, "%s: rename failed: %s", path, strerror(e));
    }
    return 0;
}

/* mkdir -p with mode 0700 for the components it creates: the directory will
 * hold the CA key. */
static int make_dirs(const char *dir, char *err) {
    char p[PKI_PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof p) return fl_seterr(err, FL_EINVAL, "--dir: expected a path");
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char c = p[i];
        p[i] = 0;
        if (mkdir(p, 0700) && errno != EEXIST)
            return fl_seterr(err, FL_EIO, "%s: cannot create directory: %s", p, strerror(errno));
        p[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode))
        return fl_seterr(err, FL_EIO, "%s: expected a directory", dir);
    return 0;
}

/* An exclusive flock on the directory itself serialises issue, revoke and
 * CRL updates by concurrent operators. Returns the fd to close, or < 0. */
static int lock_dir(int *fd_out, const char *dir, char *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fl_seterr(err, FL_EIO, "%s: %s (expected a CA directory made by cohort pki init)",
                         dir, strerror(errno));
    while (flock(fd, LOCK_EX)) {
        if (errno == EINTR) continue;
        int e = errno;
        close(fd);
        return fl_seterr(err, FL_EIO, "%s: cannot lock: %s", dir, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

/* ============================ Keys, certificates ======================= */

static int is_p256(const EVP_PKEY *pk) {
    char group[64];
    return pk && EVP_PKEY_is_a(pk, "EC") &&
           EVP_PKEY_get_group_name(pk, group, sizeof group, NULL) &&
           !strcmp(group, SN_X9_62_prime256v1);
}

/* Parses a PEM private key from memory; the caller wipes the text. */
static int parse_key(EVP_PKEY **out, const char *pem, size_t len, const char *what, char *err) {
    if (len > INT_MAX) return fl_seterr(err, FL_EINVAL, "%s: too large", what);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) return ossl_err(err, FL_ENOMEM, "%s: out of memory", what);
    EVP_PKEY *pk = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (!pk) return ossl_err(err, FL_EINVAL, "%s: expected an unencrypted PEM private key", what);
    if (!is_p256(pk)) {
        EVP_PKEY_free(pk);
        return fl_seterr(err, FL_EINVAL, "%s: expected an EC P-256 key", what);
    }
    *out = pk;
    return 0;
}

/* Reads, parses and wipes a key file. Warns (does not refuse) when the file
 * is readable by group or others: a mounted secret may legitimately be, but
 * the operator should know. */
static int load_key(EVP_PKEY **out, const char *path, char *err) {
    char *pem = NULL;
    size_t len = 0;
    mode_t mode = 0;
    int rc = read_file(&pem, &len, &mode, path, PEM_MAX, err);
    if (rc) return rc;
    rc = parse_key(out, pem, len, path, err);
    if (!rc && (mode & 077))
        fl_warn("%s: private key is readable by group or others (mode %03o); expected 0600", path,
                (unsigned)(mode & 0777));
    OPENSSL_cleanse(pem, len);
    free(pem);
    return rc;
}

static int parse_cert(X509 **out, const char *pem, size_t len, const char *what, char *err) {
    if (!pem || len == 0 || len > PEM_MAX)
        return fl_seterr(err, FL_EINVAL, "%s: expected a PEM certificate of 1..%d bytes", what,
                         PEM_MAX);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) return ossl_err(err, FL_ENOMEM, "%s: out of memory", what);
    X509 *x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (!x) return ossl_err(err, FL_EINVAL, "%s: expected a PEM certificate", what);
    *out = x;
    return 0;
}

static int load_cert(X509 **out, const char *path, char *err) {
    char *pem = NULL;
    size_t len = 0;
    int rc = read_file(&pem, &len, NULL, path, PEM_MAX, err);
    if (rc) return rc;
    rc = parse_cert(out, pem, len, path, err);
    free(pem);
    return rc;
}

/* The bytes of a mem BIO. A key's BIO is a secure-heap one (BIO_s_secmem),
 * which BIO_free wipes. */
static int bio_bytes(const char **data, size_t *len, BIO *bio) {
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);
    if (n <= 0) return -1;
    *data = p;
    *len = (size_t)n;
    return 0;
}

static int write_key_new(const char *path, EVP_PKEY *pk, char *err) {
    const char *data;
    size_t len;
    BIO *bio = BIO_new(BIO_s_secmem());
    if (!bio) return ossl_err(err, FL_ENOMEM, "%s: out of memory", path);
    int rc;
    if (!PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) ||
        bio_bytes(&data, &len, bio)) {
        rc = ossl_err(err, FL_ECRYPTO, "%s: cannot encode the private key", path);
    } else {
        rc = write_new(path, data, len, 0600, err);
        OPENSSL_cleanse((void *)data, len);
    }
    BIO_free(bio);
    return rc;
}

static int write_cert(const char *path, X509 *x, char *err) {
    const char *data;
    size_t len;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return ossl_err(err, FL_ENOMEM, "%s: out of memory", path);
    int rc = !PEM_write_bio_X509(bio, x) || bio_bytes(&data, &len, bio)
                 ? ossl_err(err, FL_ECRYPTO, "%s: cannot encode the certificate", path)
                 : write_new(path, data, len, 0644, err);
    BIO_free(bio);
    return rc;
}

/* A random positive 128-bit serial (RFC 5280 §4.1.2.2: positive, unique per
 * CA, at most 20 octets). The top bits are fixed to 01 so the DER integer is
 * always 16 octets and the hex form always 32 digits. */
static int random_serial(X509 *x, char hex[41], char *err) {
    unsigned char b[SERIAL_BYTES];
    int rc = FL_ECRYPTO;
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai = NULL;
    if (RAND_bytes(b, sizeof b) != 1) {
        rc = ossl_err(err, FL_ECRYPTO, "serial: random generator failed");
        goto cleanup;
    }
    b[0] = (unsigned char)((b[0] & 0x3f) | 0x40);
    if (!(bn = BN_bin2bn(b, sizeof b, NULL)) || !(ai = BN_to_ASN1_INTEGER(bn, NULL)) ||
        !X509_set_serialNumber(x, ai)) {
        rc = ossl_err(err, FL_ENOMEM, "serial: cannot encode");
        goto cleanup;
    }
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(hex + 2 * i, 3, "%02X", b[i]);
    rc = 0;
cleanup:
    BN_free(bn);
    ASN1_INTEGER_free(ai);
    return rc;
}

static int serial_hex(char hex[41], const ASN1_INTEGER *ai) {
    hex[0] = 0;
    BIGNUM *bn = ASN1_INTEGER_to_BN(ai, NULL);
    char *h = bn ? BN_bn2hex(bn) : NULL;
    int rc = h && strlen(h) < 41 ? 0 : -1;
    if (!rc) memcpy(hex, h, strlen(h) + 1);
    OPENSSL_free(h);
    BN_free(bn);
    return rc;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value, char *err) {
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    int ok = ext && X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!ok) return ossl_err(err, FL_ECRYPTO, "extension %s=%s", OBJ_nid2sn(nid), value);
    return 0;
}

static int set_validity(X509 *x, time_t not_before, time_t not_after, char *err) {
    /* ASN1_TIME_set picks UTCTime through 2049 and GeneralizedTime after, as
     * RFC 5280 §4.1.2.5 requires. */
    if (!ASN1_TIME_set(X509_getm_notBefore(x), not_before) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), not_after))
        return ossl_err(err, FL_EINVAL, "validity: cannot encode the dates");
    return 0;
}

static int add_name(X509_NAME *nm, int nid, const char *value, char *err) {
    if (!X509_NAME_add_entry_by_NID(nm, nid, MBSTRING_UTF8, (const unsigned char *)value, -1, -1,
                                    0))
        return ossl_err(err, FL_EINVAL, "subject %s=%s", OBJ_nid2sn(nid), value);
    return 0;
}

/* ================================ CRL ================================= */

/* Builds and signs a CRL listing every revoked entry (RFC 5280 §5: v2, with
 * the crlNumber and authorityKeyIdentifier extensions §5.2.1/§5.2.3 make
 * mandatory). No reasonCode: §5.3.1 prefers omitting it to "unspecified".
 * Returns the PEM in a mem BIO the caller frees. */
static int crl_build(BIO **out, X509 *ca, EVP_PKEY *ca_key, const fl_pki_entry *e, size_t n,
                     long number, int days, char *err) {
    int rc = FL_ECRYPTO;
    X509_CRL *crl = X509_CRL_new();
    ASN1_TIME *t = NULL;
    ASN1_INTEGER *num = NULL;
    X509_EXTENSION *aki = NULL;
    BIO *bio = NULL;
    time_t now = time(NULL);
    if (!crl || !X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
        !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) ||
        !(t = ASN1_TIME_set(NULL, now)) || !X509_CRL_set1_lastUpdate(crl, t) ||
        !ASN1_TIME_set(t, now + (time_t)days * 86400) || !X509_CRL_set1_nextUpdate(crl, t)) {
        rc = ossl_err(err, FL_ENOMEM, "CRL: cannot build");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        if (!e[i].revoked) continue;
        time_t when;
        BIGNUM *bn = NULL;
        ASN1_INTEGER *sn = NULL;
        X509_REVOKED *r = X509_REVOKED_new();
        int ok = r && !parse_iso_time(&when, e[i].revoked_at) && ASN1_TIME_set(t, when) &&
                 BN_hex2bn(&bn, e[i].serial) && (sn = BN_to_ASN1_INTEGER(bn, NULL)) &&
                 X509_REVOKED_set_serialNumber(r, sn) && X509_REVOKED_set_revocationDate(r, t) &&
                 X509_CRL_add0_revoked(crl, r);
        BN_free(bn);
        ASN1_INTEGER_free(sn);
        if (!ok) {
            X509_REVOKED_free(r);
            rc = ossl_err(err, FL_EINVAL, "CRL: cannot add serial %s revoked at '%s'", e[i].serial,
                          e[i].revoked_at);
            goto cleanup;
        }
    }
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca, NULL, NULL, crl, 0);
    if (!X509_CRL_sort(crl) || !(num = ASN1_INTEGER_new()) || !ASN1_INTEGER_set(num, number) ||
        !X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0) ||
        !(aki = X509V3_EXT_nconf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always")) ||
        !X509_CRL_add_ext(crl, aki, -1) || !X509_CRL_sign(crl, ca_key, EVP_sha256())) {
        rc = ossl_err(err, FL_ECRYPTO, "CRL: cannot sign");
        goto cleanup;
    }
    if (!(bio = BIO_new(BIO_s_mem())) || !PEM_write_bio_X509_CRL(bio, crl)) {
        rc = ossl_err(err, FL_ENOMEM, "CRL: cannot encode");
        goto cleanup;
    }
    *out = bio;
    bio = NULL;
    rc = 0;
cleanup:
    BIO_free(bio);
    X509_EXTENSION_free(aki);
    ASN1_INTEGER_free(num);
    ASN1_TIME_free(t);
    X509_CRL_free(crl);
    return rc;
}

/* The next crlNumber: one more than the current CRL's, so numbers only grow
 * (RFC 5280 §5.2.3); 1 when there is no readable CRL. */
static long next_crl_number(const char *crl_path) {
    char *pem = NULL;
    size_t len = 0;
    long next = 1;
    if (read_file(&pem, &len, NULL, crl_path, CRL_MAX, NULL)) return 1;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509_CRL *crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, no_passphrase, NULL) : NULL;
    ASN1_INTEGER *num = crl ? X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL) : NULL;
    long v = num ? ASN1_INTEGER_get(num) : 0;
    if (v > 0 && v < LONG_MAX) next = v + 1;
    ASN1_INTEGER_free(num);
    X509_CRL_free(crl);
    BIO_free(bio);
    free(pem);
    ERR_clear_error();
    return next;
}

int fl_pki_file_expiry(time_t *when, const char *path, char err[FL_ERR_LEN]) {
    char *pem = NULL;
    size_t len = 0;
    int rc = read_file(&pem, &len, NULL, path, CRL_MAX > PEM_MAX ? CRL_MAX : PEM_MAX, err);
    if (rc) return rc;
    if (strstr(pem, "-----BEGIN X509 CRL-----")) {
        BIO *bio = BIO_new_mem_buf(pem, (int)len);
        X509_CRL *crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, no_passphrase, NULL) : NULL;
        if (!crl || asn1_time_to_time_t(when, X509_CRL_get0_nextUpdate(crl)))
            rc = ossl_err(err, FL_EINVAL, "%s: expected a PEM CRL with a nextUpdate", path);
        X509_CRL_free(crl);
        BIO_free(bio);
    } else {
        X509 *x = NULL;
        rc = parse_cert(&x, pem, len, path, err);
        if (!rc && asn1_time_to_time_t(when, X509_get0_notAfter(x)))
            rc = fl_seterr(err, FL_EINVAL, "%s: unreadable notAfter", path);
        X509_free(x);
    }
    free(pem);
    return rc;
}

int fl_pki_expiry_note(char *note, size_t note_len, const char *path, const char *what,
                       const char *fix, double warn_days, time_t now) {
    time_t when;
    char err[FL_ERR_LEN], at[32];
    if (!path || !path[0] || fl_pki_file_expiry(&when, path, err)) return 0;
    double days = difftime(when, now) / 86400.0;
    if (days > warn_days) return 0;
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (days <= 0)
        snprintf(note, note_len, "%s (%s) expired at %s: %s", what, path, at, fix);
    else
        snprintf(note, note_len, "%s (%s) expires in %.1f days, at %s: %s", what, path, days, at,
                 fix);
    return 1;
}

int fl_pki_verifier_reload(fl_pki_verifier **fresh, fl_file_stamp *seen, const char *ca_path,
                           const char *crl_path, char err[FL_ERR_LEN]) {
    fl_file_stamp now;
    *fresh = NULL;
    if (fl_file_stamp_get(&now, crl_path) || fl_file_stamp_same(&now, seen)) return 0;
    *seen = now;
    int rc = fl_pki_verifier_new(fresh, ca_path, crl_path, err);
    return rc ? rc : 1;
}

/* ================================ Index ================================ */

static int index_parse(fl_pki_entry **out, size_t *count, const char *path, char *text, char *err) {
    fl_pki_entry *e = NULL;
    size_t n = 0, cap = 0;
    int rc = 0, line = 0;
    /* Walked by hand: strtok would merge empty fields and lose the line
     * count that error messages need. */
    for (char *p = text; *p; line++) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        char *cur = p;
        p = nl ? nl + 1 : p + strlen(p);
        if (!cur[0] || cur[0] == '#') continue;
        char *f[7];
        int nf = 0;
        for (char *q = cur; nf < 7;) {
            f[nf++] = q;
            char *tab = strchr(q, '\t');
            if (!tab) break;
            *tab = 0;
            q = tab + 1;
        }
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            fl_pki_entry *ne = realloc(e, nc * sizeof *e);
            if (!ne) {
                rc = fl_seterr(err, FL_ENOMEM, "%s: out of memory", path);
                goto cleanup;
            }
            e = ne;
            cap = nc;
        }
        fl_pki_entry *r = &e[n];
        memset(r, 0, sizeof *r);
        time_t t;
        int ok = nf == 6 && strlen(f[0]) < sizeof r->serial &&
                 strspn(f[0], "0123456789ABCDEFabcdef") == strlen(f[0]) && f[0][0] &&
                 (!strcmp(f[1], "V") || !strcmp(f[1], "R")) && !parse_iso_time(&t, f[2]) &&
                 (f[1][0] == 'V' ? !strcmp(f[3], "-") : !parse_iso_time(&t, f[3])) &&
                 fl_pki_role_parse(f[4]) != FL_ROLE_NONE && !fl_pki_check_name(f[5], NULL);
        if (!ok) {
            rc = fl_seterr(err, FL_EPARSE,
                           "%s:%d: expected serial, V|R, not_after, revoked_at|-, role, name "
                           "separated by tabs",
                           path, line + 1);
            goto cleanup;
        }
        snprintf(r->serial, sizeof r->serial, "%s", f[0]);
        r->revoked = f[1][0] == 'R';
        snprintf(r->not_after, sizeof r->not_after, "%s", f[2]);
        if (strcmp(f[3], "-")) snprintf(r->revoked_at, sizeof r->revoked_at, "%s", f[3]);
        r->role = fl_pki_role_parse(f[4]);
        snprintf(r->name, sizeof r->name, "%s", f[5]);
        n++;
    }
    *out = e;
    *count = n;
    e = NULL;
cleanup:
    free(e);
    return rc;
}

static int index_read(fl_pki_entry **out, size_t *n, const char *dir, char *err) {
    char path[PKI_PATH_MAX], *text = NULL;
    size_t len;
    int rc = join(path, dir, "index", ".txt", err);
    if (!rc) rc = read_file(&text, &len, NULL, path, INDEX_MAX, err);
    if (!rc) rc = index_parse(out, n, path, text, err);
    free(text);
    return rc;
}

static int index_line(char *buf, size_t cap, const fl_pki_entry *e) {
    int n = snprintf(buf, cap, "%s\t%c\t%s\t%s\t%s\t%s\n", e->serial, e->revoked ? 'R' : 'V',
                     e->not_after, e->revoked ? e->revoked_at : "-", fl_pki_role_name(e->role),
                     e->name);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

static int index_write(const char *dir, const fl_pki_entry *e, size_t n, char *err) {
    char path[PKI_PATH_MAX];
    int rc = join(path, dir, "index", ".txt", err);
    if (rc) return rc;
    size_t cap = sizeof INDEX_HEADER + (n + 1) * 200, len = sizeof INDEX_HEADER - 1;
    char *buf = malloc(cap);
    if (!buf) return fl_seterr(err, FL_ENOMEM, "%s: out of memory", path);
    memcpy(buf, INDEX_HEADER, len);
    for (size_t i = 0; i < n; i++) {
        int k = index_line(buf + len, cap - len, &e[i]);
        if (k < 0) {
            free(buf);
            return fl_seterr(err, FL_EINVAL, "%s: entry %zu does not fit", path, i);
        }
        len += (size_t)k;
    }
    rc = write_replace(path, buf, len, 0644, err);
    free(buf);
    return rc;
}

static int index_append(const char *dir, const fl_pki_entry *e, char *err) {
    char path[PKI_PATH_MAX], line[256];
    int rc = join(path, dir, "index", ".txt", err);
    if (rc) return rc;
    int n = index_line(line, sizeof line, e);
    if (n < 0) return fl_seterr(err, FL_EINVAL, "%s: entry does not fit", path);
    int fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return fl_seterr(err, FL_EIO, "%s: %s (expected the index made by cohort pki init)", path,
                         strerror(errno));
    int werr = 0;
    if (write_all(fd, line, (size_t)n) || fsync(fd)) werr = errno;
    if (close(fd) && !werr) werr = errno;
    if (werr) return fl_seterr(err, FL_EIO, "%s: append failed: %s", path, strerror(werr));
    return 0;
}

/* ============================ CA operations ============================= */

/* The CA certificate and key of dir, checked to belong together. */
static int load_ca(X509 **ca, EVP_PKEY **key, const char *dir, char *err) {
    char crt[PKI_PATH_MAX], kp[PKI_PATH_MAX];
    int rc = join(crt, dir, "ca", ".crt", err);
    if (!rc) rc = join(kp, dir, "ca", ".key", err);
    if (!rc) rc = load_cert(ca, crt, err);
    if (rc) return rc;
    rc = load_key(key, kp, err);
    if (rc) {
        X509_free(*ca);
        *ca = NULL;
        return rc;
    }
    if (X509_check_private_key(*ca, *key) != 1) {
        X509_free(*ca);
        EVP_PKEY_free(*key);
        *ca = NULL;
        *key = NULL;
        return ossl_err(err, FL_EINVAL, "%s does not hold the key of %s", kp, crt);
    }
    return 0;
}

/* Signs the CRL for the entries and replaces dir/ca.crl. */
static int crl_publish(const char *dir, X509 *ca, EVP_PKEY *key, const fl_pki_entry *e, size_t n,
                       int days, int create, char *err) {
    char path[PKI_PATH_MAX];
    BIO *bio = NULL;
    const char *data;
    size_t len;
    int rc = join(path, dir, "ca", ".crl", err);
    if (rc) return rc;
    long number = create ? 1 : next_crl_number(path);
    rc = crl_build(&bio, ca, key, e, n, number, days, err);
    if (rc) return rc;
    if (bio_bytes(&data, &len, bio))
        rc = fl_seterr(err, FL_ECRYPTO, "%s: empty CRL", path);
    else
        rc = create ? write_new(path, data, len, 0644, err)
                    : write_replace(path, data, len, 0644, err);
    BIO_free(bio);
    return rc;
}

int fl_pki_init(const char *dir, const char *federation, int days, char err[FL_ERR_LEN]) {
    static const char *const files[] = {"ca.key", "ca.crt", "ca.crl", "index.txt"};
    char paths[4][PKI_PATH_MAX];
    int created[4] = {0};
    int rc, lock = -1;
    EVP_PKEY *key = NULL;
    X509 *ca = NULL;
    X509_NAME *nm = NULL;
    char hex[41], cn[FL_PKI_FEDERATION_MAX + 8];
    ERR_clear_error();
    if (!federation) federation = "cohort";
    if (!dir || !dir[0]) return fl_seterr(err, FL_EINVAL, "--dir: expected a directory");
    if ((rc = check_federation(federation, err)) || (rc = check_days(days, err)) ||
        (rc = make_dirs(dir, err)) || (rc = lock_dir(&lock, dir, err)))
        goto cleanup;
    for (int i = 0; i < 4; i++) {
        struct stat st;
        if ((rc = join(paths[i], dir, files[i], "", err))) goto cleanup;
        if (lstat(paths[i], &st) == 0) {
            rc = fl_seterr(err, FL_ESTATE,
                           "%s exists: %s already holds a CA; refusing to overwrite it", paths[i],
                           dir);
            goto cleanup;
        }
    }
    time_t now = time(NULL);
    snprintf(cn, sizeof cn, "%s CA", federation);
    if (!(key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"))) {
        rc = ossl_err(err, FL_ECRYPTO, "CA key: EC P-256 key generation failed");
        goto cleanup;
    }
    if (!(ca = X509_new()) || !(nm = X509_NAME_new()) || !X509_set_version(ca, X509_VERSION_3)) {
        rc = ossl_err(err, FL_ENOMEM, "CA certificate: out of memory");
        goto cleanup;
    }
    if ((rc = random_serial(ca, hex, err)) ||
        (rc = add_name(nm, NID_organizationName, federation, err)) ||
        (rc = add_name(nm, NID_commonName, cn, err)))
        goto cleanup;
    if (!X509_set_subject_name(ca, nm) || !X509_set_issuer_name(ca, nm) ||
        !X509_set_pubkey(ca, key)) {
        rc = ossl_err(err, FL_ENOMEM, "CA certificate: cannot set names");
        goto cleanup;
    }
    /* RFC 5280 §4.2.1.9: basicConstraints critical with cA TRUE; pathlen 0
     * because this CA signs end entities only. §4.2.1.3: keyUsage critical
     * with keyCertSign and cRLSign. §4.2.1.2: subjectKeyIdentifier on every
     * CA certificate. */
    if ((rc = set_validity(ca, now - BACKDATE_S, now + (time_t)days * 86400, err)) ||
        (rc = add_ext(ca, ca, NID_basic_constraints, "critical,CA:TRUE,pathlen:0", err)) ||
        (rc = add_ext(ca, ca, NID_key_usage, "critical,keyCertSign,cRLSign", err)) ||
        (rc = add_ext(ca, ca, NID_subject_key_identifier, "hash", err)) ||
        (rc = add_ext(ca, ca, NID_authority_key_identifier, "keyid:always", err)))
        goto cleanup;
    if (!X509_sign(ca, key, EVP_sha256())) {
        rc = ossl_err(err, FL_ECRYPTO, "CA certificate: signing failed");
        goto cleanup;
    }
    /* The key first: O_EXCL on it is what claims the directory. */
    if ((rc = write_key_new(paths[0], key, err))) goto cleanup;
    created[0] = 1;
    if ((rc = write_cert(paths[1], ca, err))) goto cleanup;
    created[1] = 1;
    if ((rc = crl_publish(dir, ca, key, NULL, 0, FL_PKI_CRL_DAYS, 1, err))) goto cleanup;
    created[2] = 1;
    if ((rc = write_new(paths[3], INDEX_HEADER, sizeof INDEX_HEADER - 1, 0644, err))) goto cleanup;
    created[3] = 1;
    fl_debug("pki: CA '%s' (serial %s) created in %s", cn, hex, dir);
    rc = 0;
cleanup:
    if (rc)
        for (int i = 0; i < 4; i++)
            if (created[i]) unlink(paths[i]);
    X509_NAME_free(nm);
    X509_free(ca);
    EVP_PKEY_free(key);
    if (lock >= 0) close(lock);
    return rc;
}

int fl_pki_issue_at(const char *dir, const char *name, int role, time_t not_before,
                    time_t not_after, char err[FL_ERR_LEN]) {
    char kp[PKI_PATH_MAX], cp[PKI_PATH_MAX], san[3 * FL_PKI_NAME_MAX + 64];
    int rc, lock = -1, made_key = 0, made_crt = 0;
    X509 *ca = NULL, *x = NULL;
    EVP_PKEY *ca_key = NULL, *key = NULL;
    X509_NAME *nm = NULL;
    fl_pki_entry ent = {0};
    ERR_clear_error();
    if (!dir || !dir[0]) return fl_seterr(err, FL_EINVAL, "--dir: expected a CA directory");
    if ((rc = fl_pki_check_name(name, err))) return rc;
    if (role < FL_ROLE_CLIENT || role > FL_ROLE_OPERATOR)
        return fl_seterr(err, FL_EINVAL, "role: expected client, aggregator or operator");
    if (not_before >= not_after)
        return fl_seterr(err, FL_EINVAL, "validity: notBefore must precede notAfter");
    if ((rc = join(kp, dir, name, ".key", err)) || (rc = join(cp, dir, name, ".crt", err)) ||
        (rc = lock_dir(&lock, dir, err)) || (rc = load_ca(&ca, &ca_key, dir, err)))
        goto cleanup;
    time_t ca_end, now = time(NULL);
    if (asn1_time_to_time_t(&ca_end, X509_get0_notAfter(ca))) {
        rc = fl_seterr(err, FL_EINVAL, "%s/ca.crt: unreadable notAfter", dir);
        goto cleanup;
    }
    if (ca_end <= now) {
        rc = fl_seterr(err, FL_ESTATE, "%s/ca.crt: the CA expired; make a new federation CA", dir);
        goto cleanup;
    }
    /* A certificate that outlives its CA verifies nowhere after the CA
     * expires; say so by ending it with the CA. */
    if (not_after > ca_end) not_after = ca_end;
    if (not_before >= not_after) {
        rc = fl_seterr(err, FL_EINVAL, "validity: empty once limited to the CA's lifetime");
        goto cleanup;
    }
    struct stat st;
    if (lstat(kp, &st) == 0 || lstat(cp, &st) == 0) {
        rc = fl_seterr(err, FL_ESTATE,
                       "%s exists; refusing to overwrite it (to re-issue '%s', revoke it and "
                       "remove its .crt and .key)",
                       lstat(kp, &st) == 0 ? kp : cp, name);
        goto cleanup;
    }
    if (!(key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"))) {
        rc = ossl_err(err, FL_ECRYPTO, "%s: EC P-256 key generation failed", kp);
        goto cleanup;
    }
    if (!(x = X509_new()) || !(nm = X509_NAME_new()) || !X509_set_version(x, X509_VERSION_3)) {
        rc = ossl_err(err, FL_ENOMEM, "%s: out of memory", cp);
        goto cleanup;
    }
    /* Subject O=<federation>, OU=<role>, CN=<name>. The role lives in the
     * subject, which the CA signs, so a participant cannot change it; the
     * extended key usage below must agree with it (docs/pki.md, "Roles"). */
    const X509_NAME *cas = X509_get_subject_name(ca);
    int oi = X509_NAME_get_index_by_NID(cas, NID_organizationName, -1);
    if (oi >= 0 && !X509_NAME_add_entry(nm, X509_NAME_get_entry(cas, oi), -1, 0)) {
        rc = ossl_err(err, FL_ENOMEM, "%s: out of memory", cp);
        goto cleanup;
    }
    if ((rc = add_name(nm, NID_organizationalUnitName, fl_pki_role_name(role), err)) ||
        (rc = add_name(nm, NID_commonName, name, err)) || (rc = random_serial(x, ent.serial, err)))
        goto cleanup;
    if (!X509_set_subject_name(x, nm) || !X509_set_issuer_name(x, cas) ||
        !X509_set_pubkey(x, key)) {
        rc = ossl_err(err, FL_ENOMEM, "%s: cannot set names", cp);
        goto cleanup;
    }
    /* The aggregator also answers as localhost / 127.0.0.1 so loopback
     * deployments (cohort simulate, tests) verify the hostname too. */
    if (role == FL_ROLE_AGGREGATOR && strcmp(name, "localhost"))
        snprintf(san, sizeof san, "DNS:%s,DNS:localhost,IP:127.0.0.1", name);
    else if (role == FL_ROLE_AGGREGATOR)
        snprintf(san, sizeof san, "DNS:localhost,IP:127.0.0.1");
    else
        snprintf(san, sizeof san, "DNS:%s", name);
    /* RFC 5280 §4.2.1.9 basicConstraints cA FALSE; §4.2.1.3 keyUsage
     * digitalSignature only (ECDHE-ECDSA TLS and our own signatures);
     * §4.2.1.12 extendedKeyUsage by role; §4.2.1.6 subjectAltName, which TLS
     * hostname checks read (RFC 6125) and gRPC reports as the peer identity;
     * §4.2.1.1 authorityKeyIdentifier so verifiers find the right CA key. */
    if ((rc = set_validity(x, not_before, not_after, err)) ||
        (rc = add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE", err)) ||
        (rc = add_ext(x, ca, NID_key_usage, "critical,digitalSignature", err)) ||
        (rc = add_ext(x, ca, NID_ext_key_usage,
                      role == FL_ROLE_AGGREGATOR ? "serverAuth" : "clientAuth", err)) ||
        (rc = add_ext(x, ca, NID_subject_alt_name, san, err)) ||
        (rc = add_ext(x, ca, NID_subject_key_identifier, "hash", err)) ||
        (rc = add_ext(x, ca, NID_authority_key_identifier, "keyid:always", err)))
        goto cleanup;
    if (!X509_sign(x, ca_key, EVP_sha256())) {
        rc = ossl_err(err, FL_ECRYPTO, "%s: signing failed", cp);
        goto cleanup;
    }
    if ((rc = write_key_new(kp, key, err))) goto cleanup;
    made_key = 1;
    if ((rc = write_cert(cp, x, err))) goto cleanup;
    made_crt = 1;
    snprintf(ent.name, sizeof ent.name, "%s", name);
    ent.role = role;
    iso_time(ent.not_after, not_after);
    if ((rc = index_append(dir, &ent, err))) goto cleanup;
    fl_debug("pki: issued %s certificate '%s' (serial %s, until %s)", fl_pki_role_name(role), name,
             ent.serial, ent.not_after);
    rc = 0;
cleanup:
    if (rc && made_key) unlink(kp);
    if (rc && made_crt) unlink(cp);
    X509_NAME_free(nm);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    if (lock >= 0) close(lock);
    return rc;
}

int fl_pki_issue(const char *dir, const char *name, int role, int days, char err[FL_ERR_LEN]) {
    int rc = check_days(days, err);
    if (rc) return rc;
    time_t now = time(NULL);
    return fl_pki_issue_at(dir, name, role, now - BACKDATE_S, now + (time_t)days * 86400, err);
}

/* Marks the entries selected by name or serial as revoked, rewrites the
 * index, then re-signs the CRL. The index goes first: it is the source the
 * CRL is rebuilt from. */
static int revoke_entries(const char *dir, const char *name, const char *serial, char *err) {
    fl_pki_entry *e = NULL;
    size_t n = 0, hit = 0, already = 0;
    int rc, lock = -1;
    X509 *ca = NULL;
    EVP_PKEY *key = NULL;
    char now_s[21];
    ERR_clear_error();
    if (!dir || !dir[0]) return fl_seterr(err, FL_EINVAL, "--dir: expected a CA directory");
    iso_time(now_s, time(NULL));
    if ((rc = lock_dir(&lock, dir, err)) || (rc = index_read(&e, &n, dir, err))) goto cleanup;
    for (size_t i = 0; i < n; i++) {
        if (name ? strcmp(e[i].name, name) : strcasecmp(e[i].serial, serial)) continue;
        if (e[i].revoked) {
            already++;
            continue;
        }
        e[i].revoked = 1;
        snprintf(e[i].revoked_at, sizeof e[i].revoked_at, "%s", now_s);
        hit++;
    }
    if (!hit) {
        rc = already ? fl_seterr(err, FL_ESTATE, "%s '%s' in %s/index.txt is revoked already",
                                 name ? "certificate" : "serial", name ? name : serial, dir)
                     : fl_seterr(err, FL_EINVAL, "no certificate %s '%s' in %s/index.txt",
                                 name ? "named" : "with serial", name ? name : serial, dir);
        goto cleanup;
    }
    if ((rc = load_ca(&ca, &key, dir, err)) || (rc = index_write(dir, e, n, err)) ||
        (rc = crl_publish(dir, ca, key, e, n, FL_PKI_CRL_DAYS, 0, err)))
        goto cleanup;
    fl_debug("pki: revoked %zu certificate(s) %s '%s'; CRL re-signed", hit,
             name ? "named" : "with serial", name ? name : serial);
    rc = 0;
cleanup:
    free(e);
    X509_free(ca);
    EVP_PKEY_free(key);
    if (lock >= 0) close(lock);
    return rc;
}

int fl_pki_revoke(const char *dir, const char *name, char err[FL_ERR_LEN]) {
    int rc = fl_pki_check_name(name, err);
    return rc ? rc : revoke_entries(dir, name, NULL, err);
}

int fl_pki_revoke_serial(const char *dir, const char *serial, char err[FL_ERR_LEN]) {
    if (!serial || !serial[0] || strlen(serial) > 40 ||
        strspn(serial, "0123456789ABCDEFabcdef") != strlen(serial))
        return fl_seterr(err, FL_EINVAL, "serial '%.80s': expected up to 40 hex digits",
                         serial ? serial : "");
    return revoke_entries(dir, NULL, serial, err);
}

int fl_pki_crl_update(const char *dir, int days, char err[FL_ERR_LEN]) {
    fl_pki_entry *e = NULL;
    size_t n = 0;
    int rc, lock = -1;
    X509 *ca = NULL;
    EVP_PKEY *key = NULL;
    ERR_clear_error();
    if (!dir || !dir[0]) return fl_seterr(err, FL_EINVAL, "--dir: expected a CA directory");
    if ((rc = check_days(days, err)) || (rc = lock_dir(&lock, dir, err)) ||
        (rc = index_read(&e, &n, dir, err)) || (rc = load_ca(&ca, &key, dir, err)) ||
        (rc = crl_publish(dir, ca, key, e, n, days, 0, err)))
        goto cleanup;
    rc = 0;
cleanup:
    free(e);
    X509_free(ca);
    EVP_PKEY_free(key);
    if (lock >= 0) close(lock);
    return rc;
}

int fl_pki_list(fl_pki_entry **out, size_t *n, const char *dir, char err[FL_ERR_LEN]) {
    *out = NULL;
    *n = 0;
    if (!dir || !dir[0]) return fl_seterr(err, FL_EINVAL, "--dir: expected a CA directory");
    return index_read(out, n, dir, err);
}

/* ============================ Verification ============================== */

struct fl_pki_verifier {
    X509_STORE *store;
    char *ca_path; /* for messages */
    char *crl_path;
};

/* One subject attribute as UTF-8; FL_EAUTH unless there is exactly one. */
static int name_attr(char *out, size_t cap, const X509_NAME *nm, int nid, char *err) {
    int i = X509_NAME_get_index_by_NID(nm, nid, -1);
    if (i < 0) return fl_seterr(err, FL_EAUTH, "no subject %s", OBJ_nid2sn(nid));
    if (X509_NAME_get_index_by_NID(nm, nid, i) >= 0)
        return fl_seterr(err, FL_EAUTH, "more than one subject %s", OBJ_nid2sn(nid));
    unsigned char *u = NULL;
    int n = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, i)));
    int rc = 0;
    if (n < 0)
        rc = ossl_err(err, FL_EAUTH, "subject %s: not a string", OBJ_nid2sn(nid));
    else if ((size_t)n >= cap || memchr(u, 0, (size_t)n))
        rc = fl_seterr(err, FL_EAUTH, "subject %s: longer than %zu bytes or holds NUL",
                       OBJ_nid2sn(nid), cap - 1);
    else {
        memcpy(out, u, (size_t)n);
        out[n] = 0;
    }
    OPENSSL_free(u);
    return rc;
}

/* A printable label for messages about a certificate we do not trust yet. */
static void cert_label(char out[LABEL_LEN], X509 *x) {
    char cn[FL_PKI_NAME_MAX] = "?", sn[41] = "?";
    if (name_attr(cn, sizeof cn, X509_get_subject_name(x), NID_commonName, NULL)) strcpy(cn, "?");
    for (char *p = cn; *p; p++)
        if (!isprint((unsigned char)*p)) *p = '?';
    if (serial_hex(sn, X509_get0_serialNumber(x))) strcpy(sn, "?");
    snprintf(out, LABEL_LEN, "'%s' (serial %.40s)", cn, sn);
    ERR_clear_error();
}

/* Name and role of a certificate whose signature is dealt with elsewhere:
 * an end entity, one CN that is a valid name and also a DNS subjectAltName,
 * one OU that is a role, and an extended key usage matching the role. */
static int identity(X509 *x, char name_out[FL_PKI_NAME_MAX], int *role_out, char *err) {
    char label[LABEL_LEN], cn[FL_PKI_NAME_MAX], ou[32], why[FL_ERR_LEN];
    GENERAL_NAMES *gens = NULL;
    int rc;
    cert_label(label, x);
    uint32_t flags = X509_get_extension_flags(x);
    if (flags & EXFLAG_INVALID) {
        rc = fl_seterr(err, FL_EAUTH, "certificate %s: malformed extensions", label);
        goto cleanup;
    }
    if (X509_check_ca(x) != 0) {
        rc = fl_seterr(err, FL_EAUTH,
                       "certificate %s: is a CA certificate, expected a "
                       "participant's",
                       label);
        goto cleanup;
    }
    if ((rc = name_attr(cn, sizeof cn, X509_get_subject_name(x), NID_commonName, why)) ||
        (rc =
             name_attr(ou, sizeof ou, X509_get_subject_name(x), NID_organizationalUnitName, why))) {
        rc = fl_seterr(err, FL_EAUTH, "certificate %s: %s (expected a Cohort certificate)", label,
                       why);
        goto cleanup;
    }
    if (fl_pki_check_name(cn, NULL)) {
        rc = fl_seterr(err, FL_EAUTH, "certificate %s: CN is not a valid participant name", label);
        goto cleanup;
    }
    int role = fl_pki_role_parse(ou);
    if (role == FL_ROLE_NONE) {
        rc = fl_seterr(err, FL_EAUTH,
                       "certificate %s: OU '%.32s' is not a role (expected client, aggregator "
                       "or operator)",
                       label, ou);
        goto cleanup;
    }
    /* The role must agree with what TLS enforces: an aggregator can only
     * serve, others only connect. A certificate without extendedKeyUsage
     * would be valid for every purpose (RFC 5280 §4.2.1.12), so it has none
     * of our roles. */
    uint32_t xku = (flags & EXFLAG_XKUSAGE) ? X509_get_extended_key_usage(x) : 0;
    int server = (xku & XKU_SSL_SERVER) != 0, client = (xku & XKU_SSL_CLIENT) != 0;
    if (role == FL_ROLE_AGGREGATOR ? !(server && !client) : !(client && !server)) {
        rc = fl_seterr(err, FL_EAUTH, "certificate %s: role %s needs extendedKeyUsage %s only",
                       label, ou, role == FL_ROLE_AGGREGATOR ? "serverAuth" : "clientAuth");
        goto cleanup;
    }
    gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS) continue;
        const ASN1_IA5STRING *d = g->d.dNSName;
        found = (size_t)ASN1_STRING_length(d) == strlen(cn) &&
                !memcmp(ASN1_STRING_get0_data(d), cn, strlen(cn));
    }
    /* An aggregator named localhost carries only DNS:localhost, which
     * matched above; every other participant's CN is its first DNS SAN. */
    if (!found) {
        rc = fl_seterr(err, FL_EAUTH, "certificate %s: CN is not among its DNS subjectAltNames",
                       label);
        goto cleanup;
    }
    memcpy(name_out, cn, strlen(cn) + 1);
    *role_out = role;
    rc = 0;
cleanup:
    GENERAL_NAMES_free(gens);
    ERR_clear_error();
    return rc;
}

int fl_pki_peer_role(const char *cert_pem, size_t len, char name_out[FL_PKI_NAME_MAX],
                     int *role_out, char err[FL_ERR_LEN]) {
    X509 *x = NULL;
    ERR_clear_error();
    int rc = parse_cert(&x, cert_pem, len, "peer certificate", err);
    if (!rc) rc = identity(x, name_out, role_out, err);
    X509_free(x);
    return rc;
}

void fl_pki_verifier_free(fl_pki_verifier *v) {
    if (!v) return;
    X509_STORE_free(v->store);
    free(v->ca_path);
    free(v->crl_path);
    free(v);
}

int fl_pki_verifier_new(fl_pki_verifier **out, const char *ca_path, const char *crl_path,
                        char err[FL_ERR_LEN]) {
    int rc;
    X509 *ca = NULL;
    X509_CRL *crl = NULL;
    BIO *bio = NULL;
    char *text = NULL;
    size_t len = 0;
    fl_pki_verifier *v = NULL;
    ERR_clear_error();
    *out = NULL;
    if (!ca_path) return fl_seterr(err, FL_EINVAL, "CA certificate path: expected a file");
    if ((rc = load_cert(&ca, ca_path, err))) goto cleanup;
    if (X509_check_ca(ca) < 1 || X509_check_issued(ca, ca) != X509_V_OK) {
        rc = fl_seterr(err, FL_EINVAL,
                       "%s: expected a self-signed CA certificate (basicConstraints CA:TRUE)",
                       ca_path);
        goto cleanup;
    }
    if (!(v = calloc(1, sizeof *v)) || !(v->ca_path = strdup(ca_path)) ||
        (crl_path && !(v->crl_path = strdup(crl_path))) || !(v->store = X509_STORE_new())) {
        rc = ossl_err(err, FL_ENOMEM, "verifier: out of memory");
        goto cleanup;
    }
    if (!X509_STORE_add_cert(v->store, ca)) {
        rc = ossl_err(err, FL_ENOMEM, "%s: cannot add to the trust store", ca_path);
        goto cleanup;
    }
    /* Only this CA is trusted (no system roots are loaded), chains have no
     * intermediates (depth 0: leaf then anchor), and X509_STRICT applies
     * RFC 5280's profile checks. */
    unsigned long vflags = X509_V_FLAG_X509_STRICT;
    if (crl_path) {
        if ((rc = read_file(&text, &len, NULL, crl_path, CRL_MAX, err))) goto cleanup;
        if (!(bio = BIO_new_mem_buf(text, (int)len)) ||
            !(crl = PEM_read_bio_X509_CRL(bio, NULL, no_passphrase, NULL))) {
            rc = ossl_err(err, FL_EINVAL, "%s: expected a PEM CRL", crl_path);
            goto cleanup;
        }
        /* Checked here too so a CRL from the wrong CA is reported when the
         * server starts, not as every peer's failure. */
        if (X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1) {
            rc = ossl_err(err, FL_EAUTH, "%s: not signed by the CA in %s", crl_path, ca_path);
            goto cleanup;
        }
        if (!X509_STORE_add_crl(v->store, crl)) {
            rc = ossl_err(err, FL_ENOMEM, "%s: cannot add to the trust store", crl_path);
            goto cleanup;
        }
        vflags |= X509_V_FLAG_CRL_CHECK;
    }
    if (!X509_STORE_set_flags(v->store, vflags) || !X509_STORE_set_depth(v->store, 0)) {
        rc = ossl_err(err, FL_ENOMEM, "verifier: cannot set flags");
        goto cleanup;
    }
    *out = v;
    v = NULL;
    rc = 0;
cleanup:
    fl_pki_verifier_free(v);
    X509_CRL_free(crl);
    BIO_free(bio);
    free(text);
    X509_free(ca);
    return rc;
}

/* Verification failures that mean the bytes were altered or forged get
 * FL_ECRYPTO; wrong CA, expiry and revocation are refusals, FL_EAUTH. */
static int verify_code(int e) {
    switch (e) {
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
        return FL_ECRYPTO;
    default:
        return FL_EAUTH;
    }
}

int fl_pki_verifier_check(const fl_pki_verifier *v, const char *cert_pem, size_t len,
                          char name_out[FL_PKI_NAME_MAX], int *role_out, char err[FL_ERR_LEN]) {
    X509 *x = NULL;
    X509_STORE_CTX *ctx = NULL;
    char label[LABEL_LEN];
    int rc;
    ERR_clear_error();
    if ((rc = parse_cert(&x, cert_pem, len, "peer certificate", err))) goto cleanup;
    if (!(ctx = X509_STORE_CTX_new()) || !X509_STORE_CTX_init(ctx, v->store, x, NULL)) {
        rc = ossl_err(err, FL_ENOMEM, "verifier: out of memory");
        goto cleanup;
    }
    if (X509_verify_cert(ctx) != 1) {
        int e = X509_STORE_CTX_get_error(ctx);
        cert_label(label, x);
        rc = fl_seterr(err, verify_code(e), "certificate %s: rejected by CA %s%s%s: %s", label,
                       v->ca_path, v->crl_path ? " with CRL " : "", v->crl_path ? v->crl_path : "",
                       X509_verify_cert_error_string(e));
        goto cleanup;
    }
    rc = identity(x, name_out, role_out, err);
cleanup:
    X509_STORE_CTX_free(ctx);
    X509_free(x);
    ERR_clear_error();
    return rc;
}

int fl_pki_verify_cert(const char *cert_pem, size_t len, const char *ca_path, const char *crl_path,
                       char name_out[FL_PKI_NAME_MAX], int *role_out, char err[FL_ERR_LEN]) {
    fl_pki_verifier *v = NULL;
    int rc = fl_pki_verifier_new(&v, ca_path, crl_path, err);
    if (!rc) rc = fl_pki_verifier_check(v, cert_pem, len, name_out, role_out, err);
    fl_pki_verifier_free(v);
    return rc;
}

/* ============================= Signatures =============================== */

struct fl_signer {
    EVP_PKEY *key;
};

static int sign_with(EVP_PKEY *key, uint8_t sig[FL_SIG_MAX], size_t *sig_len, const uint8_t *msg,
                     size_t len, char *err) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t n = FL_SIG_MAX;
    int rc = 0;
    if (!md || EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) != 1 ||
        EVP_DigestSign(md, sig, &n, msg, len) != 1)
        rc = ossl_err(err, FL_ECRYPTO, "ECDSA P-256 signing failed");
    else
        *sig_len = n;
    EVP_MD_CTX_free(md);
    return rc;
}

int fl_signer_new(fl_signer **out, const char *key_path, char err[FL_ERR_LEN]) {
    ERR_clear_error();
    *out = NULL;
    if (!key_path) return fl_seterr(err, FL_EINVAL, "key path: expected a file");
    fl_signer *s = calloc(1, sizeof *s);
    if (!s) return fl_seterr(err, FL_ENOMEM, "signer: out of memory");
    int rc = load_key(&s->key, key_path, err);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int fl_signer_sign(const fl_signer *s, uint8_t sig[FL_SIG_MAX], size_t *sig_len, const uint8_t *msg,
                   size_t len, char err[FL_ERR_LEN]) {
    ERR_clear_error();
    return sign_with(s->key, sig, sig_len, msg, len, err);
}

void fl_signer_free(fl_signer *s) {
    if (!s) return;
    EVP_PKEY_free(s->key); /* OpenSSL clears the private scalar on free */
    free(s);
}

int fl_sign(uint8_t sig[FL_SIG_MAX], size_t *sig_len, const uint8_t *msg, size_t len,
            const char *key_path, char err[FL_ERR_LEN]) {
    fl_signer *s = NULL;
    int rc = fl_signer_new(&s, key_path, err);
    if (!rc) rc = fl_signer_sign(s, sig, sig_len, msg, len, err);
    fl_signer_free(s);
    return rc;
}

int fl_verify(const uint8_t *sig, size_t sig_len, const uint8_t *msg, size_t len,
              const char *cert_pem, size_t cert_len, char err[FL_ERR_LEN]) {
    X509 *x = NULL;
    EVP_MD_CTX *md = NULL;
    ERR_clear_error();
    int rc = parse_cert(&x, cert_pem, cert_len, "signer certificate", err);
    if (rc) goto cleanup;
    EVP_PKEY *pk = X509_get0_pubkey(x);
    if (!is_p256(pk)) {
        rc = fl_seterr(err, FL_EINVAL, "signer certificate: expected an EC P-256 key");
        goto cleanup;
    }
    if (!sig || sig_len == 0 || sig_len > FL_SIG_MAX) {
        rc = fl_seterr(err, FL_ECRYPTO, "signature: %zu bytes, expected 1..%d (DER ECDSA P-256)",
                       sig_len, FL_SIG_MAX);
        goto cleanup;
    }
    if (!(md = EVP_MD_CTX_new()) ||
        EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, pk, NULL) != 1) {
        rc = ossl_err(err, FL_ENOMEM, "signature: cannot set up verification");
        goto cleanup;
    }
    /* 1 valid, 0 invalid, < 0 malformed DER: the last two are the same
     * answer to the caller. OpenSSL also rejects non-canonical DER. */
    if (EVP_DigestVerify(md, sig, sig_len, msg, len) != 1) {
        char label[LABEL_LEN];
        cert_label(label, x);
        rc =
            fl_seterr(err, FL_ECRYPTO, "signature: not valid for the key of certificate %s", label);
        goto cleanup;
    }
    rc = 0;
cleanup:
    EVP_MD_CTX_free(md);
    X509_free(x);
    ERR_clear_error();
    return rc;
}
