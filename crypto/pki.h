/* pki.h: the federation's public-key infrastructure (DESIGN.md §3, §4, §9,
 * §11; operator guide in docs/pki.md). One EC P-256 certificate authority per
 * federation signs an EC P-256 key and X.509 v3 certificate for every site
 * (role client), the aggregator and each operator; revocation is a CRL the CA
 * re-signs. The same keys sign secure-aggregation key advertisements, models
 * and audit-log chain heads (ECDSA P-256 / SHA-256, DER signatures).
 *
 * Everything here uses the OpenSSL 3 EVP and X509 APIs. Functions return 0 or
 * a negative FL_E* code from core/status.h and, when `err` is not NULL, fill
 * it (FL_ERR_LEN bytes) with one line naming the file or field and what was
 * expected, followed by OpenSSL's own reason where it has one:
 *   FL_EINVAL   bad argument or malformed input (name, role, PEM text)
 *   FL_EIO      a file could not be read or written
 *   FL_ESTATE   the file to create exists already (never overwritten)
 *   FL_ECRYPTO  a signature or other cryptographic check failed
 *   FL_EAUTH    a certificate is revoked, expired, not issued by this CA, or
 *               carries no valid Cohort role
 *   FL_ENOMEM   allocation failed
 * Private-key text is wiped from memory after use and never logged. */
#ifndef FL_PKI_H
#define FL_PKI_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/filestamp.h"
#include "core/status.h"

/* Roles. A certificate carries exactly one, as the subject's
 * organizationalUnitName (OU=client|aggregator|operator), and its extended
 * key usage must agree: serverAuth for the aggregator, clientAuth for the
 * others (docs/pki.md, "Roles"). */
enum fl_pki_role {
    FL_ROLE_NONE = 0,
    FL_ROLE_CLIENT = 1,     /* a site (hospital, bank): runs cohort-client */
    FL_ROLE_AGGREGATOR = 2, /* the gRPC and console server */
    FL_ROLE_OPERATOR = 3,   /* a person or tool driving the console and CLI */
};

#define FL_PKI_NAME_MAX 64       /* name buffers, including the NUL */
#define FL_PKI_FEDERATION_MAX 60 /* "<federation> CA" must fit a 64-char CN */
#define FL_PKI_CA_DAYS 3650      /* default CA lifetime */
#define FL_PKI_CERT_DAYS 365     /* default certificate lifetime */
#define FL_PKI_CRL_DAYS 30       /* a CRL's nextUpdate, from its signing */
#define FL_PKI_MAX_DAYS 36500    /* upper bound on any --days */
#define FL_SIG_MAX 72            /* DER ECDSA P-256 signature, worst case */

/* "client", "aggregator", "operator"; "none" for anything else. */
const char *fl_pki_role_name(int role);
/* The role for a name above, or FL_ROLE_NONE. */
int fl_pki_role_parse(const char *name);

/* 0 if name matches [A-Za-z0-9][A-Za-z0-9._-]{0,62} and is not reserved
 * ("ca"); otherwise FL_EINVAL with the rule in err. Names become file names
 * and DNS subjectAltNames, so nothing else is allowed. */
int fl_pki_check_name(const char *name, char err[FL_ERR_LEN]);

/* ============================ CA directory ============================== */

/* Creates the federation CA in dir (created 0700 if missing):
 *   dir/ca.key     PKCS#8 PEM private key, mode 0600, created with O_EXCL
 *   dir/ca.crt     self-signed CA certificate, CN="<federation> CA",
 *                  O=<federation>, valid `days` days
 *   dir/ca.crl     an empty CRL (crlNumber 1), valid FL_PKI_CRL_DAYS days
 *   dir/index.txt  the issued-certificate index (format in docs/pki.md)
 * federation: 1..FL_PKI_FEDERATION_MAX printable ASCII characters, or NULL
 * for "cohort". Refuses (FL_ESTATE, naming the file) when any of the four
 * exists; on failure removes what it created. */
