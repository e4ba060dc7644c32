/* Output commit through per-epoch QEMU filter-buffers (outbuf.h). */
#include "checkpoint/outbuf.h"

#include "checkpoint/ckpt.h"
#include "common/error.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "engine_util.h"
#include "qmp/qmp.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCAP_HDR   24
#define PCAP_REC   17 /* 16-byte record header + maxlen=1 byte */
#define POLL_MS    10
#define MAX_EPOCHS 64 /* epochs held at once (one per unacked checkpoint) */

struct epoch {
    uint64_t k;
    bool dump_live;  /* its filter-dump still exists */
    bool buf_live;   /* its filter-buffer still exists */
    uint64_t frozen; /* packets, once the dump is gone */
    /* (time, packets so far) each time a poll saw the count grow */
    uint64_t *s_ns, *s_cnt;
    size_t n_samples, cap_samples;
};

struct ckpt_outbuf {
    struct event_base *base;
    struct qmp_client *c;
    char *dir;
    char **nd;
    size_t n_nd;
    unsigned early_at, timeout_ms;
    void (*want)(void *arg);
    void (*failed)(void *arg, int rc);
    bool failed_sent;
    void *arg;
    struct event *poll;
    struct epoch ep[MAX_EPOCHS]; /* oldest first */
    size_t n_ep;
    bool early_sent; /* for the newest epoch */
    /* 1 for the owner + 1 per QMP command in flight (their destroy
     * notifiers drop it), so a late reply never sees a freed object. */
    unsigned refs;
    bool dead;
    struct ckpt_window delays;
    struct ckpt_outbuf_stats st;
};

static void pcap_path(const struct ckpt_outbuf *o, size_t i, uint64_t k,
                      char *out, size_t sz)
{
    snprintf(out, sz, "%s/out-%s-%llu.pcap", o->dir, o->nd[i],
             (unsigned long long)k);
}

static uint64_t pcap_count(const char *path)
{
    struct stat sb;

    if (stat(path, &sb) < 0 || sb.st_size <= PCAP_HDR)
        return 0;
    return (uint64_t)(sb.st_size - PCAP_HDR) / PCAP_REC;
}

/* Packets of epoch e over every netdev (per netdev capped at QEMU's
 * limit when cap is set: what the buffers actually hold). */
static uint64_t epoch_count(const struct ckpt_outbuf *o, const struct epoch *e,
                            bool cap)
{
    char p[4096];
    uint64_t n = 0;

    for (size_t i = 0; i < o->n_nd; i++) {
        uint64_t c;

        pcap_path(o, i, e->k, p, sizeof(p));
        c = pcap_count(p);
        n += cap && c > CKPT_OUTBUF_QEMU_CAP ? CKPT_OUTBUF_QEMU_CAP : c;
    }
    return n;
}

static void outbuf_destroy(struct ckpt_outbuf *o);

static void unref(void *arg)
{
    struct ckpt_outbuf *o = arg;

    if (--o->refs == 0)
        outbuf_destroy(o);
}

static void reply_cb(struct qmp_client *c, int rc, json_t *ret,
                     const char *desc, void *arg)
{
    struct ckpt_outbuf *o = arg;

    (void)c;
    (void)ret;
    if (o->dead)
        return;
    if (rc < 0) {
        o->st.errors++;
        colo_err("output commit: QEMU refused a filter command: %s%s%s",
                 colo_strerror(rc), desc ? ": " : "", desc ? desc : "");
        if (!o->failed_sent && o->failed) {
            o->failed_sent = true;
            o->failed(o->arg, rc);
        }
    }
}

static int send_cmd(struct ckpt_outbuf *o, const char *cmd, json_t *args)
{
    int rc;

    if (!args)
        return -ENOMEM;
    rc = qmp_send_ex(o->c, cmd, args, -1, o->timeout_ms, reply_cb, o, unref,
                     NULL);
    json_decref(args);
    if (rc >= 0)
        o->refs++;
    if (rc < 0) {
        o->st.errors++;
        colo_err("output commit: cannot send %s: %s", cmd, colo_strerror(rc));
    }
    return rc;
}

static int del_object(struct ckpt_outbuf *o, const char *kind, size_t i,
                      uint64_t k)
{
    char id[200];

    snprintf(id, sizeof(id), "colo-%s-%s-%llu", kind, o->nd[i],
             (unsigned long long)k);
    return send_cmd(o, "object-del", json_pack("{s:s}", "id", id));
}

/* Hold times of epoch e's packets: each packet's arrival is taken as the
 * first poll (every POLL_MS) that saw the dump file grow past it, so a
 * hold time is exact to POLL_MS. (The pcap records' own timestamps are not
 * the host's wall clock: they ran ~10 s ahead of CLOCK_REALTIME here and
 * drifted.) Then the epoch's files go. */
