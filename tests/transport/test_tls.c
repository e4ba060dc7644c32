/*
 * TLS on links, over real TCP on 127.0.0.1: a wrong key and a protection
 * mismatch (TLS vs --insecure, both directions) are refused and named; a
 * man-in-the-middle relay (a real TCP relay on loopback that parses TLS
 * record framing) flips one bit in, drops, or replays one TLS record in
 * the middle of a stream: the receiver fails with -COLO_ESTREAM_CORRUPT,
 * delivers nothing from the damaged record on, and everything it did
 * deliver is intact and in order; both ends close cleanly. x509
 * credentials (certificates made with the openssl CLI at test time): a
 * good pair connects; an unsigned, an expired and a wrong-CA certificate
 * are refused and named. A key that others may read is refused.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "transport/colo_rec.h"
#include "transport/record.h"
#include "peer.h"

#define NREC    256
#define RECSZ   4096
#define MUT_AT  24 /* TLS application-data record the relay damages */
#define DATA_TY 0x80C08001u

static struct event_base *base;
static const char key_a[] = "the first shared key, long enough";
static const char key_b[] = "another shared key, long enough!!";

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
}

static void teardown(void)
{
    event_base_free(base);
}

TestSuite(tls, .init = setup, .fini = teardown, .timeout = 60);

struct side {
    struct xprt_link *link;
    struct xprt_listener *ls;
    int up, err, rejected;
    char why[512];
    /* receiver checks */
    uint64_t nrec, bad;
};

static void s_up(struct xprt_link *l, void *arg)
{
    (void)l;
    ((struct side *)arg)->up = 1;
}

static void s_record(struct xprt_link *l, const struct xprt_item *it, void *arg)
{
    struct side *s = arg;

    (void)l;
    if (it->kind != XPRT_ITEM_RECORD)
        return;
    /* Each record: its index in every byte (mod 251) after the first 8,
     * which hold the index. In order and intact, or it counts as bad. */
    if (it->type != DATA_TY || it->length != RECSZ ||
        colo_get_le64(it->body) != s->nrec)
        s->bad++;
    for (uint32_t i = 8; i < it->length; i++)
        if (it->body[i] != (uint8_t)((s->nrec + i) % 251)) {
            s->bad++;
            break;
        }
    s->nrec++;
}

static void s_error(struct xprt_link *l, int rc, void *arg)
{
    struct side *s = arg;

    s->err = rc;
    snprintf(s->why, sizeof(s->why), "%s", xprt_link_why(l));
}

static const struct xprt_link_cbs side_cbs = {
    .up = s_up, .record = s_record, .error = s_error};

static void s_accept(struct xprt_listener *ls, struct xprt_link *l, int rc,
                     void *arg)
{
    struct side *s = arg;

    (void)ls;
    if (rc < 0) {
        s->rejected = rc;
        return;
    }
    s->link = l;
    s->up = 1;
    xprt_link_set_cbs(l, &side_cbs, s);
}

static void cfg_key(struct xprt_link_cfg *c, const char *key)
{
    xprt_link_cfg_init(c);
    if (key) {
        c->key = (const uint8_t *)key;
        c->key_len = strlen(key);
    } else {
        c->plain = true;
    }
    c->name = "test";
}

static uint16_t listen_on(struct side *s, const struct xprt_link_cfg *cfg)
{
    cr_assert_eq(
        xprt_listener_new(base, "127.0.0.1", 0, cfg, s_accept, s, &s->ls), 0);
    return xprt_listener_port(s->ls);
}

/* Both sides fail: returns after the client's error (and the server's
 * verdict) or the deadline. */
static void expect_refused(struct side *srv, struct side *cli)
{
    cr_assert(run_until(base, &cli->err, 10000), "client never failed");
    cr_assert(run_until(base, &srv->rejected, 10000), "server never rejected");
    cr_assert_eq(cli->up, 0);
    cr_assert_eq(srv->up, 0);
    cr_assert_eq(cli->err, -COLO_EAUTH, "%s: %s", colo_strerror(cli->err),
                 cli->why);
    cr_assert_eq(srv->rejected, -COLO_EAUTH);
}

