/*
 * bench-transport: bytes/s of colo's link (record writer -> record reader
 * over loopback TCP, with and without authentication) against a raw
 * write()/read() loop moving the same bytes, in the same run. The receiver
 * is a separate process in both cases. Best of ROUNDS for each.
 *
 * Last line: {"bench":"transport", ..., "ratio": colo_auth / raw}.
 * Usage: bench-transport [MiB per run, default 1024]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/timeutil.h"
#include "transport/link.h"

#define CHUNK  (1u << 20)
#define ROUNDS 5

static const uint8_t key[32] = "bench-transport-key-0123456789ab";

struct rx {
    uint64_t want, got;
    int done;
    int err;
    struct xprt_link *link;
};

static void rx_record(struct xprt_link *l, const struct xprt_item *it,
                      void *arg)
{
    struct rx *r = arg;

    (void)l;
    if (it->kind != XPRT_ITEM_RECORD)
        return;
    r->got += it->length;
    if (r->got >= r->want)
        r->done = 1;
}

static void rx_error(struct xprt_link *l, int rc, void *arg)
{
    struct rx *r = arg;

    (void)l;
    r->err = rc;
    r->done = 1;
}

static const struct xprt_link_cbs rx_cbs = {.record = rx_record,
                                            .error = rx_error};

static void rx_accept(struct xprt_listener *ls, struct xprt_link *l, int rc,
                      void *arg)
{
    struct rx *r = arg;

    (void)ls;
    if (rc < 0) {
        r->err = rc;
        r->done = 1;
        return;
    }
    r->link = l;
    xprt_link_set_cbs(l, &rx_cbs, r);
}

static void cfg_for(struct xprt_link_cfg *c, bool plain)
{
    xprt_link_cfg_init(c);
    c->plain = plain;
    if (!plain) {
        c->key = key;
        c->key_len = sizeof(key);
    }
    c->name = "bench";
}

/* Child: colo receiver. Writes its port, then "done" + bytes. */
static void colo_receiver(bool plain, uint64_t total, int out)
{
    struct event_base *b = event_base_new();
    struct xprt_link_cfg cfg;
    struct xprt_listener *ls;
    struct rx r = {.want = total};
    uint16_t port;

    cfg_for(&cfg, plain);
    if (xprt_listener_new(b, "127.0.0.1", 0, &cfg, rx_accept, &r, &ls) < 0)
        _exit(1);
    port = xprt_listener_port(ls);
    (void)!write(out, &port, sizeof(port));
    while (!r.done)
        event_base_loop(b, EVLOOP_ONCE);
    (void)!write(out, &r.got, sizeof(r.got));
    _exit(0);
}

/* Child: raw receiver. */
static void raw_receiver(int lfd, uint64_t total, int out)
{
    uint8_t *buf = malloc(CHUNK);
    uint64_t got = 0;
    int fd = accept(lfd, NULL, NULL);

    while (fd >= 0 && got < total) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n <= 0)
            break;
        got += (uint64_t)n;
    }
    (void)!write(out, &got, sizeof(got));
    _exit(0);
}

struct tx {
    int up, err, writable;
};

static void tx_up(struct xprt_link *l, void *arg)
{
    (void)l;
    ((struct tx *)arg)->up = 1;
}

static void tx_writable(struct xprt_link *l, void *arg)
{
    (void)l;
    ((struct tx *)arg)->writable = 1;
}

static void tx_error(struct xprt_link *l, int rc, void *arg)
{
    (void)l;
    ((struct tx *)arg)->err = rc;
}

static const struct xprt_link_cbs tx_cbs = {
    .up = tx_up, .writable = tx_writable, .error = tx_error};

static void sent_noop(void *arg)
{
    (void)arg;
}

/* Returns bytes/s, or < 0. borrowed: xprt_link_sendv_borrowed (the data
 * buffer outlives the run), else the copying xprt_link_send. */