int fl_pki_init(const char *dir, const char *federation, int days, char err[FL_ERR_LEN]);

/* Issues dir/<name>.key (0600) and dir/<name>.crt for role, signed by the CA
 * in dir, valid `days` days (never beyond the CA's own notAfter), and appends
 * it to dir/index.txt. Refuses (FL_ESTATE) when dir/<name>.crt or .key exists:
 * to re-issue, revoke, then remove the old files. */
int fl_pki_issue(const char *dir, const char *name, int role, int days, char err[FL_ERR_LEN]);

/* fl_pki_issue with an explicit validity window, for tests (an already
 * expired certificate) and tooling (a planned rollover). not_before <
 * not_after; both are clamped to the CA's validity. */
int fl_pki_issue_at(const char *dir, const char *name, int role, time_t not_before,
                    time_t not_after, char err[FL_ERR_LEN]);

/* Revokes every valid certificate named `name` in dir/index.txt: marks it
 * revoked there, then re-signs dir/ca.crl with it listed (nextUpdate
 * FL_PKI_CRL_DAYS days away). FL_EINVAL if no such certificate exists,
 * FL_ESTATE if it is revoked already. */
int fl_pki_revoke(const char *dir, const char *name, char err[FL_ERR_LEN]);

/* Revokes the one certificate with this serial (hex, as `cohort pki list`
 * prints it), e.g. the old one after a name was re-issued. */
int fl_pki_revoke_serial(const char *dir, const char *serial, char err[FL_ERR_LEN]);

/* Re-signs dir/ca.crl from the index with a nextUpdate `days` days away. Run
 * before the old CRL's nextUpdate: verifiers reject every certificate once
 * the CRL they hold has expired. */
int fl_pki_crl_update(const char *dir, int days, char err[FL_ERR_LEN]);

/* When the certificate or CRL in the PEM file at path stops being valid:
 * a certificate's notAfter, a CRL's nextUpdate (after which every verifier
 * refuses every certificate). FL_EIO / FL_EINVAL naming the file. */
int fl_pki_file_expiry(time_t *when, const char *path, char err[FL_ERR_LEN]);

/* When the file at path (fl_pki_file_expiry) ends within warn_days of now,
 * or has ended, writes "WHAT (PATH) expires in N.N days, at ISO-TIME: FIX"
 * (or "expired at") into note and returns 1; otherwise, or when the file
 * cannot be read, 0. */
int fl_pki_expiry_note(char *note, size_t note_len, const char *path, const char *what,
                       const char *fix, double warn_days, time_t now);

/* One row of dir/index.txt. Times are "YYYY-MM-DDTHH:MM:SSZ". */
typedef struct fl_pki_entry {
    char serial[41]; /* hex, as printed by openssl x509 -serial */
    char name[FL_PKI_NAME_MAX];
    int role;
    int revoked; /* 1 when listed in the CRL */
    char not_after[21];
    char revoked_at[21]; /* "" unless revoked */
} fl_pki_entry;

/* Reads dir/index.txt into *out (malloc'd array of *n entries, caller
 * frees with free()). FL_EPARSE names the line of a malformed row. */
int fl_pki_list(fl_pki_entry **out, size_t *n, const char *dir, char err[FL_ERR_LEN]);

/* ============================ Verification ============================== */

/* Checks a peer's certificate (PEM text, len bytes; a trailing NUL is
 * allowed): it chains directly to the CA certificate in ca_path, is within
 * its validity period, is not listed in the CRL at crl_path (when not NULL;
 * the CRL itself must verify against the CA and be current), is an end
 * entity (not a CA), and carries one valid role whose extended key usage
 * agrees. On success writes its name (the CN, which must also be a DNS
 * subjectAltName) to name_out and its role to *role_out. FL_ECRYPTO when a
 * signature does not verify (tampering), FL_EAUTH for a wrong CA, expired or
 * revoked certificate or a missing role, FL_EINVAL for text that is not a
 * certificate, FL_EIO when ca_path or crl_path cannot be read. */