static void account_release(struct ckpt_outbuf *o, struct epoch *e)
{
    uint64_t now = colo_now_ns(), prev = 0, total = 0;
    char p[4096];

    for (size_t s = 0; s < e->n_samples; s++) {
        uint64_t d = (now - e->s_ns[s]) / 1000;

        if (e->s_cnt[s] <= prev)
            continue;
        if (d > o->st.delay_max_us)
            o->st.delay_max_us = d;
        for (; prev < e->s_cnt[s]; prev++)
            ckpt_window_add(&o->delays, d);
    }
    for (size_t i = 0; i < o->n_nd; i++) {
        uint64_t n;

        pcap_path(o, i, e->k, p, sizeof(p));
        n = pcap_count(p);
        if (n > CKPT_OUTBUF_QEMU_CAP) {
            o->st.dropped += n - CKPT_OUTBUF_QEMU_CAP;
            colo_err("output commit: epoch %llu of %s had %llu packets; QEMU "
                     "dropped the %llu over its %d cap",
                     (unsigned long long)e->k, o->nd[i], (unsigned long long)n,
                     (unsigned long long)(n - CKPT_OUTBUF_QEMU_CAP),
                     CKPT_OUTBUF_QEMU_CAP);
            n = CKPT_OUTBUF_QEMU_CAP;
        }
        total += n;
        unlink(p);
    }
    o->st.released += total;
    free(e->s_ns);
    free(e->s_cnt);
    e->s_ns = NULL;
    e->s_cnt = NULL;
    e->n_samples = e->cap_samples = 0;
}

/* Note the open epoch's packet count now (arrival times). */
static void sample(struct ckpt_outbuf *o, struct epoch *e)
{
    uint64_t c = epoch_count(o, e, true);

    if (e->n_samples && e->s_cnt[e->n_samples - 1] >= c)
        return;
    if (e->n_samples == e->cap_samples) {
        size_t cap = e->cap_samples ? e->cap_samples * 2 : 64;
        uint64_t *a = realloc(e->s_ns, cap * sizeof(*a));
        uint64_t *b = a ? realloc(e->s_cnt, cap * sizeof(*b)) : NULL;

        if (a)
            e->s_ns = a;
        if (!a || !b)
            return; /* out of memory: coarser hold times */
        e->s_cnt = b;
        e->cap_samples = cap;
    }
    e->s_ns[e->n_samples] = colo_now_ns();
    e->s_cnt[e->n_samples++] = c;
}

/* Release the oldest held epoch (its buffer, and its dump if live). */
static void release_oldest(struct ckpt_outbuf *o)
{
    struct epoch *e = &o->ep[0];

    for (size_t i = 0; i < o->n_nd; i++) {
        if (e->buf_live)
            del_object(o, "ob", i, e->k);
        if (e->dump_live)
            del_object(o, "od", i, e->k);
    }
    if (e->dump_live)
        sample(o, e);
    account_release(o, e);
    memmove(&o->ep[0], &o->ep[1], (o->n_ep - 1) * sizeof(o->ep[0]));
    o->n_ep--;
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_outbuf *o = arg;

    (void)fd;
    (void)what;
    if (o->n_ep == 0)
        return;
    sample(o, &o->ep[o->n_ep - 1]);
    if (o->early_sent)
        return;
    if (epoch_count(o, &o->ep[o->n_ep - 1], false) >= o->early_at) {
        o->early_sent = true;
        o->st.early++;
        colo_info("output commit: %u packets held in epoch %llu: early "
                  "checkpoint",
                  o->early_at, (unsigned long long)o->ep[o->n_ep - 1].k);
        if (o->want)
            o->want(o->arg);
    }
}

int ckpt_outbuf_new(struct event_base *base, struct qmp_client *c,
                    const struct ckpt_outbuf_opts *opts,
                    struct ckpt_outbuf **ret)
{
    struct ckpt_outbuf *o;

    *ret = NULL;
    if (!c || !opts->dir || opts->n_netdevs == 0)
        return -EINVAL;
    o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    o->refs = 1;
    o->base = base;
    o->c = c;
    o->early_at = opts->early_at ? opts->early_at : 5000;
    if (o->early_at > CKPT_OUTBUF_QEMU_CAP)
        o->early_at = CKPT_OUTBUF_QEMU_CAP;
    o->timeout_ms = opts->qmp_timeout_ms ? opts->qmp_timeout_ms : 5000;
    o->want = opts->want_checkpoint;
    o->failed = opts->failed;
    o->arg = opts->arg;
    o->dir = strdup(opts->dir);
    o->nd = calloc(opts->n_netdevs, sizeof(*o->nd));
    o->poll = event_new(base, -1, EV_PERSIST, poll_cb, o);
    if (!o->dir || !o->nd || !o->poll)
        goto oom;
    o->n_nd = opts->n_netdevs;
    for (size_t i = 0; i < o->n_nd; i++)
        if (!(o->nd[i] = strdup(opts->netdevs[i])))
            goto oom;
    *ret = o;
    return 0;
oom:
    ckpt_outbuf_free(o);
    return -ENOMEM;
}