Test(tls, wrong_key_is_refused_and_named)
{
    struct xprt_link_cfg sc, cc;
    struct side srv = {0}, cli = {0};
    uint16_t port;

    cfg_key(&sc, key_a);
    cfg_key(&cc, key_b);
    port = listen_on(&srv, &sc);
    cr_assert_eq(xprt_link_connect(base, "127.0.0.1", port, &cc, &side_cbs,
                                   &cli, &cli.link),
                 0);
    expect_refused(&srv, &cli);
    cr_assert_not_null(strstr(cli.why, "key files are not the same"), "%s",
                       cli.why);
    xprt_link_free(cli.link);
    xprt_listener_free(srv.ls);
}

Test(tls, plaintext_client_to_tls_listener_is_refused_and_named)
{
    struct xprt_link_cfg sc, cc;
    struct side srv = {0}, cli = {0};
    uint16_t port;

    cfg_key(&sc, key_a);
    cfg_key(&cc, NULL);
    port = listen_on(&srv, &sc);
    cr_assert_eq(xprt_link_connect(base, "127.0.0.1", port, &cc, &side_cbs,
                                   &cli, &cli.link),
                 0);
    expect_refused(&srv, &cli);
    cr_assert_not_null(strstr(cli.why, "rejected by the peer: protection "
                                       "mismatch: it requires TLS"),
                       "%s", cli.why);
    cr_assert_not_null(strstr(cli.why, "--insecure"), "%s", cli.why);
    xprt_link_free(cli.link);
    xprt_listener_free(srv.ls);
}

Test(tls, tls_client_to_plaintext_listener_is_refused_and_named)
{
    struct xprt_link_cfg sc, cc;
    struct side srv = {0}, cli = {0};
    uint16_t port;

    cfg_key(&sc, NULL);
    cfg_key(&cc, key_a);
    port = listen_on(&srv, &sc);
    cr_assert_eq(xprt_link_connect(base, "127.0.0.1", port, &cc, &side_cbs,
                                   &cli, &cli.link),
                 0);
    expect_refused(&srv, &cli);
    cr_assert_not_null(strstr(cli.why, "it requires plain TCP (--insecure)"),
                       "%s", cli.why);
    xprt_link_free(cli.link);
    xprt_listener_free(srv.ls);
}

/* ---------------------------------------------------------------------- */
/* The man in the middle                                                    */

enum mutation { FLIP, DROP, REPLAY };

struct relay {
    int lfd, port;
    int target_port;
    enum mutation mut;
    pthread_t th;
    int damaged; /* the mutation happened */
};

/* Forward client->server, parsing TLS records after the 56-byte link
 * HELLO; damage application-data record MUT_AT. server->client as is. */
