/* test_pki.c: the federation PKI (crypto/pki.h, docs/pki.md): a CA and one
 * certificate per role that verify with their name and role; key files 0600
 * whatever the umask; and every way a certificate must be refused: another
 * CA (also one with the same name), expired, not yet valid, revoked,
 * tampered, a CA certificate presented as a participant's, a CRL from another
 * CA. Bad names and roles, overwriting a CA or a participant's files, a
 * corrupt index. ECDSA sign/verify round trips, and a flipped bit or another
 * key failing. When the openssl program is installed, `openssl verify
 * -crl_check -x509_strict` must agree with fl_pki_verify_cert. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/pki.h"

#define assert_err(rc, code, err, sub)                                                             \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != (code))                                                                         \
            fail_msg("rc %d (%s), expected %d (%s); err: %s", rc_, fl_strerror(rc_), (code),       \
                     fl_strerror(code), (err));                                                    \
        if (!strstr((err), (sub))) fail_msg("error '%s' does not contain '%s'", (err), (sub));     \
    } while (0)

#define assert_ok(rc, err)                                                                         \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_) fail_msg("rc %d (%s): %s", rc_, fl_strerror(rc_), (err));                         \
    } while (0)

/* A fresh directory path (not created) under the test's temporary dir. */
static const char *tdir(const char *name) {
    static char buf[8][1024];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 1024, "%s/%s", fl_test_tmpdir(), name);
    return b;
}

static const char *fpath(const char *dir, const char *file) {
    static char buf[8][1024];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 1024, "%s/%s", dir, file);
    return b;
}

/* Verifies dir/<name>.crt against dir's CA and CRL. */
static int verify_in(const char *dir, const char *cadir, const char *name, char out_name[64],
                     int *role, char *err) {
    char crt[256];
    snprintf(crt, sizeof crt, "%s.crt", name);
    size_t len;
    char *pem = fl_test_slurp(fpath(dir, crt), &len);
    int rc = fl_pki_verify_cert(pem, len, fpath(cadir, "ca.crt"), fpath(cadir, "ca.crl"), out_name,
                                role, err);
    free(pem);
    return rc;
}

static mode_t file_mode(const char *path) {
    struct stat st;
    if (stat(path, &st)) fail_msg("stat %s failed", path);
    return st.st_mode & 07777;
}

