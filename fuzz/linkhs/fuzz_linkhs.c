/*
 * Fuzz the link handshake as a peer would drive it: the input's first byte
 * picks this side's role and protection (accepting or connecting; TLS with
 * the key's PSK, or plain), the rest is what the peer sends, written into
 * the other end of a socketpair, then EOF. Covers the link HELLO parser,
 * the mode check, the switch to TLS and OpenSSL's TLS 1.3 handshake with
 * colo's PSK callbacks (find/use session), and the error explanations.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "transport/link.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char key[] = "a fuzzing key of enough length";

struct st {
    int done;
};

static void up(struct xprt_link *l, void *arg)
{
    (void)l;
    ((struct st *)arg)->done = 1;
}

static void err(struct xprt_link *l, int rc, void *arg)
{
    (void)l;
    (void)rc;
    ((struct st *)arg)->done = 1;
}

static void rec(struct xprt_link *l, const struct xprt_item *it, void *arg)
{
    (void)l;
    (void)it;
    (void)arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct xprt_link_cbs cbs = {
        .up = up, .record = rec, .error = err};
    struct event_base *base;
    struct xprt_link_cfg cfg;
    struct xprt_link *l = NULL;
    struct st s = {0};
    int sp[2];

    if (size < 1 || size > 65536)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        return 0;
    base = event_base_new();
    xprt_link_cfg_init(&cfg);
    if (data[0] & 2) {
        cfg.plain = true;
    } else {
        cfg.key = (const uint8_t *)key;
        cfg.key_len = sizeof(key) - 1;
    }
    cfg.heartbeat_ms = UINT32_MAX;
    cfg.name = "fuzz";
    if (xprt_link_new_from_fd(base, sp[0], data[0] & 1, &cfg, &cbs, &s, &l) <
        0) {
        close(sp[1]);
        event_base_free(base);
        return 0;
    }
    (void)!send(sp[1], data + 1, size - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(sp[1], SHUT_WR);
    for (int i = 0; i < 64 && !s.done; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    xprt_link_free(l);
    close(sp[1]);
    event_base_free(base);
    return 0;
}
