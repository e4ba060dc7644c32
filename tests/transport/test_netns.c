/*
 * Two hosts for real: two network namespaces joined by a veth pair
 * (10.199.<n>.1/30 and .2/30, no route out), a receiver process in one and
 * a sender process in the other (fork + setns). Checks a bulk transfer
 * arrives intact (SHA-256 on both ends; 1 GiB, 256 MiB under sanitizers), a
 * wrong key is rejected on both sides, and `ip link set down` raises the
 * missed-heartbeat event on both sides within interval x misses + margin.
 *
 * Needs root and a working `ip netns`; prints SKIP otherwise. The
 * namespaces are deleted in the fixture's teardown, whatever happens.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/error.h"
#include "common/fd.h"
#include "transport/link.h"
#include "peer.h"
#include "tnet.h"

#if defined(__SANITIZE_ADDRESS__)
#define BULK_BYTES (256ull << 20)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BULK_BYTES (256ull << 20)
#endif
#endif
#ifndef BULK_BYTES
#define BULK_BYTES (1ull << 30)
#endif

#define CHUNK (1u << 20)
#define PORT  7411

static struct tnet N;
static char ns_why[160]; /* why there are no namespaces; "" when there are */
static pid_t kids[2];
static int nkids;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    nkids = 0;
    ns_why[0] = '\0';
    tnet_setup(&N, "xp", 199, ns_why, sizeof(ns_why));
}

static void teardown(void)
{
    for (int i = 0; i < nkids; i++) {
        kill(kids[i], SIGKILL);
        waitpid(kids[i], NULL, 0);
    }
    tnet_del(&N);
}

/* Skips the calling case (cr_skip_test does not return) without
 * namespaces; false otherwise. */
static bool skip_if_no_ns(void)
{
    if (ns_why[0])
        cr_skip_test("%s", ns_why);
    return false;
}