static void test_init_issue_roles(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", name[64];
    int role = -1;
    const char *d = tdir("roles/nested/pki"); /* parents do not exist yet */
    /* A permissive umask must not widen the key files' 0600. */
    mode_t old = umask(0);
    assert_ok(fl_pki_init(d, "Acme Health", 30, err), err);
    assert_ok(fl_pki_issue(d, "site-1.example", FL_ROLE_CLIENT, 10, err), err);
    assert_ok(fl_pki_issue(d, "agg", FL_ROLE_AGGREGATOR, 10, err), err);
    assert_ok(fl_pki_issue(d, "alice_op", FL_ROLE_OPERATOR, 10, err), err);
    umask(old);
    assert_int_equal(file_mode(d), 0700);
    assert_int_equal(file_mode(fpath(d, "ca.key")), 0600);
    assert_int_equal(file_mode(fpath(d, "site-1.example.key")), 0600);
    assert_int_equal(file_mode(fpath(d, "agg.key")), 0600);
    assert_int_equal(file_mode(fpath(d, "alice_op.key")), 0600);
    assert_int_equal(file_mode(fpath(d, "ca.crt")), 0644);

    assert_ok(verify_in(d, d, "site-1.example", name, &role, err), err);
    assert_string_equal(name, "site-1.example");
    assert_int_equal(role, FL_ROLE_CLIENT);
    assert_ok(verify_in(d, d, "agg", name, &role, err), err);
    assert_string_equal(name, "agg");
    assert_int_equal(role, FL_ROLE_AGGREGATOR);
    assert_ok(verify_in(d, d, "alice_op", name, &role, err), err);
    assert_string_equal(name, "alice_op");
    assert_int_equal(role, FL_ROLE_OPERATOR);

    /* Without a CRL too, and through a long-lived verifier. */
    size_t len;
    char *pem = fl_test_slurp(fpath(d, "agg.crt"), &len);
    assert_ok(fl_pki_verify_cert(pem, len, fpath(d, "ca.crt"), NULL, name, &role, err), err);
    fl_pki_verifier *v = NULL;
    assert_ok(fl_pki_verifier_new(&v, fpath(d, "ca.crt"), fpath(d, "ca.crl"), err), err);
    for (int i = 0; i < 3; i++) {
        role = 0;
        assert_ok(fl_pki_verifier_check(v, pem, len + 1 /* with its NUL */, name, &role, err), err);
        assert_int_equal(role, FL_ROLE_AGGREGATOR);
    }
    fl_pki_verifier_free(v);
    fl_pki_verifier_free(NULL);

    /* The role and name as a server reads them from gRPC's auth context. */
    assert_ok(fl_pki_peer_role(pem, len, name, &role, err), err);
    assert_string_equal(name, "agg");
    assert_int_equal(role, FL_ROLE_AGGREGATOR);
    free(pem);

    /* The certificate's contents, as RFC 5280 and our profile want them. */
    FILE *f = fopen(fpath(d, "agg.crt"), "r");
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    char buf[256];
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationalUnitName, buf,
                              sizeof buf);
    assert_string_equal(buf, "aggregator");
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName, buf, sizeof buf);
    assert_string_equal(buf, "Acme Health");
    assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_host(x, "agg", 0, 0, NULL), 1);
    BIGNUM *sn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    assert_int_equal(BN_num_bytes(sn), 16); /* 128 random bits, positive */
    BN_free(sn);
    assert_true(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
    assert_non_null(X509_get0_authority_key_id(x));
    assert_int_equal(X509_check_ca(x), 0);
    X509_free(x);

    fl_pki_entry *e = NULL;
    size_t n = 0;
    assert_ok(fl_pki_list(&e, &n, d, err), err);
    assert_int_equal(n, 3);
    assert_string_equal(e[0].name, "site-1.example");
    assert_int_equal(e[0].role, FL_ROLE_CLIENT);
    assert_int_equal(e[1].role, FL_ROLE_AGGREGATOR);
    assert_int_equal(e[2].role, FL_ROLE_OPERATOR);
    assert_int_equal(strlen(e[0].serial), 32);
    assert_string_not_equal(e[0].serial, e[1].serial);
    assert_false(e[0].revoked);
    free(e);
}

static void test_other_ca_rejected(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", name[64];
    int role;
    const char *a = tdir("ca-a"), *b = tdir("ca-b"), *c = tdir("ca-c");
    assert_ok(fl_pki_init(a, NULL, 30, err), err);
    assert_ok(fl_pki_init(b, NULL, 30, err), err); /* same federation name, same CA subject */
    assert_ok(fl_pki_init(c, "other", 30, err), err);
    assert_ok(fl_pki_issue(b, "site1", FL_ROLE_CLIENT, 10, err), err);
    assert_ok(fl_pki_issue(c, "site1", FL_ROLE_CLIENT, 10, err), err);
    assert_err(verify_in(b, a, "site1", name, &role, err), FL_EAUTH, err, "issuer");
    assert_err(verify_in(c, a, "site1", name, &role, err), FL_EAUTH, err, "issuer");
    assert_true(strstr(err, "site1") != NULL);
    assert_ok(verify_in(b, b, "site1", name, &role, err), err);

    /* A CRL signed by another CA is refused when it is loaded. */
    fl_pki_verifier *v = NULL;
    assert_err(fl_pki_verifier_new(&v, fpath(a, "ca.crt"), fpath(b, "ca.crl"), err), FL_EAUTH, err,
               "not signed by the CA");
    assert_null(v);
}