static void *relay_main(void *arg)
{
    struct relay *r = arg;
    struct sockaddr_in a = {.sin_family = AF_INET};
    static uint8_t cbuf[1 << 20];
    uint8_t sbuf[65536], last[16 + 5 + 16384];
    size_t clen = 0, lastlen = 0, hello = 56;
    int nappdata = 0;
    int c = accept(r->lfd, NULL, NULL), s;
    uint64_t deadline = colo_now_ns() + 30000000000ull;

    if (c < 0)
        return NULL;
    s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)r->target_port);
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
        goto out;
    while (colo_now_ns() < deadline) {
        struct pollfd pf[2] = {{.fd = c, .events = POLLIN},
                               {.fd = s, .events = POLLIN}};
        ssize_t n;

        if (poll(pf, 2, 200) < 0)
            break;
        if (pf[1].revents) {
            n = read(s, sbuf, sizeof(sbuf));
            if (n <= 0 || colo_write_all(c, sbuf, (size_t)n) < 0)
                break;
        }
        if (!pf[0].revents)
            continue;
        n = read(c, cbuf + clen, sizeof(cbuf) - clen);
        if (n <= 0)
            break;
        clen += (size_t)n;
        if (hello) {
            size_t k = clen < hello ? clen : hello;

            if (colo_write_all(s, cbuf, k) < 0)
                break;
            memmove(cbuf, cbuf + k, clen - k);
            clen -= k;
            hello -= k;
        }
        /* Whole TLS records: type(1) version(2) length(2) body. */
        while (!hello && clen >= 5) {
            size_t rl = 5 + (((size_t)cbuf[3] << 8) | cbuf[4]);
            bool app = cbuf[0] == 23;

            if (clen < rl)
                break;
            if (app && ++nappdata == MUT_AT) {
                r->damaged = 1;
                if (r->mut == FLIP) {
                    cbuf[5 + (rl - 5) / 2] ^= 0x10;
                    colo_write_all(s, cbuf, rl);
                } else if (r->mut == REPLAY) {
                    /* the previous record again, instead of this one */
                    colo_write_all(s, last, lastlen);
                    colo_write_all(s, cbuf, rl);
                } /* DROP: not forwarded */
            } else if (colo_write_all(s, cbuf, rl) < 0) {
                goto out;
            }
            if (app && rl <= sizeof(last)) {
                memcpy(last, cbuf, rl);
                lastlen = rl;
            }
            memmove(cbuf, cbuf + rl, clen - rl);
            clen -= rl;
        }
    }
out:
    close(c);
    close(s);
    return NULL;
}

static void relay_start(struct relay *r, int target_port, enum mutation m)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t sl = sizeof(a);

    r->mut = m;
    r->target_port = target_port;
    r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(r->lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
    cr_assert(listen(r->lfd, 1) == 0);
    getsockname(r->lfd, (struct sockaddr *)&a, &sl);
    r->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&r->th, NULL, relay_main, r), 0);
}

static void mitm(enum mutation m)
{
    struct xprt_link_cfg cfg;
    struct side srv = {0}, cli = {0};
    struct relay r = {0};
    static uint8_t body[RECSZ];
    uint16_t port;
    int sent = 0;

    cfg_key(&cfg, key_a);
    port = listen_on(&srv, &cfg);
    relay_start(&r, port, m);
    cr_assert_eq(xprt_link_connect(base, "127.0.0.1", (uint16_t)r.port, &cfg,
                                   &side_cbs, &cli, &cli.link),
                 0);
    cr_assert(run_until(base, &cli.up, 10000), "client never up: %s", cli.why);
    cr_assert(run_until(base, &srv.up, 10000));
    while (sent < NREC && !cli.err && !srv.err) {
        if (!xprt_link_may_write(cli.link)) {
            int never = 0;

            run_until(base, &never, 5);
            continue;
        }
        colo_put_le64(body, (uint64_t)sent);
        for (uint32_t i = 8; i < RECSZ; i++)
            body[i] = (uint8_t)(((uint64_t)sent + i) % 251);
        cr_assert_eq(xprt_link_send(cli.link, DATA_TY, body, RECSZ), 0);
        sent++;
    }
    cr_assert(run_until(base, &srv.err, 10000), "receiver never failed");
    cr_assert(r.damaged, "the relay never reached record %d", MUT_AT);
    /* Detected, named, nothing damaged delivered, nothing after it. */
    cr_assert_eq(srv.err, -COLO_ESTREAM_CORRUPT, "%s: %s",
                 colo_strerror(srv.err), srv.why);
    cr_assert_not_null(strstr(srv.why, "integrity"), "%s", srv.why);
    cr_assert_eq(srv.bad, 0, "a damaged or out-of-order record was delivered");
    cr_assert_lt(srv.nrec, NREC, "records after the damage were delivered");
    /* The receiver dropped the link; the sender sees the pair end. */
    xprt_link_free(srv.link);
    cr_assert(run_until(base, &cli.err, 10000), "sender never saw the end");
    xprt_link_free(cli.link);
    xprt_listener_free(srv.ls);
    pthread_join(r.th, NULL);
    close(r.lfd);
}