int ckpt_outbuf_epoch(struct ckpt_outbuf *o, uint64_t k)
{
    struct epoch *prev = o->n_ep ? &o->ep[o->n_ep - 1] : NULL;
    struct timeval tv = colo_ms_to_tv(POLL_MS);
    char path[4096], dump[200], buf[200], pos[210];
    int rc = 0;

    if (prev && prev->k >= k)
        return -EINVAL;
    if (o->n_ep == MAX_EPOCHS) {
        /* Cannot happen with one unacked checkpoint at a time. */
        colo_err("output commit: %d epochs held: releasing the oldest",
                 MAX_EPOCHS);
        release_oldest(o);
        prev = &o->ep[o->n_ep - 1];
    }
    for (size_t i = 0; i < o->n_nd && rc >= 0; i++) {
        pcap_path(o, i, k, path, sizeof(path));
        unlink(path);
        snprintf(dump, sizeof(dump), "colo-od-%s-%llu", o->nd[i],
                 (unsigned long long)k);
        snprintf(buf, sizeof(buf), "colo-ob-%s-%llu", o->nd[i],
                 (unsigned long long)k);
        snprintf(pos, sizeof(pos), "id=%s", dump);
        rc = send_cmd(o, "object-add",
                      json_pack("{s:s,s:s,s:s,s:s,s:i}", "qom-type",
                                "filter-dump", "id", dump, "netdev", o->nd[i],
                                "file", path, "maxlen", 1));
        if (rc >= 0)
            rc = send_cmd(o, "object-add",
                          json_pack("{s:s,s:s,s:s,s:s,s:I,s:s,s:s}", "qom-type",
                                    "filter-buffer", "id", buf, "netdev",
                                    o->nd[i], "queue", "rx", "interval",
                                    (json_int_t)4294967295LL, "insert",
                                    "before", "position", pos));
        if (rc >= 0 && prev && prev->dump_live)
            rc = del_object(o, "od", i, prev->k);
    }
    /* Recorded even when a command could not be sent: what was added must
     * be deleted by the release_all that follows the failure (deleting
     * objects that never came only adds errors). */
    if (prev && prev->dump_live && rc >= 0) {
        sample(o, prev); /* the guest is paused: its epoch is complete */
        prev->dump_live = false;
        prev->frozen = epoch_count(o, prev, true);
    }
    memset(&o->ep[o->n_ep], 0, sizeof(o->ep[0]));
    o->ep[o->n_ep].k = k;
    o->ep[o->n_ep].dump_live = true;
    o->ep[o->n_ep].buf_live = true;
    o->n_ep++;
    o->early_sent = false;
    evtimer_add(o->poll, &tv);
    return rc < 0 ? rc : 0;
}

void ckpt_outbuf_commit(struct ckpt_outbuf *o, uint64_t k)
{
    while (o->n_ep && o->ep[0].k < k)
        release_oldest(o);
}

void ckpt_outbuf_release_all(struct ckpt_outbuf *o)
{
    if (!o)
        return;
    while (o->n_ep)
        release_oldest(o);
    event_del(o->poll);
}

void ckpt_outbuf_get_stats(const struct ckpt_outbuf *o,
                           struct ckpt_outbuf_stats *ret)
{
    *ret = o->st;
    ret->held = 0;
    for (size_t i = 0; i < o->n_ep; i++)
        ret->held += o->ep[i].dump_live ? epoch_count(o, &o->ep[i], true)
                                        : o->ep[i].frozen;
    ret->epochs_held = (unsigned)o->n_ep;
    ret->delay_p50_us = ckpt_window_pct(&o->delays, 50);
    ret->delay_p99_us = ckpt_window_pct(&o->delays, 99);
}

void ckpt_outbuf_free(struct ckpt_outbuf *o)
{
    char p[4096];

    if (!o)
        return;
    o->dead = true;
    if (o->poll)
        event_del(o->poll);
    for (size_t e = 0; e < o->n_ep; e++) {
        for (size_t i = 0; i < o->n_nd; i++) {
            pcap_path(o, i, o->ep[e].k, p, sizeof(p));
            unlink(p);
        }
        free(o->ep[e].s_ns);
        free(o->ep[e].s_cnt);
    }
    o->n_ep = 0;
    unref(o);
}

static void outbuf_destroy(struct ckpt_outbuf *o)
{
    if (o->poll)
        event_free(o->poll);
    for (size_t i = 0; o->nd && i < o->n_nd; i++)
        free(o->nd[i]);
    free(o->nd);
    free(o->dir);
    free(o);
}