static void test_expired_and_not_yet_valid(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", name[64];
    int role;
    const char *d = tdir("expiry");
    time_t now = time(NULL);
    assert_ok(fl_pki_init(d, NULL, 30, err), err);
    assert_ok(fl_pki_issue_at(d, "old", FL_ROLE_CLIENT, now - 2 * 86400, now - 86400, err), err);
    assert_ok(fl_pki_issue_at(d, "early", FL_ROLE_CLIENT, now + 86400, now + 2 * 86400, err), err);
    assert_err(verify_in(d, d, "old", name, &role, err), FL_EAUTH, err, "expired");
    assert_err(verify_in(d, d, "early", name, &role, err), FL_EAUTH, err, "not yet valid");
    /* A certificate never outlives its CA. */
    assert_ok(fl_pki_issue(d, "long", FL_ROLE_CLIENT, 1000, err), err);
    fl_pki_entry *e = NULL;
    size_t n = 0;
    assert_ok(fl_pki_list(&e, &n, d, err), err);
    assert_int_equal(n, 3);
    FILE *f = fopen(fpath(d, "ca.crt"), "r");
    X509 *ca = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    struct tm tm;
    ASN1_TIME_to_tm(X509_get0_notAfter(ca), &tm);
    char ca_end[21];
    strftime(ca_end, sizeof ca_end, "%Y-%m-%dT%H:%M:%SZ", &tm);
    assert_string_equal(e[2].not_after, ca_end);
    X509_free(ca);
    free(e);
    /* Bad validity windows. */
    assert_err(fl_pki_issue_at(d, "x", FL_ROLE_CLIENT, now, now, err), FL_EINVAL, err, "validity");
    assert_err(fl_pki_issue(d, "x", FL_ROLE_CLIENT, 0, err), FL_EINVAL, err, "days");
    assert_err(fl_pki_init(tdir("expiry-bad"), NULL, -1, err), FL_EINVAL, err, "days");
}

static void test_revoke(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", name[64];
    int role;
    const char *d = tdir("revoke");
    assert_ok(fl_pki_init(d, NULL, 30, err), err);
    assert_ok(fl_pki_issue(d, "site1", FL_ROLE_CLIENT, 10, err), err);
    assert_ok(fl_pki_issue(d, "site2", FL_ROLE_CLIENT, 10, err), err);
    assert_ok(verify_in(d, d, "site1", name, &role, err), err);
    assert_ok(fl_pki_revoke(d, "site1", err), err);
    assert_err(verify_in(d, d, "site1", name, &role, err), FL_EAUTH, err, "revoked");
    assert_true(strstr(err, "site1") != NULL);
    assert_ok(verify_in(d, d, "site2", name, &role, err), err);
    /* Revocation is only as good as the CRL the verifier is given. */
    size_t len;
    char *pem = fl_test_slurp(fpath(d, "site1.crt"), &len);
    assert_ok(fl_pki_verify_cert(pem, len, fpath(d, "ca.crt"), NULL, name, &role, err), err);
    free(pem);

    assert_err(fl_pki_revoke(d, "site1", err), FL_ESTATE, err, "revoked already");
    assert_err(fl_pki_revoke(d, "nobody", err), FL_EINVAL, err, "nobody");
    assert_err(fl_pki_revoke(d, "bad name", err), FL_EINVAL, err, "name");

    fl_pki_entry *e = NULL;
    size_t n = 0;
    assert_ok(fl_pki_list(&e, &n, d, err), err);
    assert_int_equal(n, 2);
    assert_true(e[0].revoked);
    assert_int_equal(strlen(e[0].revoked_at), 20);
    assert_false(e[1].revoked);
    char serial2[41];
    strcpy(serial2, e[1].serial);
    free(e);

    /* Re-issue after removing the files; revoking by serial leaves the new
     * one valid. */
    unlink(fpath(d, "site2.crt"));
    unlink(fpath(d, "site2.key"));
    assert_ok(fl_pki_issue(d, "site2", FL_ROLE_CLIENT, 10, err), err);
    assert_ok(fl_pki_revoke_serial(d, serial2, err), err);
    assert_ok(verify_in(d, d, "site2", name, &role, err), err);
    assert_err(fl_pki_revoke_serial(d, "xyz", err), FL_EINVAL, err, "hex");

    /* CRL numbers only grow: init 1, two revocations, one update. */
    assert_ok(fl_pki_crl_update(d, 7, err), err);
    FILE *f = fopen(fpath(d, "ca.crl"), "r");
    X509_CRL *crl = PEM_read_X509_CRL(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(crl);
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    assert_int_equal(ASN1_INTEGER_get(num), 4);
    assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
    ASN1_INTEGER_free(num);
    X509_CRL_free(crl);
}

/* Re-encodes the certificate's DER after edit() and returns it as PEM. */
static char *tampered(const char *path, void (*edit)(unsigned char *der, int len)) {
    FILE *f = fopen(path, "r");
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    X509_free(x);
    edit(der, n);
    const unsigned char *p = der;
    X509 *y = d2i_X509(NULL, &p, n);
    assert_non_null(y);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, y);
    char *data;
    long len = BIO_get_mem_data(bio, &data);
    char *out = malloc((size_t)len + 1);
    memcpy(out, data, (size_t)len);
    out[len] = 0;
    BIO_free(bio);
    X509_free(y);
    OPENSSL_free(der);
    return out;
}

