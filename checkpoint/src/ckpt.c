/* Names, parsing and the digest shared by both engines. */
#include "checkpoint/ckpt.h"

#include "common/buf.h"
#include "engine_util.h"
#include "transport/link.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

const char *ckpt_mode_name(enum ckpt_mode m)
{
    switch (m) {
    case CKPT_MODE_MIGRATE:
        return "migrate";
    case CKPT_MODE_REMUS:
        return "remus";
    case CKPT_MODE_COLO:
        return "colo";
    }
    return "unknown";
}

int ckpt_mode_parse(const char *s, enum ckpt_mode *ret)
{
    static const enum ckpt_mode all[] = {CKPT_MODE_MIGRATE, CKPT_MODE_REMUS,
                                         CKPT_MODE_COLO};

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (s && strcmp(s, ckpt_mode_name(all[i])) == 0) {
            *ret = all[i];
            return 0;
        }
    }
    return -EINVAL;
}

const char *ckpt_role_name(enum ckpt_role r)
{
    return r == CKPT_ROLE_PRIMARY ? "primary" : "secondary";
}

const char *ckpt_event_name(enum ckpt_event_type t)
{
    switch (t) {
    case CKPT_EV_PAIRED:
        return "paired";
    case CKPT_EV_ROUND:
        return "round";
    case CKPT_EV_CHECKPOINT:
        return "checkpoint";
    case CKPT_EV_UNPROTECTED:
        return "unprotected";
    case CKPT_EV_PRIMARY_LOST:
        return "primary-lost";
    case CKPT_EV_TAKEOVER:
        return "takeover";
    }
    return "unknown";
}

static uint64_t fnv_words(uint64_t h, const uint8_t *p, size_t len)
{
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t w;

        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

uint64_t ckpt_digest(const uint8_t *ram, size_t ram_len, const uint8_t *dev,
                     size_t dev_len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    h = fnv_words(h, ram, ram_len);
    h = (h ^ dev_len) * 0x100000001b3ull;
    return fnv_words(h, dev, dev_len);
}

/* ------------------------------------------------------------------ */
/* Engine helpers (engine_util.h)                                       */

void ckpt_window_add(struct ckpt_window *w, uint64_t v)
{
    w->v[w->n % CKPT_STATS_WINDOW] = v;
    w->n++;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

uint64_t ckpt_window_pct(const struct ckpt_window *w, unsigned p)
{
    uint64_t tmp[CKPT_STATS_WINDOW];
    size_t n = w->n < CKPT_STATS_WINDOW ? (size_t)w->n : CKPT_STATS_WINDOW;
    size_t idx;

    if (!n)
        return 0;
    memcpy(tmp, w->v, n * sizeof(tmp[0]));
    qsort(tmp, n, sizeof(tmp[0]), cmp_u64);
    idx = (n * p + 99) / 100;
    if (idx)
        idx--;
    if (idx >= n)
        idx = n - 1;
    return tmp[idx];
}

void ckpt_link_cfg(const struct ckpt_link_opts *o, const char *name,
                   struct xprt_link_cfg *cfg)
{
    unsigned hb = o->heartbeat_ms ? o->heartbeat_ms : 200;
    unsigned to = o->timeout_ms ? o->timeout_ms : 1000;

    xprt_link_cfg_init(cfg);
    if (o->tls_creds) {
        cfg->tls_creds = o->tls_creds;
    } else if (o->auth_key && o->auth_key[0]) {
        cfg->key = (const uint8_t *)o->auth_key;
        cfg->key_len = strlen(o->auth_key);
    } else {
        cfg->plain = true;
    }
    cfg->heartbeat_ms = hb;
    cfg->heartbeat_misses = (to + hb - 1) / hb;
    if (!cfg->heartbeat_misses)
        cfg->heartbeat_misses = 1;
    cfg->name = name;
}

/* Setting a link up blocks each loop for a while where nothing can send
 * heartbeats: the secondary launches QEMU and pre-faults its RAM mapping,
 * the first checkpoint scans and copies all of RAM (about 1 s per GiB
 * here). Until the first checkpoint is through, a peer is gone only after
 * CKPT_SETUP_TIMEOUT_MS of silence; the hello/ack/io deadlines still
 * bound every step. */
void ckpt_link_cfg_setup(const struct ckpt_link_opts *o, const char *name,
                         struct xprt_link_cfg *cfg)
{
    unsigned to = o->timeout_ms ? o->timeout_ms : 1000;

    ckpt_link_cfg(o, name, cfg);
    /* A loaded host (a nested Xen dom0 under TCG: seen at 5+ s) is slow
     * to answer the handshake too. */
    cfg->handshake_timeout_ms = CKPT_SETUP_TIMEOUT_MS / 2;
    if (to < CKPT_SETUP_TIMEOUT_MS)
        cfg->heartbeat_misses =
            (CKPT_SETUP_TIMEOUT_MS + cfg->heartbeat_ms - 1) / cfg->heartbeat_ms;
}

void ckpt_link_steady(struct xprt_link *l, const struct ckpt_link_opts *o)
{
    struct xprt_link_cfg cfg;

    ckpt_link_cfg(o, NULL, &cfg);
    xprt_link_set_heartbeat(l, cfg.heartbeat_ms, cfg.heartbeat_misses);
}

void ckpt_tcp_nodelay(int fd)
{
    int one = 1;

    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