int fl_pki_verify_cert(const char *cert_pem, size_t len, const char *ca_path, const char *crl_path,
                       char name_out[FL_PKI_NAME_MAX], int *role_out, char err[FL_ERR_LEN]);

/* The name and role of a certificate whose chain was verified elsewhere (gRPC
 * hands the peer's certificate over as the auth-context property
 * "x509_pem_cert" after its own TLS verification). No chain, time or CRL
 * check: use fl_pki_verify_cert or fl_pki_verifier for that. */
int fl_pki_peer_role(const char *cert_pem, size_t len, char name_out[FL_PKI_NAME_MAX],
                     int *role_out, char err[FL_ERR_LEN]);

/* A loaded CA certificate and CRL, for a server that verifies many peers:
 * fl_pki_verifier_check is fl_pki_verify_cert without re-reading the files.
 * It reads no shared mutable state, so several threads may check with one
 * verifier. To pick up a new CRL, make a new verifier and swap. */
typedef struct fl_pki_verifier fl_pki_verifier;
int fl_pki_verifier_new(fl_pki_verifier **out, const char *ca_path, const char *crl_path,
                        char err[FL_ERR_LEN]);
int fl_pki_verifier_check(const fl_pki_verifier *v, const char *cert_pem, size_t len,
                          char name_out[FL_PKI_NAME_MAX], int *role_out, char err[FL_ERR_LEN]);
void fl_pki_verifier_free(fl_pki_verifier *v);

/* A verifier that follows its CRL file. When the file at crl_path has changed
 * since *seen (a new inode, size or mtime: `cohort pki revoke|crl` replace it
 * by rename), builds a new verifier from ca_path and it into *fresh and
 * returns 1; returns 0, *fresh NULL, when it has not changed or cannot be
 * stat'ed; returns an FL_E* code with the reason when it changed but does
 * not load (the caller keeps its current verifier). *seen is updated
 * whenever the file changed, so a bad file is reported once. */
int fl_pki_verifier_reload(fl_pki_verifier **fresh, fl_file_stamp *seen, const char *ca_path,
                           const char *crl_path, char err[FL_ERR_LEN]);

/* ============================ Signatures ================================ */

/* ECDSA P-256 with SHA-256 over msg[0..len), DER-encoded into sig (at most
 * FL_SIG_MAX bytes), its length in *sig_len. The key at key_path is read,
 * used and wiped; it must be an EC P-256 key. Callers sign a message that
 * starts with a context label of their own (e.g. "cohort/secagg-adv/v1"), so a
 * signature made for one purpose is never valid for another. */
int fl_sign(uint8_t sig[FL_SIG_MAX], size_t *sig_len, const uint8_t *msg, size_t len,
            const char *key_path, char err[FL_ERR_LEN]);

/* 0 if sig is a valid signature of msg by the public key in the certificate
 * (PEM text); FL_ECRYPTO if not. The certificate itself is not checked here:
 * verify it first with fl_pki_verify_cert. */
int fl_verify(const uint8_t *sig, size_t sig_len, const uint8_t *msg, size_t len,
              const char *cert_pem, size_t cert_len, char err[FL_ERR_LEN]);

/* A private key loaded once (the aggregator signs every round). Opaque; it
 * owns an EVP_PKEY. fl_signer_sign may be called from several threads at once
 * with the same signer: each call has its own digest context. */
typedef struct fl_signer fl_signer;
int fl_signer_new(fl_signer **out, const char *key_path, char err[FL_ERR_LEN]);
int fl_signer_sign(const fl_signer *s, uint8_t sig[FL_SIG_MAX], size_t *sig_len, const uint8_t *msg,
                   size_t len, char err[FL_ERR_LEN]);
void fl_signer_free(fl_signer *s);

#endif