static void edit_name(unsigned char *der, int len) {
    /* The first "site1" is the subject CN: make it "site9". */
    for (int i = 0; i + 5 <= len; i++)
        if (!memcmp(der + i, "site1", 5)) {
            der[i + 4] = '9';
            return;
        }
    fail_msg("CN not found in DER");
}

static void edit_signature(unsigned char *der, int len) {
    der[len - 1] ^= 0x01; /* last byte of the ECDSA s value */
}

static void test_tampered_rejected(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", name[64];
    int role;
    const char *d = tdir("tamper");
    assert_ok(fl_pki_init(d, NULL, 30, err), err);
    assert_ok(fl_pki_issue(d, "site1", FL_ROLE_CLIENT, 10, err), err);
    const char *ca = fpath(d, "ca.crt"), *crl = fpath(d, "ca.crl");
    char *pem = tampered(fpath(d, "site1.crt"), edit_name);
    assert_err(fl_pki_verify_cert(pem, strlen(pem), ca, crl, name, &role, err), FL_ECRYPTO, err,
               "signature");
    /* The signature is not checked by peer_role (gRPC did it), but the CN
     * no longer matches the subjectAltName. */
    assert_err(fl_pki_peer_role(pem, strlen(pem), name, &role, err), FL_EAUTH, err,
               "subjectAltName");
    free(pem);
    pem = tampered(fpath(d, "site1.crt"), edit_signature);
    assert_err(fl_pki_verify_cert(pem, strlen(pem), ca, crl, name, &role, err), FL_ECRYPTO, err,
               "signature");
    free(pem);
    const char junk[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_err(fl_pki_verify_cert(junk, sizeof junk - 1, ca, crl, name, &role, err), FL_EINVAL, err,
               "expected a PEM certificate");
    assert_err(fl_pki_verify_cert("", 0, ca, crl, name, &role, err), FL_EINVAL, err, "PEM");
    /* The CA's own certificate chains but names no participant. */
    size_t len;
    pem = fl_test_slurp(ca, &len);
    assert_err(fl_pki_verify_cert(pem, len, ca, crl, name, &role, err), FL_EAUTH, err,
               "CA certificate");
    free(pem);
    /* Missing files are I/O errors that name the file. */
    pem = fl_test_slurp(fpath(d, "site1.crt"), &len);
    assert_err(fl_pki_verify_cert(pem, len, fpath(d, "nope.crt"), NULL, name, &role, err), FL_EIO,
               err, "nope.crt");
    assert_err(fl_pki_verify_cert(pem, len, fpath(d, "site1.crt"), NULL, name, &role, err),
               FL_EINVAL, err, "CA certificate");
    free(pem);
}

static void test_bad_names_and_roles(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    const char *d = tdir("names");
    assert_ok(fl_pki_init(d, NULL, 30, err), err);
    const char *bad[] = {"",
                         "-lead",
                         ".hidden",
                         "a b",
                         "a/b",
                         "../up",
                         "x\ny",
                         "ca",
                         "caf\xc3\xa9",
                         "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_err(fl_pki_issue(d, bad[i], FL_ROLE_CLIENT, 10, err), FL_EINVAL, err, "name");
    }
    assert_err(fl_pki_issue(d, NULL, FL_ROLE_CLIENT, 10, err), FL_EINVAL, err, "name");
    assert_ok(fl_pki_issue(d, "012345678901234567890123456789012345678901234567890123456789012",
                           FL_ROLE_CLIENT, 10, err),
              err);
    assert_err(fl_pki_issue(d, "site1", FL_ROLE_NONE, 10, err), FL_EINVAL, err,
               "client, aggregator or operator");
    assert_err(fl_pki_issue(d, "site1", 7, 10, err), FL_EINVAL, err, "role");
    assert_int_equal(fl_pki_role_parse("aggregator"), FL_ROLE_AGGREGATOR);
    assert_int_equal(fl_pki_role_parse("Aggregator"), FL_ROLE_NONE);
    assert_int_equal(fl_pki_role_parse(NULL), FL_ROLE_NONE);
    assert_string_equal(fl_pki_role_name(FL_ROLE_OPERATOR), "operator");
    assert_string_equal(fl_pki_role_name(42), "none");
    assert_err(fl_pki_init(tdir("names-fed"), " padded", 30, err), FL_EINVAL, err,
               "federation name");
    assert_err(fl_pki_init(tdir("names-fed"), "", 30, err), FL_EINVAL, err, "federation name");
    /* Nothing was left behind by the refused init. */
    assert_int_equal(access(fpath(tdir("names-fed"), "ca.key"), F_OK), -1);
    /* No files for refused names. */
    assert_int_equal(access(fpath(d, "a b.key"), F_OK), -1);
    /* Issue needs a CA. */
    assert_err(fl_pki_issue(tdir("no-such-ca"), "site1", FL_ROLE_CLIENT, 10, err), FL_EIO, err,
               "no-such-ca");
}

static void test_refuse_overwrite(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    const char *d = tdir("overwrite");
    assert_ok(fl_pki_init(d, NULL, 30, err), err);
    size_t len1, len2;
    char *before = fl_test_slurp(fpath(d, "ca.key"), &len1);
    assert_err(fl_pki_init(d, NULL, 30, err), FL_ESTATE, err, fpath(d, "ca.key"));
    char *after = fl_test_slurp(fpath(d, "ca.key"), &len2);
    assert_int_equal(len1, len2);
    assert_memory_equal(before, after, len1);
    free(before);
    free(after);
    /* Any one of the CA's files is enough to refuse. */
    const char *e = tdir("overwrite-index");
    mkdir(e, 0700);
    fclose(fopen(fpath(e, "index.txt"), "w"));
    assert_err(fl_pki_init(e, NULL, 30, err), FL_ESTATE, err, "index.txt");
    assert_int_equal(access(fpath(e, "ca.key"), F_OK), -1);
    /* A participant's files are not overwritten either. */
    assert_ok(fl_pki_issue(d, "site1", FL_ROLE_CLIENT, 10, err), err);
    assert_err(fl_pki_issue(d, "site1", FL_ROLE_OPERATOR, 10, err), FL_ESTATE, err, "site1.key");
    fl_pki_entry *ent = NULL;
    size_t n = 0;
    assert_ok(fl_pki_list(&ent, &n, d, err), err);
    assert_int_equal(n, 1);
    free(ent);
}

static void test_corrupt_index(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    const char *d = tdir("index");
    assert_ok(fl_pki_init(d, NULL, 30, err), err);
    assert_ok(fl_pki_issue(d, "site1", FL_ROLE_CLIENT, 10, err), err);
    FILE *f = fopen(fpath(d, "index.txt"), "a");
    fputs("ABCD\tV\tnot-a-time\t-\tclient\tsite2\n", f);
    fclose(f);
    fl_pki_entry *e = NULL;
    size_t n = 0;
    assert_err(fl_pki_list(&e, &n, d, err), FL_EPARSE, err, "index.txt:3:");
    assert_null(e);
    assert_err(fl_pki_revoke(d, "site1", err), FL_EPARSE, err, "index.txt:3:");
}

static void test_sign_verify(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "";
    const char *d = tdir("sign");
    assert_ok(fl_pki_init(d, NULL, 30, err), err);
    assert_ok(fl_pki_issue(d, "site1", FL_ROLE_CLIENT, 10, err), err);
    assert_ok(fl_pki_issue(d, "site2", FL_ROLE_CLIENT, 10, err), err);
    size_t l1, l2;
    char *c1 = fl_test_slurp(fpath(d, "site1.crt"), &l1),
         *c2 = fl_test_slurp(fpath(d, "site2.crt"), &l2);
    uint8_t msg[300];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7);
    uint8_t sig[FL_SIG_MAX], sig2[FL_SIG_MAX];
    size_t sl = 0, sl2 = 0;
    assert_ok(fl_sign(sig, &sl, msg, sizeof msg, fpath(d, "site1.key"), err), err);
    assert_true(sl >= 8 && sl <= FL_SIG_MAX);
    assert_int_equal(sig[0], 0x30); /* DER SEQUENCE */
    assert_ok(fl_verify(sig, sl, msg, sizeof msg, c1, l1, err), err);
    /* Any flipped bit of the message or the signature fails. */
    for (size_t bit = 0; bit < 8 * sizeof msg; bit += 97) {
        msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_err(fl_verify(sig, sl, msg, sizeof msg, c1, l1, err), FL_ECRYPTO, err, "site1");
        msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    for (size_t bit = 0; bit < 8 * sl; bit += 13) {
        sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(fl_verify(sig, sl, msg, sizeof msg, c1, l1, err), FL_ECRYPTO);
        sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* Another participant's key. */
    assert_err(fl_verify(sig, sl, msg, sizeof msg, c2, l2, err), FL_ECRYPTO, err, "site2");
    assert_ok(fl_sign(sig2, &sl2, msg, sizeof msg, fpath(d, "site2.key"), err), err);
    assert_int_equal(fl_verify(sig2, sl2, msg, sizeof msg, c1, l1, err), FL_ECRYPTO);
    /* Lengths. */
    assert_int_equal(fl_verify(sig, 0, msg, sizeof msg, c1, l1, err), FL_ECRYPTO);
    assert_int_equal(fl_verify(sig, FL_SIG_MAX + 1, msg, sizeof msg, c1, l1, err), FL_ECRYPTO);
    assert_int_equal(fl_verify(sig, sl - 1, msg, sizeof msg, c1, l1, err), FL_ECRYPTO);
    /* The empty message is a message. */
    assert_ok(fl_sign(sig2, &sl2, msg, 0, fpath(d, "site1.key"), err), err);
    assert_ok(fl_verify(sig2, sl2, msg, 0, c1, l1, err), err);

    /* A loaded signer, many signatures, each different (random k) and valid. */
    fl_signer *s = NULL;
    assert_ok(fl_signer_new(&s, fpath(d, "site1.key"), err), err);
    for (int i = 0; i < 20; i++) {
        assert_ok(fl_signer_sign(s, sig2, &sl2, msg, sizeof msg, err), err);
        assert_ok(fl_verify(sig2, sl2, msg, sizeof msg, c1, l1, err), err);
        assert_false(sl2 == sl && !memcmp(sig, sig2, sl));
    }
    fl_signer_free(s);
    fl_signer_free(NULL);

    /* Keys that are not P-256, and files that are not keys. */
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(ed);
    FILE *f = fopen(fpath(d, "ed.key"), "w");
    PEM_write_PrivateKey(f, ed, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    EVP_PKEY_free(ed);
    assert_err(fl_sign(sig2, &sl2, msg, sizeof msg, fpath(d, "ed.key"), err), FL_EINVAL, err,
               "P-256");
    assert_err(fl_sign(sig2, &sl2, msg, sizeof msg, fpath(d, "site1.crt"), err), FL_EINVAL, err,
               "private key");
    assert_err(fl_sign(sig2, &sl2, msg, sizeof msg, fpath(d, "missing.key"), err), FL_EIO, err,
               "missing.key");
    s = (fl_signer *)1;
    assert_int_equal(fl_signer_new(&s, fpath(d, "missing.key"), err), FL_EIO);
    assert_null(s);
    free(c1);
    free(c2);
}

/* ----------------------- interop with the openssl CLI ------------------ */

static const char *find_openssl(void) {
    static char buf[1024];
    const char *path = getenv("PATH");
    if (!path) path = "/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof buf, "%.*s/openssl", (int)n, path);
        if (access(buf, X_OK) == 0) return buf;
        path += n + (path[n] == ':');
    }
    return NULL;
}

static int openssl_verify(const char *openssl, const char *d, const char *name,
                          const char *purpose) {
    char ca[1024], crl[1024], crt[1024];
    snprintf(ca, sizeof ca, "%s/ca.crt", d);
    snprintf(crl, sizeof crl, "%s/ca.crl", d);
    snprintf(crt, sizeof crt, "%s/%s.crt", d, name);
    char *argv[] = {(char *)openssl,
                    "verify",
                    "-x509_strict",
                    "-purpose",
                    (char *)purpose,
                    "-CAfile",
                    ca,
                    "-crl_check",
                    "-CRLfile",
                    crl,
                    crt,
                    NULL};
    fl_proc_result r;
    assert_int_equal(fl_test_run(&r, argv), 0);
    int code = r.exit_code;
    if (code) print_message("openssl verify %s: %s%s", name, r.out, r.err);
    fl_proc_result_free(&r);
    return code;
}

static void test_openssl_cli_agrees(void **state) {
    (void)state;
    const char *openssl = find_openssl();
    if (!openssl) skip(); /* the CLI is optional; the API checks stand alone */
    char err[FL_ERR_LEN] = "", name[64];
    int role;
    const char *d = tdir("interop");
    time_t now = time(NULL);
    assert_ok(fl_pki_init(d, "interop", 30, err), err);
    assert_ok(fl_pki_issue(d, "site1", FL_ROLE_CLIENT, 10, err), err);
    assert_ok(fl_pki_issue(d, "agg", FL_ROLE_AGGREGATOR, 10, err), err);
    assert_ok(fl_pki_issue_at(d, "old", FL_ROLE_CLIENT, now - 2 * 86400, now - 86400, err), err);
    assert_int_equal(openssl_verify(openssl, d, "site1", "sslclient"), 0);
    assert_int_equal(openssl_verify(openssl, d, "agg", "sslserver"), 0);
    assert_true(openssl_verify(openssl, d, "agg", "sslclient") != 0); /* EKU by role */
    assert_true(openssl_verify(openssl, d, "old", "sslclient") != 0);
    assert_ok(fl_pki_revoke(d, "site1", err), err);
    assert_true(openssl_verify(openssl, d, "site1", "sslclient") != 0);
    assert_err(verify_in(d, d, "site1", name, &role, err), FL_EAUTH, err, "revoked");
    assert_int_equal(openssl_verify(openssl, d, "agg", "sslserver"), 0);
}

/* When a certificate or the CRL stops being valid, and the note an operator
 * gets before that happens. */
static void test_expiry(void **state) {
    (void)state;
    char err[FL_ERR_LEN] = "", note[1024];
    const char *d = tdir("expiry-notes");
    time_t now = time(NULL), when;
    assert_ok(fl_pki_init(d, NULL, 3650, err), err);
    assert_ok(fl_pki_issue(d, "site-1", FL_ROLE_CLIENT, 10, err), err);
    assert_ok(fl_pki_crl_update(d, 3, err), err);
    assert_ok(fl_pki_file_expiry(&when, fpath(d, "site-1.crt"), err), err);
    assert_true(labs((long)(when - now - 10 * 86400)) < 3600);
    assert_ok(fl_pki_file_expiry(&when, fpath(d, "ca.crl"), err), err);
    assert_true(labs((long)(when - now - 3 * 86400)) < 3600);
    assert_ok(fl_pki_file_expiry(&when, fpath(d, "ca.crt"), err), err);
    assert_true(when - now > 3000L * 86400);
    /* Within the warning window: a note naming the file, the time and the fix. */
    assert_int_equal(
        fl_pki_expiry_note(note, sizeof note, fpath(d, "ca.crl"), "the CRL", "re-sign it", 7, now),
        1);
    if (!strstr(note, "the CRL (") || !strstr(note, "expires in 3.0 days") ||
        !strstr(note, ": re-sign it"))
        fail_msg("note '%s'", note);
    assert_int_equal(fl_pki_expiry_note(note, sizeof note, fpath(d, "site-1.crt"), "cert", "x", 30,
                                        now + 11 * 86400),
                     1);
    if (!strstr(note, "expired at")) fail_msg("note '%s'", note);
    /* Outside it, or no readable file: nothing. */
    assert_int_equal(
        fl_pki_expiry_note(note, sizeof note, fpath(d, "ca.crl"), "the CRL", "x", 2, now), 0);
    assert_int_equal(fl_pki_expiry_note(note, sizeof note, fpath(d, "nope.crt"), "n", "x", 30, now),
                     0);
    assert_int_equal(fl_pki_expiry_note(note, sizeof note, "", "n", "x", 30, now), 0);
    /* Not a certificate or CRL: named. */
    char *junk = fl_test_write_tmp("junk.pem", "hello\n");
    assert_err(fl_pki_file_expiry(&when, junk, err), FL_EINVAL, err, "junk.pem");
    free(junk);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_issue_roles),
        cmocka_unit_test(test_other_ca_rejected),
        cmocka_unit_test(test_expired_and_not_yet_valid),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_revoke),
        cmocka_unit_test(test_tampered_rejected),
        cmocka_unit_test(test_bad_names_and_roles),
        cmocka_unit_test(test_refuse_overwrite),
        cmocka_unit_test(test_corrupt_index),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_openssl_cli_agrees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
