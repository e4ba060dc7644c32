/*
 * Test fixtures for links: a recording peer and a bounded loop runner.
 * Header-only, shared by the transport tests.
 */
#ifndef COLO_TESTS_TRANSPORT_PEER_H
#define COLO_TESTS_TRANSPORT_PEER_H

#include <event2/event.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/timeutil.h"
#include "transport/link.h"

#include "tloop.h"

struct peer {
    struct xprt_link *link;
    int up;
    int err;      /* rc given to the error callback, 0 if none */
    int writable; /* writable callbacks */
    uint64_t nrec;
    uint64_t nbytes;
    uint32_t last_type;
    uint8_t last_body[256];
    uint32_t last_len;
    EVP_MD_CTX *md; /* optional running SHA-256 of record bodies */
    uint64_t err_at_ns;
    int free_on_error;
};

static inline void peer_up(struct xprt_link *l, void *arg)
{
    struct peer *p = arg;

    (void)l;
    p->up++;
}

static inline void peer_record(struct xprt_link *l, const struct xprt_item *it,
                               void *arg)
{
    struct peer *p = arg;

    (void)l;
    if (it->kind != XPRT_ITEM_RECORD)
        return;
    p->nrec++;
    p->nbytes += it->length;
    p->last_type = it->type;
    p->last_len = it->length;
    memcpy(p->last_body, it->body,
           it->length < sizeof(p->last_body) ? it->length
                                             : sizeof(p->last_body));
    if (p->md)
        EVP_DigestUpdate(p->md, it->body, it->length);
}

static inline void peer_writable(struct xprt_link *l, void *arg)
{
    struct peer *p = arg;

    (void)l;
    p->writable++;
}

static inline void peer_error(struct xprt_link *l, int rc, void *arg)
{
    struct peer *p = arg;

    p->err = rc;
    p->err_at_ns = colo_now_ns();
    if (p->free_on_error) {
        /* The contract allows freeing inside the callback. */
        xprt_link_free(l);
        p->link = NULL;
    }
}

static const struct xprt_link_cbs peer_cbs = {
    .up = peer_up,
    .record = peer_record,
    .writable = peer_writable,
    .error = peer_error,
};

/* Run the loop until *flag becomes nonzero or timeout_ms passes. Returns
 * the flag's value (0 on timeout). */
static inline int run_until(struct event_base *base, const int *flag,
                            uint32_t timeout_ms)
{
    tloop_until_int(base, flag, timeout_ms);
    return *flag;
}

static const uint8_t test_key[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t wrong_key[32] = "0123456789abcdef0123456789abcdeX";

/* Waits for a link to come up: a TLS handshake (an ECDHE key exchange)
 * takes seconds under valgrind on a loaded 2-core machine. The waits end
 * as soon as the link is up. */
#define HS_WAIT_MS 30000

static inline void test_cfg(struct xprt_link_cfg *c, const uint8_t *key)
{
    xprt_link_cfg_init(c);
    c->key = key;
    c->key_len = 32;
    c->handshake_timeout_ms = HS_WAIT_MS;
    c->name = "test";
}

#endif