Test(tls, mitm_bit_flip_detected)
{
    mitm(FLIP);
}

Test(tls, mitm_dropped_record_detected)
{
    mitm(DROP);
}

Test(tls, mitm_replayed_record_detected)
{
    mitm(REPLAY);
}

/* ---------------------------------------------------------------------- */
/* x509 credentials, made with the openssl CLI at test time                 */

static char cdir[64];

/* good/: a CA, a server pair (SAN IP:127.0.0.1), a client pair.
 * selfsigned/: good/ but the client's certificate signs itself.
 * expired/: good/ but the server's certificate expired yesterday.
 * otherca/: good/ but the server's pair comes from another CA. */
static const char mkcerts[] =
    "set -e; cd \"$1\"; exec >gen.log 2>&1\n"
    "k() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "-keyout \"$1\" -out \"$2\" -subj \"/CN=$3\"; }\n"
    "ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
    "-nodes -keyout \"$1\" -out \"$2\" -days 2 -subj \"/CN=$3\"; }\n"
    "n=1; sign() { n=$((n + 1)); openssl x509 -req -in \"$1\" -CA \"$2\" "
    "-CAkey \"$3\" -set_serial $n -out \"$4\" -days \"$5\" -extfile ext; }\n"
    "printf 'subjectAltName=IP:127.0.0.1\\n' >ext\n"
    "ca ca-key.pem ca-cert.pem colo-test-ca\n"
    "ca other-key.pem other-cert.pem another-ca\n"
    "k server-key.pem server.csr 127.0.0.1\n"
    "k client-key.pem client.csr client\n"
    "sign server.csr ca-cert.pem ca-key.pem server-cert.pem 2\n"
    "sign client.csr ca-cert.pem ca-key.pem client-cert.pem 2\n"
    "for d in good selfsigned expired otherca; do mkdir $d; cp ca-cert.pem "
    "server-*.pem client-*.pem $d/; done\n"
    "openssl req -x509 -key client-key.pem -out selfsigned/client-cert.pem "
    "-days 2 -subj /CN=client\n"
    "sign server.csr ca-cert.pem ca-key.pem expired/server-cert.pem -1\n"
    "sign server.csr other-cert.pem other-key.pem otherca/server-cert.pem 2\n"
    "chmod 600 */*-key.pem\n";

static void certs_setup(void)
{
    char cmd[sizeof(mkcerts) + 200];

    /* (the suite's setup has run: base exists) */
    if (system("openssl version >/dev/null 2>&1") != 0)
        cr_skip_test("the openssl command is missing (scripts/setup)");
    strcpy(cdir, "/tmp/colo-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(cdir));
    /* The script goes in through the environment: no quoting games. */
    setenv("COLO_MKCERTS", mkcerts, 1);
    snprintf(cmd, sizeof(cmd), "sh -c \"$COLO_MKCERTS\" sh %s", cdir);
    cr_assert_eq(system(cmd), 0, "making certificates failed (see %s/gen.log)",
                 cdir);
}

static void certs_teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", cdir);
    if (cdir[0])
        (void)!system(cmd);
}

static void cfg_x509(struct xprt_link_cfg *c, char *buf, size_t sz,
                     const char *sub)
{
    xprt_link_cfg_init(c);
    snprintf(buf, sz, "%s/%s", cdir, sub);
    c->tls_creds = buf;
    c->name = "x509";
}

/* Connect a client with credentials cli_sub to a server with srv_sub. */
static void x509_pair(const char *srv_sub, const char *cli_sub,
                      struct side *srv, struct side *cli)
{
    struct xprt_link_cfg sc, cc;
    char sb[128], cb[128];

    cfg_x509(&sc, sb, sizeof(sb), srv_sub);
    cfg_x509(&cc, cb, sizeof(cb), cli_sub);
    cr_assert_eq(
        xprt_listener_new(base, "127.0.0.1", 0, &sc, s_accept, srv, &srv->ls),
        0);
    cr_assert_eq(xprt_link_connect(base, "127.0.0.1",
                                   xprt_listener_port(srv->ls), &cc, &side_cbs,
                                   cli, &cli->link),
                 0);
}