static int enter_ns(const char *ns)
{
    char path[128];
    int fd, rc;

    snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    rc = setns(fd, CLONE_NEWNET) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

struct result {
    int rc; /* link error seen (or setup failure) */
    int up;
    uint64_t bytes;
    uint64_t err_at_ns;
    uint8_t sha[32];
};

struct role {
    const uint8_t *key;
    uint32_t hb_ms, misses;
    uint64_t bulk; /* sender: bytes to send; 0 = stay idle */
};

static void cfg_for(struct xprt_link_cfg *c, const struct role *r)
{
    test_cfg(c, r->key);
    c->heartbeat_ms = r->hb_ms;
    c->heartbeat_misses = r->misses;
    c->name = "netns";
}

struct rx {
    struct peer p;
    int accepted;
    int rejected;
};

static void rx_accept(struct xprt_listener *ls, struct xprt_link *l, int rc,
                      void *arg)
{
    struct rx *x = arg;

    (void)ls;
    if (rc < 0) {
        x->rejected = rc;
        x->p.err = rc;
        x->p.err_at_ns = colo_now_ns();
        return;
    }
    x->accepted = 1;
    x->p.link = l;
    xprt_link_set_cbs(l, &peer_cbs, &x->p);
}

/* Child: receiver in N.ns_b. Reports through fd. Never returns. */
static void receiver(const struct role *r, int out, int ready)
{
    struct event_base *b;
    struct xprt_link_cfg cfg;
    struct xprt_listener *ls = NULL;
    struct rx x;
    struct result res = {0};
    unsigned int len = 32;

    memset(&x, 0, sizeof(x));
    if ((res.rc = enter_ns(N.ns_b)) < 0)
        goto done;
    b = event_base_new();
    cfg_for(&cfg, r);
    x.p.md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(x.p.md, EVP_sha256(), NULL);
    res.rc = xprt_listener_new(b, N.addr_b, PORT, &cfg, rx_accept, &x, &ls);
    (void)!write(ready, "r", 1);
    if (res.rc < 0)
        goto done;
    run_until(b, &x.p.err, 60000);
    res.rc = x.p.err;
    res.up = x.accepted;
    res.bytes = x.p.nbytes;
    res.err_at_ns = x.p.err_at_ns;
    EVP_DigestFinal_ex(x.p.md, res.sha, &len);
done:
    (void)!write(out, &res, sizeof(res));
    _exit(0);
}

/* Child: sender in N.ns_a. */
static void sender(const struct role *r, int out)
{
    struct event_base *b;
    struct xprt_link_cfg cfg;
    struct peer p;
    struct result res = {0};
    uint8_t *chunk;
    uint64_t sent = 0, ctr = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int len = 32;

    memset(&p, 0, sizeof(p));
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    if ((res.rc = enter_ns(N.ns_a)) < 0)
        goto done;
    b = event_base_new();
    cfg_for(&cfg, r);
    chunk = malloc(CHUNK);
    for (size_t i = 0; i < CHUNK; i++)
        chunk[i] = (uint8_t)(i * 2654435761u >> 13);
    res.rc = xprt_link_connect(b, N.addr_b, PORT, &cfg, &peer_cbs, &p, &p.link);
    if (res.rc < 0)
        goto done;
    for (int i = 0; i < 500 && !p.up && !p.err; i++)
        run_until(b, &p.up, 20);
    res.up = p.up;
    if (!p.up) {
        res.rc = p.err;
        res.err_at_ns = p.err_at_ns;
        goto done;
    }
    while (sent < r->bulk && !p.err) {
        while (sent < r->bulk && xprt_link_may_write(p.link)) {
            memcpy(chunk, &ctr, sizeof(ctr)); /* every chunk differs */
            ctr++;
            EVP_DigestUpdate(md, chunk, CHUNK);
            if (xprt_link_send(p.link, 0x80C08001u, chunk, CHUNK) < 0)
                break;
            sent += CHUNK;
        }
        p.writable = 0;
        if (sent < r->bulk)
            run_until(b, &p.writable, 10000);
    }
    if (r->bulk) {
        /* Drain, then close: the receiver sees PEER_CLOSED after all. */
        for (int i = 0; i < 10000 && xprt_link_output_len(p.link) && !p.err;
             i++) {
            int never = 0;
            run_until(b, &never, 1);
        }
        res.rc = p.err;
        xprt_link_free(p.link);
    } else {
        run_until(b, &p.err, 60000);
        res.rc = p.err;
        res.err_at_ns = p.err_at_ns;
    }
    res.bytes = sent;
done:
    EVP_DigestFinal_ex(md, res.sha, &len);
    (void)!write(out, &res, sizeof(res));
    _exit(0);
}

static void start(const struct role *rr, const struct role *sr, int rx_out[2],
                  int tx_out[2])
{
    int ready[2];
    char c;
    pid_t pid;

    cr_assert(pipe(rx_out) == 0 && pipe(tx_out) == 0 && pipe(ready) == 0);
    pid = fork();
    if (pid == 0)
        receiver(rr, rx_out[1], ready[1]); /* no cr_assert in children */
    cr_assert(pid > 0);
    kids[nkids++] = pid;
    cr_assert_eq(read(ready[0], &c, 1), 1);
    pid = fork();
    if (pid == 0)
        sender(sr, tx_out[1]);
    cr_assert(pid > 0);
    kids[nkids++] = pid;
    close(ready[0]);
    close(ready[1]);
}

static void collect(int fds[2], struct result *res)
{
    cr_assert_eq(colo_read_all(fds[0], res, sizeof(*res)), 0);
    close(fds[0]);
    close(fds[1]);
}

TestSuite(netns, .init = setup, .fini = teardown, .timeout = 180);

Test(netns, bulk_transfer_intact)
{
    struct role rr = {test_key, 1000, 5, 0},
                sr = {test_key, 1000, 5, BULK_BYTES};
    struct result rx, tx;
    int a[2], b[2];
    uint64_t t0 = colo_now_ns();

    if (skip_if_no_ns())
        return;
    start(&rr, &sr, a, b);
    collect(b, &tx);
    collect(a, &rx);
    cr_assert_eq(tx.rc, 0, "sender: %s", colo_strerror(tx.rc));
    cr_assert_eq(tx.bytes, BULK_BYTES);
    cr_assert_eq(rx.rc, -COLO_EPEER_CLOSED, "receiver: %s",
                 colo_strerror(rx.rc));
    cr_assert_eq(rx.bytes, BULK_BYTES, "received %llu of %llu",
                 (unsigned long long)rx.bytes, (unsigned long long)BULK_BYTES);
    cr_assert(!memcmp(rx.sha, tx.sha, 32), "SHA-256 differs");
    printf("netns: %llu MiB in %.2f s\n",
           (unsigned long long)(BULK_BYTES >> 20),
           (double)(colo_now_ns() - t0) / 1e9);
}

Test(netns, wrong_key_rejected)
{
    struct role rr = {test_key, 1000, 3, 0}, sr = {wrong_key, 1000, 3, 1};
    struct result rx, tx;
    int a[2], b[2];

    if (skip_if_no_ns())
        return;
    start(&rr, &sr, a, b);
    collect(b, &tx);
    collect(a, &rx);
    cr_assert_eq(tx.up, 0);
    cr_assert_eq(tx.rc, -COLO_EAUTH, "sender: %s", colo_strerror(tx.rc));
    cr_assert_eq(rx.up, 0, "receiver handed out a link");
    cr_assert_eq(rx.rc, -COLO_EAUTH, "receiver: %s", colo_strerror(rx.rc));
    cr_assert_eq(rx.bytes, 0);
}

Test(netns, link_down_raises_peer_gone)
{
    const uint32_t iv = 200, misses = 3;
    struct role rr = {test_key, iv, misses, 0}, sr = {test_key, iv, misses, 0};
    struct result rx, tx;
    int a[2], b[2];
    uint64_t t0;
    int never = 0;
    struct event_base *wait = event_base_new();

    if (skip_if_no_ns()) {
        event_base_free(wait);
        return;
    }
    start(&rr, &sr, a, b);
    /* Let the link come up and idle with heartbeats for a while. */
    run_until(wait, &never, iv * misses * 2);
    event_base_free(wait);
    t0 = colo_now_ns();
    cr_assert_eq(tnet_sh("ip -n %s link set %s down", N.ns_a, N.if_a), 0);
    collect(b, &tx);
    collect(a, &rx);
    cr_assert_eq(tx.up, 1);
    cr_assert_eq(rx.up, 1);
    cr_assert_eq(tx.rc, -COLO_EPEER_GONE, "sender: %s", colo_strerror(tx.rc));
    cr_assert_eq(rx.rc, -COLO_EPEER_GONE, "receiver: %s", colo_strerror(rx.rc));
    for (int i = 0; i < 2; i++) {
        uint64_t at = i ? rx.err_at_ns : tx.err_at_ns;
        uint64_t ms = (at - t0) / 1000000u;

        cr_assert_gt(at, t0, "event before the link went down");
        cr_assert_leq(ms, iv * misses + iv / 4 + 400, "%s took %llu ms",
                      i ? "receiver" : "sender", (unsigned long long)ms);
    }
}

/* SYNs into a downed link are lost: the connect deadline fires. */
Test(netns, connect_timeout_when_link_down)
{
    struct xprt_link_cfg cfg;
    struct peer c;
    struct event_base *b;
    uint64_t t0;
    int fd, rc;

    if (skip_if_no_ns())
        return;
    cr_assert_eq(tnet_sh("ip -n %s link set %s down", N.ns_b, N.if_b), 0);
    /* Connect from N.ns_a in this (test) process: switch back afterwards. */
    fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    cr_assert(fd >= 0);
    cr_assert_eq(enter_ns(N.ns_a), 0);
    b = event_base_new();
    test_cfg(&cfg, test_key);
    cfg.connect_timeout_ms = 300;
    memset(&c, 0, sizeof(c));
    t0 = colo_now_ns();
    rc = xprt_link_connect(b, N.addr_b, PORT, &cfg, &peer_cbs, &c, &c.link);
    if (rc == 0)
        run_until(b, &c.err, 5000);
    cr_assert_eq(setns(fd, CLONE_NEWNET), 0);
    close(fd);
    cr_assert_eq(rc, 0, "%s", colo_strerror(rc));
    cr_assert_eq(c.err, -ETIMEDOUT, "%s", colo_strerror(c.err));
    cr_assert_lt((colo_now_ns() - t0) / 1000000u, 2000);
    xprt_link_free(c.link);
    event_base_free(b);
}
