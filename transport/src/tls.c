/*
 * TLS 1.3 for links: contexts (external PSK from the key file, or x509 in
 * QEMU's/libvirt's credentials layout), error explanations, and the check
 * that secret files are private. See tls.h and docs/protocol.md §2.2.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/x509v3.h>

#include "common/error.h"

/* TLS_AES_128_GCM_SHA256: the PSK's cipher suite (its hash, SHA-256, is
 * the one HKDF and the binder use). AES-GCM runs at several GB/s with the
 * CPU's AES instructions. */
static const unsigned char psk_suite[2] = {0x13, 0x01};
#define SUITES                                       \
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:" \
    "TLS_CHACHA20_POLY1305_SHA256"

static int psk_idx = -1;
static pthread_once_t psk_once = PTHREAD_ONCE_INIT;

static void psk_idx_init(void)
{
    psk_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int xprt_tls_derive_psk(const uint8_t *key, size_t key_len,
                        uint8_t out[XPRT_TLS_PSK_LEN])
{
    static const char info[] = "colo-link-v2 tls13 external psk";
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t outlen = XPRT_TLS_PSK_LEN;
    int ok;

    if (!pc)
        return -ENOMEM;
    ok = EVP_PKEY_derive_init(pc) > 0 &&
         EVP_PKEY_CTX_set_hkdf_md(pc, EVP_sha256()) > 0 &&
         EVP_PKEY_CTX_set1_hkdf_key(pc, key, (int)key_len) > 0 &&
         EVP_PKEY_CTX_add1_hkdf_info(pc, (const unsigned char *)info,
                                     (int)sizeof(info) - 1) > 0 &&
         EVP_PKEY_derive(pc, out, &outlen) > 0 && outlen == XPRT_TLS_PSK_LEN;
    EVP_PKEY_CTX_free(pc);
    return ok ? 0 : -COLO_EINTERNAL;
}

static SSL_SESSION *psk_session(SSL *ssl)
{
    const uint8_t *psk = SSL_get_ex_data(ssl, psk_idx);
    const SSL_CIPHER *c = SSL_CIPHER_find(ssl, psk_suite);
    SSL_SESSION *s;

    if (!psk || !c)
        return NULL;
    s = SSL_SESSION_new();
    if (!s)
        return NULL;
    if (!SSL_SESSION_set1_master_key(s, psk, XPRT_TLS_PSK_LEN) ||
        !SSL_SESSION_set_cipher(s, c) ||
        !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
        SSL_SESSION_free(s);
        return NULL;
    }
    return s;
}

static int psk_use_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id,
                      size_t *idlen, SSL_SESSION **sess)
{
    const SSL_CIPHER *c = SSL_CIPHER_find(ssl, psk_suite);

    *sess = NULL;
    if (md && c && md != SSL_CIPHER_get_handshake_digest(c))
        return 1; /* another hash was chosen: no PSK (the handshake fails) */
    *sess = psk_session(ssl);
    if (!*sess)
        return 0;
    *id = (const unsigned char *)XPRT_TLS_PSK_IDENTITY;
    *idlen = sizeof(XPRT_TLS_PSK_IDENTITY) - 1;
    return 1;
}

static int psk_find_cb(SSL *ssl, const unsigned char *id, size_t idlen,
                       SSL_SESSION **sess)
{
    *sess = NULL;
    if (idlen != sizeof(XPRT_TLS_PSK_IDENTITY) - 1 ||
        memcmp(id, XPRT_TLS_PSK_IDENTITY, idlen))
        return 1; /* unknown identity: no PSK, the handshake fails */
    *sess = psk_session(ssl);
    return *sess ? 1 : 0;
}

int xprt_secret_file_check(const char *path, char *why, size_t whysz)
{
    struct stat st;

    if (stat(path, &st) < 0) {
        int e = errno;

        snprintf(why, whysz, "%s: %s", path, strerror(e));
        return -COLO_ECONFIG;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(why, whysz,
                 "%s is accessible by group or others (mode %04o): it holds "
                 "a secret; run 'chmod 600 %s'",
                 path, (unsigned)(st.st_mode & 07777), path);
        return -COLO_ECONFIG;
    }
    return 0;
}

static void ssl_err_text(char *buf, size_t sz)
{
    unsigned long e = ERR_peek_last_error();

    if (e)
        ERR_error_string_n(e, buf, sz);
    else
        snprintf(buf, sz, "unknown error");
    ERR_clear_error();
}

static int load_x509(SSL_CTX *ctx, bool server, const char *dir, char *why,
                     size_t whysz)
{
    const char *who = server ? "server" : "client";
    char cert[4096], key[4096], ca[4096], err[256];
    struct stat st;

    snprintf(cert, sizeof(cert), "%s/%s-cert.pem", dir, who);
    snprintf(key, sizeof(key), "%s/%s-key.pem", dir, who);
    snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(why, whysz, "--tls-creds %s: not a directory", dir);
        return -COLO_ECONFIG;
    }
    if (xprt_secret_file_check(key, why, whysz) < 0)
        return -COLO_ECONFIG;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_err_text(err, sizeof(err));
        snprintf(why, whysz, "%s: cannot load the certificate: %s", cert, err);
        return -COLO_ECONFIG;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err_text(err, sizeof(err));
        snprintf(why, whysz,
                 "%s: cannot load the key (or it does not match "
                 "%s): %s",
                 key, cert, err);
        return -COLO_ECONFIG;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        ssl_err_text(err, sizeof(err));
        snprintf(why, whysz, "%s: cannot load the CA certificate: %s", ca, err);
        return -COLO_ECONFIG;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       NULL);
    return 0;
}