Test(tls, x509_good_pair_carries_records, .init = certs_setup,
     .fini = certs_teardown)
{
    struct side srv = {0}, cli = {0};
    uint8_t body[RECSZ];

    x509_pair("good", "good", &srv, &cli);
    cr_assert(run_until(base, &cli.up, 10000), "%s", cli.why);
    cr_assert(run_until(base, &srv.up, 10000));
    colo_put_le64(body, 0);
    for (uint32_t i = 8; i < RECSZ; i++)
        body[i] = (uint8_t)(i % 251);
    cr_assert_eq(xprt_link_send(cli.link, DATA_TY, body, RECSZ), 0);
    cr_assert(run_until(base, (const int *)&srv.nrec, 10000));
    cr_assert_eq(srv.bad, 0);
    xprt_link_free(cli.link);
    xprt_link_free(srv.link);
    xprt_listener_free(srv.ls);
}

Test(tls, x509_expired_server_cert_is_refused_and_named, .init = certs_setup,
     .fini = certs_teardown)
{
    struct side srv = {0}, cli = {0};

    x509_pair("expired", "good", &srv, &cli);
    expect_refused(&srv, &cli);
    cr_assert_not_null(strstr(cli.why, "expired"), "%s", cli.why);
    xprt_link_free(cli.link);
    xprt_listener_free(srv.ls);
}

Test(tls, x509_server_cert_of_another_ca_is_refused_and_named,
     .init = certs_setup, .fini = certs_teardown)
{
    struct side srv = {0}, cli = {0};

    x509_pair("otherca", "good", &srv, &cli);
    expect_refused(&srv, &cli);
    cr_assert_not_null(strstr(cli.why, "not signed by our ca-cert.pem"), "%s",
                       cli.why);
    xprt_link_free(cli.link);
    xprt_listener_free(srv.ls);
}

/* TLS 1.3: the client sends its certificate with its Finished, so it is
 * briefly UP before the server's verdict (an alert) arrives; the server
 * never hands the link out. */
Test(tls, x509_unsigned_client_cert_is_refused_and_named, .init = certs_setup,
     .fini = certs_teardown)
{
    struct side srv = {0}, cli = {0};

    x509_pair("good", "selfsigned", &srv, &cli);
    cr_assert(run_until(base, &srv.rejected, 10000), "server never refused");
    cr_assert_eq(srv.rejected, -COLO_EAUTH);
    cr_assert_eq(srv.link, NULL);
    cr_assert(run_until(base, &cli.err, 10000), "client never failed");
    cr_assert_eq(cli.err, -COLO_EAUTH, "%s: %s", colo_strerror(cli.err),
                 cli.why);
    cr_assert_not_null(strstr(cli.why, "refused our certificate"), "%s",
                       cli.why);
    xprt_link_free(cli.link);
    xprt_listener_free(srv.ls);
}

Test(tls, x509_and_psk_do_not_mix, .init = certs_setup, .fini = certs_teardown)
{
    struct xprt_link_cfg sc, cc;
    struct side srv = {0}, cli = {0};
    char sb[128];

    cfg_x509(&sc, sb, sizeof(sb), "good");
    cfg_key(&cc, key_a);
    cr_assert_eq(
        xprt_listener_new(base, "127.0.0.1", 0, &sc, s_accept, &srv, &srv.ls),
        0);
    cr_assert_eq(xprt_link_connect(base, "127.0.0.1",
                                   xprt_listener_port(srv.ls), &cc, &side_cbs,
                                   &cli, &cli.link),
                 0);
    expect_refused(&srv, &cli);
    cr_assert_not_null(strstr(cli.why, "x509"), "%s", cli.why);
    xprt_link_free(cli.link);
    xprt_listener_free(srv.ls);
}