static double run_colo(bool plain, bool borrowed, uint64_t total,
                       const uint8_t *data)
{
    int p[2];
    pid_t pid;
    uint16_t port;
    uint64_t got = 0, sent = 0, t0, t1;
    struct event_base *b;
    struct xprt_link_cfg cfg;
    struct xprt_link *l;
    struct tx t = {0};

    if (pipe(p) < 0)
        return -1;
    pid = fork();
    if (pid == 0)
        colo_receiver(plain, total, p[1]);
    if (colo_read_all(p[0], &port, sizeof(port)) < 0)
        return -1;
    b = event_base_new();
    cfg_for(&cfg, plain);
    if (xprt_link_connect(b, "127.0.0.1", port, &cfg, &tx_cbs, &t, &l) < 0)
        return -1;
    while (!t.up && !t.err)
        event_base_loop(b, EVLOOP_ONCE);
    t0 = colo_now_ns();
    while (sent < total && !t.err) {
        while (sent < total && xprt_link_may_write(l)) {
            struct iovec iov = {(void *)data, CHUNK};

            if (borrowed)
                xprt_link_sendv_borrowed(l, 0x80C08001u, &iov, 1, sent_noop,
                                         NULL);
            else
                xprt_link_send(l, 0x80C08001u, data, CHUNK);
            sent += CHUNK;
        }
        t.writable = 0;
        while (sent < total && !t.writable && !t.err)
            event_base_loop(b, EVLOOP_ONCE);
    }
    while (xprt_link_output_len(l) && !t.err)
        event_base_loop(b, EVLOOP_ONCE);
    if (colo_read_all(p[0], &got, sizeof(got)) < 0)
        got = 0;
    t1 = colo_now_ns();
    xprt_link_free(l);
    event_base_free(b);
    waitpid(pid, NULL, 0);
    close(p[0]);
    close(p[1]);
    if (got != total || t.err)
        return -1;
    return (double)total / ((double)(t1 - t0) / 1e9);
}

static double run_raw(uint64_t total, const uint8_t *data)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t sl = sizeof(a);
    int p[2], lfd, fd, one = 1;
    pid_t pid;
    uint64_t got = 0, sent = 0, t0, t1;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(lfd, 1) < 0 || getsockname(lfd, (struct sockaddr *)&a, &sl))
        return -1;
    if (pipe(p) < 0)
        return -1;
    pid = fork();
    if (pid == 0)
        raw_receiver(lfd, total, p[1]);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    t0 = colo_now_ns();
    while (sent < total) {
        if (colo_write_all(fd, data, CHUNK) < 0)
            break;
        sent += CHUNK;
    }
    if (colo_read_all(p[0], &got, sizeof(got)) < 0)
        got = 0;
    t1 = colo_now_ns();
    close(fd);
    close(lfd);
    waitpid(pid, NULL, 0);
    close(p[0]);
    close(p[1]);
    if (got != total)
        return -1;
    return (double)total / ((double)(t1 - t0) / 1e9);
}

int main(int argc, char **argv)
{
    uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 1024;
    uint64_t total = mib << 20;
    uint8_t *data = malloc(CHUNK);
    double raw = 0, colo = 0, plain = 0, copy = 0;

    signal(SIGPIPE, SIG_IGN);
    if (!data || !mib)
        return 1;
    for (size_t i = 0; i < CHUNK; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    for (int r = 0; r < ROUNDS; r++) {
        double x;

        x = getenv("BENCH_COLO_ONLY") ? 1 : run_raw(total, data);
        if (x > raw)
            raw = x;
        x = run_colo(false, true, total, data);
        if (x > colo)
            colo = x;
        x = run_colo(false, false, total, data);
        if (x > copy)
            copy = x;
        x = run_colo(true, true, total, data);
        if (x > plain)
            plain = x;
        fprintf(stderr,
                "round %d: raw %.0f MB/s, colo TLS %.0f MB/s (copying "
                "send %.0f), colo plain %.0f MB/s\n",
                r, raw / 1e6, colo / 1e6, copy / 1e6, plain / 1e6);
    }
    if (raw <= 0 || colo <= 0 || plain <= 0 || copy <= 0) {
        printf("{\"bench\":\"transport\",\"error\":\"a run failed\"}\n");
        return 1;
    }
    printf("raw write/read loop : %8.1f MB/s\n", raw / 1e6);
    printf("colo link, TLS      : %8.1f MB/s (borrowed bodies)\n", colo / 1e6);
    printf("colo link, TLS      : %8.1f MB/s (copying send)\n", copy / 1e6);
    printf("colo link, plain    : %8.1f MB/s (borrowed bodies, --insecure)\n",
           plain / 1e6);
    /* ratio = ratio_tls: the link as users run it (TLS 1.3, AES-128-GCM)
     * against raw loopback TCP in the same run. */
    printf("{\"bench\":\"transport\",\"mib\":%llu,\"raw_Bps\":%.0f,"
           "\"colo_tls_Bps\":%.0f,\"colo_tls_copy_Bps\":%.0f,"
           "\"colo_plain_Bps\":%.0f,\"ratio_copy\":%.3f,"
           "\"ratio_plain\":%.3f,\"ratio_tls\":%.3f,\"ratio\":%.3f}\n",
           (unsigned long long)mib, raw, colo, copy, plain, copy / raw,
           plain / raw, colo / raw, colo / raw);
    free(data);
    return 0;
}
