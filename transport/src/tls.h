/*
 * Private to transport: the TLS 1.3 layer of links (link.c) and the pump
 * that carries a detached link's bytes between a helper's socketpair end
 * and the TLS session (tls_pump.c). docs/protocol.md §2.2 says what goes on
 * the wire and why.
 */
#ifndef COLO_TRANSPORT_TLS_H
#define COLO_TRANSPORT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct xprt_link_cfg;
struct colo_buf;

/* Length of the external PSK derived from the key file. */
#define XPRT_TLS_PSK_LEN 32u
/* The PSK's identity on the wire (not secret). */
#define XPRT_TLS_PSK_IDENTITY "colo-link-psk-v2"

/* PSK = HKDF-SHA256(ikm = key, salt = none, info = label), 32 bytes. */
int xprt_tls_derive_psk(const uint8_t *key, size_t key_len,
                        uint8_t out[XPRT_TLS_PSK_LEN]);

/*
 * A TLS 1.3 context for one side of a link: external PSK (psk set) or
 * x509 from creds_dir (QEMU/libvirt layout; the side's cert and key and
 * ca-cert.pem, peer verification required). Returns 0 or -COLO_ECONFIG
 * with why filled (names the file).
 */
int xprt_tls_ctx_new(bool server, const uint8_t *psk, const char *creds_dir,
                     SSL_CTX **ret, char *why, size_t whysz);

/* A new SSL for one connection (PSK callbacks bound to psk, which must
 * outlive it). peer_host: what the client connected to (checked against
 * the server's certificate in x509 mode; NULL: not checked). */
SSL *xprt_tls_ssl_new(SSL_CTX *ctx, bool server, const uint8_t *psk,
                      const char *peer_host);

/*
 * After a failed handshake or record: empty OpenSSL's error queue into one
 * sentence for xprt_link_why ("wrong key: ...", "certificate expired",
 * "record failed its integrity check ..."). Returns the link error code:
 * -COLO_EAUTH for handshake/authentication failures,
 * -COLO_ESTREAM_CORRUPT for a record that failed its integrity check.
 */
int xprt_tls_explain(SSL *ssl, unsigned long err, bool handshake, char *why,
                     size_t whysz);

/* Refuse a secret file readable by group or others (as ssh does). */
int xprt_secret_file_check(const char *path, char *why, size_t whysz);

/*
 * Pump (tls_pump.c). A thread moves bytes between the TLS session on
 * net_fd (blocking-free, poll()) and local_fd (our end of a socketpair
 * whose other end a helper reads and writes), until either side ends or
 * xprt_tls_pump_stop(). EOF/errors propagate: the net side ending shuts
 * local_fd down for writing (the helper reads EOF), the helper's side
 * ending shuts the TLS connection down. The thread owns ssl, net_fd and
 * local_fd while it runs.
 */
struct xprt_tls_pump;

int xprt_tls_pump_start(SSL *ssl, int net_fd, int local_fd,
                        struct xprt_tls_pump **ret);
/*
 * Stop the thread: whatever the helper wrote that is already in local_fd
 * is sent first; then the thread ends. Bytes decrypted but not yet given to
 * local_fd are appended to undelivered. Returns 0, or the pump's error
 * (-errno, -COLO_ESTREAM_CORRUPT, -COLO_EPEER_CLOSED) if it had ended.
 */
int xprt_tls_pump_stop(struct xprt_tls_pump *p, struct colo_buf *undelivered);
/* Stop (dropping undelivered bytes) and free; NULL ok. */
void xprt_tls_pump_free(struct xprt_tls_pump *p);

#endif