Test(tls, readable_tls_key_is_refused_and_named, .init = certs_setup,
     .fini = certs_teardown)
{
    struct xprt_link_cfg c;
    char b[128], key[160], why[512];

    cfg_x509(&c, b, sizeof(b), "good");
    cr_assert_eq(xprt_link_cfg_check(&c, why, sizeof(why)), 0, "%s", why);
    snprintf(key, sizeof(key), "%s/server-key.pem", b);
    cr_assert_eq(chmod(key, 0644), 0);
    cr_assert_eq(xprt_link_cfg_check(&c, why, sizeof(why)), -COLO_ECONFIG);
    cr_assert_not_null(strstr(why, key), "%s", why);
    cr_assert_not_null(strstr(why, "chmod 600"), "%s", why);
}

/* ---------------------------------------------------------------------- */
/* Lending a TLS link's fd (the Xen path: libxenguest writes and reads an  */
/* fd in a helper process)                                                  */

struct lent {
    int done, rc, fd;
};

static void on_lent(struct xprt_link *l, int rc, int fd, struct colo_buf *left,
                    void *arg)
{
    struct lent *d = arg;

    (void)l;
    (void)left;
    d->rc = rc;
    d->fd = fd;
    d->done = 1;
}

#define LEND_BYTES (8u << 20)

static uint8_t lend_byte(size_t i)
{
    return (uint8_t)((i * 2654435761u) >> 11);
}

/* The "helper" on the sending side: writes LEND_BYTES in odd-sized
 * pieces, then closes its end, as xc_domain_save's stream ends. */
static void *lend_writer(void *arg)
{
    int fd = *(int *)arg;
    static uint8_t buf[70001];
    size_t off = 0;

    while (off < LEND_BYTES) {
        size_t n =
            LEND_BYTES - off < sizeof(buf) ? LEND_BYTES - off : sizeof(buf);

        for (size_t i = 0; i < n; i++)
            buf[i] = lend_byte(off + i);
        if (colo_write_all(fd, buf, n) < 0)
            break;
        off += n;
    }
    shutdown(fd, SHUT_WR);
    return NULL;
}

/* Both sides lend their fd; what one helper writes, the other reads byte
 * for byte, then EOF when the writer's end closes. */
Test(tls, lent_fd_carries_bytes_identically_through_tls)
{
    struct xprt_link_cfg cfg;
    struct side srv = {0}, cli = {0};
    struct lent ls = {0}, lr = {0};
    static uint8_t buf[65536];
    size_t got = 0, bad = 0;
    pthread_t th;
    ssize_t n;

    cfg_key(&cfg, key_a);
    listen_on(&srv, &cfg);
    cr_assert_eq(xprt_link_connect(base, "127.0.0.1",
                                   xprt_listener_port(srv.ls), &cfg, &side_cbs,
                                   &cli, &cli.link),
                 0);
    cr_assert(run_until(base, &cli.up, 10000), "%s", cli.why);
    cr_assert(run_until(base, &srv.up, 10000));
    cr_assert_eq(xprt_link_detach_start(cli.link, on_lent, &ls), 0);
    cr_assert_eq(xprt_link_detach_start(srv.link, on_lent, &lr), 0);
    cr_assert(run_until(base, &ls.done, 10000));
    cr_assert(run_until(base, &lr.done, 10000));
    cr_assert_eq(ls.rc, 0);
    cr_assert_eq(lr.rc, 0);
    cr_assert_eq(pthread_create(&th, NULL, lend_writer, &ls.fd), 0);
    colo_fd_set_timeouts(lr.fd, 20000, 0);
    while ((n = read(lr.fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != lend_byte(got + (size_t)i))
                bad++;
        got += (size_t)n;
    }
    pthread_join(th, NULL);
    cr_assert_eq(n, 0, "the reader saw %s, not EOF",
                 n < 0 ? strerror(errno) : "data");
    cr_assert_eq(got, LEND_BYTES);
    cr_assert_eq(bad, 0, "%zu bytes differ", bad);
    xprt_link_free(cli.link);
    xprt_link_free(srv.link);
    xprt_listener_free(srv.ls);
}