int xprt_tls_ctx_new(bool server, const uint8_t *psk, const char *creds_dir,
                     SSL_CTX **ret, char *why, size_t whysz)
{
    SSL_CTX *ctx;
    int rc;

    *ret = NULL;
    pthread_once(&psk_once, psk_idx_init);
    ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        snprintf(why, whysz, "cannot create a TLS context");
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_ciphersuites(ctx, SUITES);
    /* No tickets, no resumption: every connection authenticates anew. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    /* A peer killed with -9 sends no close_notify: EOF, as on a plain
     * link (the record framing finds what that truncates). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (creds_dir) {
        rc = load_x509(ctx, server, creds_dir, why, whysz);
        if (rc < 0) {
            SSL_CTX_free(ctx);
            return rc;
        }
    } else if (psk) {
        if (server)
            SSL_CTX_set_psk_find_session_callback(ctx, psk_find_cb);
        else
            SSL_CTX_set_psk_use_session_callback(ctx, psk_use_cb);
    } else {
        SSL_CTX_free(ctx);
        snprintf(why, whysz, "TLS needs a key or credentials");
        return -EINVAL;
    }
    *ret = ctx;
    return 0;
}

SSL *xprt_tls_ssl_new(SSL_CTX *ctx, bool server, const uint8_t *psk,
                      const char *peer_host)
{
    SSL *ssl = SSL_new(ctx);
    struct in6_addr a6;
    struct in_addr a4;

    if (!ssl)
        return NULL;
    if (psk)
        SSL_set_ex_data(ssl, psk_idx, (void *)psk);
    if (!server && peer_host && *peer_host &&
        SSL_CTX_get_verify_mode(ctx) != SSL_VERIFY_NONE) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        int ok;

        if (inet_pton(AF_INET, peer_host, &a4) == 1 ||
            inet_pton(AF_INET6, peer_host, &a6) == 1)
            ok = X509_VERIFY_PARAM_set1_ip_asc(vp, peer_host);
        else
            ok = SSL_set1_host(ssl, peer_host);
        if (ok != 1) {
            SSL_free(ssl);
            return NULL;
        }
    }
    return ssl;
}

int xprt_tls_explain(SSL *ssl, unsigned long err, bool handshake, char *why,
                     size_t whysz)
{
    int reason = ERR_GET_REASON(err);
    char text[256];
    long vr;

    if (err)
        ERR_error_string_n(err, text, sizeof(text));
    else
        snprintf(text, sizeof(text), "no TLS error reported");
    switch (reason) {
    case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
        snprintf(why, whysz,
                 "a TLS record failed its integrity check (bad record MAC): "
                 "the stream was altered, a record dropped or replayed in "
                 "transit%s",
                 handshake ? " (during the handshake)" : "");
        return handshake ? -COLO_EAUTH : -COLO_ESTREAM_CORRUPT;
    case SSL_R_BINDER_DOES_NOT_VERIFY:
        snprintf(why, whysz,
                 "TLS: the peer's key differs from ours (its PSK binder does "
                 "not verify): the two key files are not the same");
        return -COLO_EAUTH;
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
    case SSL_R_SSLV3_ALERT_ILLEGAL_PARAMETER:
        if (!handshake || !ssl || !SSL_get_ex_data(ssl, psk_idx))
            break;
        /* What OpenSSL answers a binder that does not verify. */
        snprintf(why, whysz,
                 "TLS: the peer refused our key (%s alert): the two key files "
                 "are not the same",
                 reason == SSL_R_TLSV1_ALERT_DECRYPT_ERROR
                     ? "decrypt_error"
                     : "illegal_parameter");
        return -COLO_EAUTH;
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        vr = ssl ? SSL_get_verify_result(ssl) : 0;
        snprintf(why, whysz, "TLS: the peer's certificate was refused: %s%s",
                 X509_verify_cert_error_string(vr),
                 vr == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                         vr == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
                         vr == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
                         vr == X509_V_ERR_CERT_SIGNATURE_FAILURE
                     ? " (not signed by our ca-cert.pem)"
                     : "");
        return -COLO_EAUTH;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        snprintf(why, whysz, "TLS: the peer sent no certificate");
        return -COLO_EAUTH;
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        snprintf(why, whysz, "TLS: the peer refused our certificate (%s)",
                 text);
        return -COLO_EAUTH;
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_UNEXPECTED_RECORD:
        if (handshake) {
            snprintf(why, whysz, "TLS: the peer does not speak TLS (%s)", text);
            return -COLO_EAUTH;
        }
        break;
    default:
        break;
    }
    snprintf(why, whysz, "TLS %s failed: %s",
             handshake ? "handshake" : "record", text);
    return handshake ? -COLO_EAUTH : -COLO_ESTREAM_CORRUPT;
}
