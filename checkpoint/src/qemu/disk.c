/*
 * Disk replication by epoch: the primary's write tee and the secondary's
 * stage (checkpoint/disk.h).
 */
#include "checkpoint/disk.h"

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "qmp/qmp.h"
#include "transport/nbd.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define QMP_TIMEOUT_MS 10000u

/* ------------------------------------------------------------------ */
/* Epochs: the writes collected, in arrival order                      */

struct epoch {
    struct ckpt_disk_wr *w;
    size_t n, cap;
    uint64_t bytes;
};

static void epoch_clear(struct epoch *e)
{
    for (size_t i = 0; i < e->n; i++)
        free((void *)e->w[i].data);
    e->n = 0;
    e->bytes = 0;
}

static void epoch_dispose(struct epoch *e)
{
    epoch_clear(e);
    free(e->w);
    memset(e, 0, sizeof(*e));
}

static int epoch_add(struct epoch *e, uint32_t disk, uint32_t flags,
                     uint64_t off, const uint8_t *data, uint32_t len)
{
    uint8_t *copy = NULL;

    if (e->n == e->cap) {
        size_t nc = e->cap ? e->cap * 2 : 64;
        struct ckpt_disk_wr *nw = realloc(e->w, nc * sizeof(*nw));

        if (!nw)
            return -ENOMEM;
        e->w = nw;
        e->cap = nc;
    }
    if (data) {
        copy = malloc(len);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, data, len);
        e->bytes += len;
    }
    e->w[e->n++] = (struct ckpt_disk_wr){
        .disk = disk,
        .flags = flags,
        .offset = off,
        .length = len,
        .data = copy,
    };
    return 0;
}

/* ------------------------------------------------------------------ */
/* The tee                                                              */

struct tee_disk {
    char *id;
    char *path;
    int fd; /* read-only, for the full sync */
    uint64_t size;
};

struct tee_conn {
    struct ckpt_disk_tee *t;
    struct bufferevent *bev;
    struct xprt_nbd_conn *nbd;
    struct colo_buf out;
    struct tee_conn *next;
};

struct ckpt_disk_tee {
    struct event_base *evb;
    struct tee_disk d[XPRT_DISK_MAX];
    size_t n;
    struct xprt_nbd_export ex[XPRT_DISK_MAX];
    char sock_path[108];
    struct evconnlistener *lst;
    struct tee_conn *conns;
    bool attached;
    bool throttled;
    unsigned gen; /* node-name generation */

    struct epoch open, sealed;
    bool have_sealed;
    uint64_t total_writes;

    ckpt_disk_full_fn *full_cb;
    void *full_arg;
    struct event *full_ev;
    bool full_asked;

    /* Attach in progress. */
    struct qmp_client *q;
    size_t att_idx;
    int att_step; /* 0 blockdev-add, 1 x-blockdev-change */
    ckpt_disk_done_fn *att_cb;
    void *att_arg;
    struct event *att_ev;
    int att_rc;
    uint64_t att_cmd;
    bool att_pending;

    bool test_corrupt; /* ckpt_disk_tee_test_corrupt */

    /* Full sync cursor. */
    size_t sync_disk;
    uint64_t sync_off;
    uint64_t sync_done;
};

static void conn_free(struct tee_conn *c)
{
    struct tee_conn **pp;

    for (pp = &c->t->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    if (c->bev)
        bufferevent_free(c->bev);
    xprt_nbd_conn_free(c->nbd);
    colo_buf_dispose(&c->out);
    free(c);
}

static void close_conns(struct ckpt_disk_tee *t)
{
    while (t->conns)
        conn_free(t->conns);
}

static void over_soft_cap(struct ckpt_disk_tee *t)
{
    if (t->open.bytes >= CKPT_DISK_EPOCH_SOFT && t->full_cb && !t->full_asked) {
        t->full_asked = true;
        event_active(t->full_ev, 0, 0);
    }
}

static int nbd_write(void *arg, unsigned idx, uint64_t off, const uint8_t *data,
                     uint32_t len, uint16_t flags)
{
    struct tee_conn *c = arg;
    struct ckpt_disk_tee *t = c->t;
    int rc;

    if (!t->attached)
        return -ESHUTDOWN;
    /* A write of up to 32 MiB becomes records of at most 4 MiB. */
    while (len) {
        uint32_t k = len < XPRT_DISK_WRITE_MAX ? len : XPRT_DISK_WRITE_MAX;

        rc = epoch_add(&t->open, idx, 0, off, data, k);
        if (rc < 0)
            return rc;
        off += k;
        data += k;
        len -= k;
    }
    t->total_writes++;
    over_soft_cap(t);
    return 0;
}

static int nbd_zeroes(void *arg, unsigned idx, uint64_t off, uint32_t len,
                      uint16_t flags)
{
    struct tee_conn *c = arg;
    struct ckpt_disk_tee *t = c->t;

    if (!t->attached)
        return -ESHUTDOWN;
    t->total_writes++;
    return epoch_add(&t->open, idx, XPRT_DISK_WRITE_ZEROES, off, NULL, len);
}

static int nbd_flush(void *arg, unsigned idx)
{
    /* Durable on the secondary at commit; nothing to do now. */
    return 0;
}

static const struct xprt_nbd_cbs nbd_cbs = {
    .write = nbd_write,
    .write_zeroes = nbd_zeroes,
    .flush = nbd_flush,
    .read = NULL, /* quorum reads children.0 (fifo); a read here: EIO */
};

static void conn_flush_out(struct tee_conn *c)
{
    if (c->out.len) {
        bufferevent_write(c->bev, c->out.data, c->out.len);
        colo_buf_reset(&c->out);
    }
}

static void conn_read(struct bufferevent *bev, void *arg)
{
    struct tee_conn *c = arg;
    struct ckpt_disk_tee *t = c->t;
    struct evbuffer *in = bufferevent_get_input(bev);
    uint8_t buf[65536];
    int rc = 0;

    while (rc == 0 && evbuffer_get_length(in)) {
        int k = evbuffer_remove(in, buf, sizeof(buf));

        if (k <= 0)
            break;
        rc = xprt_nbd_conn_feed(c->nbd, buf, (size_t)k);
    }
    conn_flush_out(c);
    if (rc != 0) {
        if (rc < 0)
            colo_warn("disk tee: NBD client error: %s", colo_strerror(rc));
        conn_free(c);
        return;
    }
    if (t->open.bytes >= CKPT_DISK_EPOCH_HARD && !t->throttled) {
        colo_warn("disk tee: %llu bytes in the open epoch: guest writes "
                  "wait for the next checkpoint",
                  (unsigned long long)t->open.bytes);
        t->throttled = true;
        for (struct tee_conn *x = t->conns; x; x = x->next)
            bufferevent_disable(x->bev, EV_READ);
    }
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    struct tee_conn *c = arg;

    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        colo_debug("disk tee: NBD client left");
        conn_free(c);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int slen, void *arg)
{
    struct ckpt_disk_tee *t = arg;
    struct tee_conn *c = calloc(1, sizeof(*c));

    if (!c) {
        close(fd);
        return;
    }
    c->t = t;
    colo_buf_init(&c->out, 0);
    c->bev = bufferevent_socket_new(t->evb, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        close(fd);
        free(c);
        return;
    }
    c->next = t->conns;
    t->conns = c;
    if (xprt_nbd_conn_new(t->ex, t->n, &nbd_cbs, c, &c->out, &c->nbd) < 0) {
        conn_free(c);
        return;
    }
    bufferevent_setcb(c->bev, conn_read, NULL, conn_event, c);
    if (t->throttled)
        bufferevent_disable(c->bev, EV_READ);
    else
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    conn_flush_out(c);
}

static void full_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_disk_tee *t = arg;

    if (t->full_cb)
        t->full_cb(t->full_arg);
}

static void att_finish_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ckpt_disk_tee *t = arg;
    ckpt_disk_done_fn *cb = t->att_cb;

    t->att_cb = NULL;
    if (cb)
        cb(t->att_arg, t->att_rc);
}

static void att_finish(struct ckpt_disk_tee *t, int rc)
{
    t->att_pending = false;
    t->att_rc = rc;
    if (rc == 0) {
        t->attached = true;
        epoch_clear(&t->open);
        t->full_asked = false;
    } else {
        ckpt_disk_tee_detach(t, t->q);
    }
    event_active(t->att_ev, 0, 0);
}

static void node_name(const struct ckpt_disk_tee *t, size_t i, char *out,
                      size_t sz)
{
    snprintf(out, sz, "colo-tee%u-%zu", t->gen, i);
}

static void att_next(struct ckpt_disk_tee *t);

static void att_reply(struct qmp_client *q, int rc, json_t *ret,
                      const char *desc, void *arg)
{
    struct ckpt_disk_tee *t = arg;

    t->att_cmd = 0;
    if (rc < 0) {
        colo_err("disk tee: %s of disk %s failed: %s",
                 t->att_step ? "x-blockdev-change" : "blockdev-add",
                 t->d[t->att_idx].id, desc ? desc : colo_strerror(rc));
        att_finish(t, rc);
        return;
    }
    if (t->att_step == 0) {
        t->att_step = 1;
    } else {
        t->att_step = 0;
        t->att_idx++;
    }
    att_next(t);
}

static void att_next(struct ckpt_disk_tee *t)
{
    char node[64];
    json_t *a;
    int rc;

    if (t->att_idx == t->n) {
        att_finish(t, 0);
        return;
    }
    node_name(t, t->att_idx, node, sizeof(node));
    if (t->att_step == 0)
        a = json_pack("{s:s, s:s, s:s, s:{s:s, s:s}}", "driver", "nbd",
                      "node-name", node, "export", t->d[t->att_idx].id,
                      "server", "type", "unix", "path", t->sock_path);
    else
        a = json_pack("{s:s, s:s}", "parent", t->d[t->att_idx].id, "node",
                      node);
    if (!a) {
        att_finish(t, -ENOMEM);
        return;
    }
    rc = qmp_send(t->q, t->att_step ? "x-blockdev-change" : "blockdev-add", a,
                  -1, QMP_TIMEOUT_MS, att_reply, t, &t->att_cmd);
    json_decref(a);
    if (rc < 0)
        att_finish(t, rc);
}

int ckpt_disk_tee_attach(struct ckpt_disk_tee *t, struct qmp_client *q,
                         ckpt_disk_done_fn *cb, void *arg)
{
    if (!q)
        return -EINVAL;
    if (t->att_pending || t->att_cb || t->attached)
        return -EBUSY;
    t->gen++;
    t->q = q;
    t->att_idx = 0;
    t->att_step = 0;
    t->att_cb = cb;
    t->att_arg = arg;
    t->att_pending = true;
    t->throttled = false;
    epoch_clear(&t->open);
    epoch_clear(&t->sealed);
    t->have_sealed = false;
    att_next(t);
    return 0;
}

static void detach_reply(struct qmp_client *q, int rc, json_t *ret,
                         const char *desc, void *arg)
{
    if (rc < 0)
        colo_debug("disk tee: detach step failed: %s",
                   desc ? desc : colo_strerror(rc));
}

void ckpt_disk_tee_detach(struct ckpt_disk_tee *t, struct qmp_client *q)
{
    bool was = t->attached || t->att_pending;

    if (t->att_pending) {
        /* The attach ends with -ECANCELED (from the loop). */
        if (t->att_cmd && t->q)
            qmp_cancel(t->q, t->att_cmd);
        t->att_pending = false;
        t->att_rc = -ECANCELED;
        event_active(t->att_ev, 0, 0);
    }
    t->att_cmd = 0;
    t->attached = false;
    t->throttled = false;
    close_conns(t);
    epoch_clear(&t->open);
    epoch_clear(&t->sealed);
    t->have_sealed = false;
    if (!was || !q || qmp_client_state(q) == QMP_DISCONNECTED)
        return;
    /* In the background; guest I/O goes on (the child already fails). A
     * disk whose child was never added just gets errors here (logged at
     * debug). */
    for (size_t i = 0; i < t->n; i++) {
        char node[64];
        json_t *a;

        node_name(t, i, node, sizeof(node));
        a = json_pack("{s:s, s:s}", "parent", t->d[i].id, "child",
                      "children.1");
        if (a) {
            qmp_send(q, "x-blockdev-change", a, -1, QMP_TIMEOUT_MS,
                     detach_reply, NULL, NULL);
            json_decref(a);
        }
        a = json_pack("{s:s}", "node-name", node);
        if (a) {
            qmp_send(q, "blockdev-del", a, -1, QMP_TIMEOUT_MS, detach_reply,
                     NULL, NULL);
            json_decref(a);
        }
    }
}

void ckpt_disk_tee_abandon(struct ckpt_disk_tee *t)
{
    t->att_cb = NULL;
    event_del(t->att_ev);
}

bool ckpt_disk_tee_attached(const struct ckpt_disk_tee *t)
{
    return t->attached;
}

int ckpt_disk_tee_cut(struct ckpt_disk_tee *t)
{
    struct epoch tmp;

    if (t->have_sealed)
        return -EBUSY;
    tmp = t->sealed;
    t->sealed = t->open;
    t->open = tmp;
    t->have_sealed = true;
    t->full_asked = false;
    if (t->throttled) {
        t->throttled = false;
        for (struct tee_conn *x = t->conns; x; x = x->next)
            bufferevent_enable(x->bev, EV_READ);
    }
    return 0;
}

size_t ckpt_disk_tee_sealed_count(const struct ckpt_disk_tee *t)
{
    return t->have_sealed ? t->sealed.n : 0;
}

void ckpt_disk_tee_sealed(const struct ckpt_disk_tee *t, size_t i,
                          struct ckpt_disk_wr *ret)
{
    *ret = t->sealed.w[i];
    if (t->test_corrupt && i + 1 == t->sealed.n) {
        /* Test hook: the last write of the epoch points past the end. */
        ret->offset = t->d[ret->disk].size;
    }
}

void ckpt_disk_tee_test_corrupt(struct ckpt_disk_tee *t)
{
    t->test_corrupt = true;
}

void ckpt_disk_tee_release(struct ckpt_disk_tee *t)
{
    epoch_clear(&t->sealed);
    t->have_sealed = false;
}

void ckpt_disk_tee_unthrottle(struct ckpt_disk_tee *t)
{
    if (!t->throttled)
        return;
    t->throttled = false;
    for (struct tee_conn *x = t->conns; x; x = x->next)
        bufferevent_enable(x->bev, EV_READ);
}

uint64_t ckpt_disk_tee_open_bytes(const struct ckpt_disk_tee *t)
{
    return t->open.bytes;
}

uint64_t ckpt_disk_tee_total_writes(const struct ckpt_disk_tee *t)
{
    return t->total_writes;
}

size_t ckpt_disk_tee_count(const struct ckpt_disk_tee *t)
{
    return t->n;
}

int ckpt_disk_tee_info(const struct ckpt_disk_tee *t, size_t i,
                       struct xprt_disk_info *ret)
{
    if (i >= t->n)
        return -EINVAL;
    memset(ret, 0, sizeof(*ret));
    ret->disk = (uint32_t)i;
    ret->size = t->d[i].size;
    snprintf(ret->id, sizeof(ret->id), "%s", t->d[i].id);
    return 0;
}

void ckpt_disk_tee_sync_reset(struct ckpt_disk_tee *t)
{
    t->sync_disk = 0;
    t->sync_off = 0;
    t->sync_done = 0;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    return !n || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}

int ckpt_disk_tee_sync_next(struct ckpt_disk_tee *t, uint8_t *buf,
                            struct ckpt_disk_wr *ret)
{
    /* At most 16 chunks of zeroes per call: the loop stays responsive. */
    for (int budget = 16; budget > 0 && t->sync_disk < t->n;) {
        struct tee_disk *d = &t->d[t->sync_disk];
        uint64_t off = t->sync_off;
        off_t data;
        size_t k;
        ssize_t r;

        if (off >= d->size) {
            t->sync_disk++;
            t->sync_off = 0;
            continue;
        }
        data = lseek(d->fd, (off_t)off, SEEK_DATA);
        if (data < 0 && errno == ENXIO) {
            /* A hole up to the end. */
            t->sync_done += d->size - off;
            t->sync_off = d->size;
            continue;
        }
        if (data >= 0 && (uint64_t)data > off) {
            uint64_t skip = (uint64_t)data - off;

            if (skip > d->size - off)
                skip = d->size - off;
            t->sync_done += skip;
            off += skip;
            t->sync_off = off;
            if (off >= d->size)
                continue;
        }
        k = CKPT_DISK_SYNC_CHUNK;
        if (k > d->size - off)
            k = (size_t)(d->size - off);
        r = pread(d->fd, buf, k, (off_t)off);
        if (r < 0)
            return -errno;
        if (r == 0) {
            /* The file is shorter than it was: the rest reads as zero. */
            t->sync_done += d->size - off;
            t->sync_off = d->size;
            continue;
        }
        t->sync_off = off + (uint64_t)r;
        t->sync_done += (uint64_t)r;
        if (all_zero(buf, (size_t)r)) {
            budget--;
            continue;
        }
        *ret = (struct ckpt_disk_wr){
            .disk = (uint32_t)t->sync_disk,
            .offset = off,
            .length = (uint32_t)r,
            .data = buf,
        };
        return 1;
    }
    return t->sync_disk < t->n ? 2 : 0;
}

void ckpt_disk_tee_sync_progress(const struct ckpt_disk_tee *t, uint64_t *done,
                                 uint64_t *total)
{
    uint64_t s = 0;

    for (size_t i = 0; i < t->n; i++)
        s += t->d[i].size;
    *done = t->sync_done;
    *total = s;
}

int ckpt_disk_tee_new(struct event_base *base, const struct ckpt_disk_cfg *d,
                      size_t n, const char *sock_dir, ckpt_disk_full_fn *fcb,
                      void *arg, struct ckpt_disk_tee **ret)
{
    static unsigned seq;
    struct ckpt_disk_tee *t;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = -1, rc;

    *ret = NULL;
    if (!n || n > XPRT_DISK_MAX || !sock_dir)
        return -EINVAL;
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->evb = base;
    t->full_cb = fcb;
    t->full_arg = arg;
    for (size_t i = 0; i < n; i++)
        t->d[i].fd = -1;
    t->n = n;
    for (size_t i = 0; i < n; i++) {
        struct stat st;

        if (!d[i].id || !d[i].path || strlen(d[i].id) > XPRT_DISK_ID_MAX ||
            !d[i].id[0]) {
            rc = -EINVAL;
            goto fail;
        }
        t->d[i].id = strdup(d[i].id);
        t->d[i].path = strdup(d[i].path);
        if (!t->d[i].id || !t->d[i].path) {
            rc = -ENOMEM;
            goto fail;
        }
        t->d[i].fd = open(d[i].path, O_RDONLY | O_CLOEXEC);
        if (t->d[i].fd < 0 || fstat(t->d[i].fd, &st) < 0) {
            rc = -errno;
            colo_err("disk %s: cannot open %s: %s", d[i].id, d[i].path,
                     strerror(errno));
            goto fail;
        }
        t->d[i].size = (uint64_t)st.st_size;
        t->ex[i].name = t->d[i].id;
        t->ex[i].size = t->d[i].size;
    }
    rc = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/colo-tee-%d-%u.sock",
                  sock_dir, (int)getpid(), seq++);
    if (rc < 0 || (size_t)rc >= sizeof(sa.sun_path)) {
        rc = -ENAMETOOLONG;
        goto fail;
    }
    snprintf(t->sock_path, sizeof(t->sock_path), "%s", sa.sun_path);
    unlink(t->sock_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 16) < 0) {
        rc = -errno;
        colo_err("disk tee: cannot listen on %s: %s", t->sock_path,
                 strerror(errno));
        colo_close(&fd);
        goto fail;
    }
    t->lst =
        evconnlistener_new(base, on_accept, t, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (!t->lst) {
        colo_close(&fd);
        rc = -ENOMEM;
        goto fail;
    }
    t->full_ev = event_new(base, -1, 0, full_cb, t);
    t->att_ev = event_new(base, -1, 0, att_finish_cb, t);
    if (!t->full_ev || !t->att_ev) {
        rc = -ENOMEM;
        goto fail;
    }
    *ret = t;
    return 0;
fail:
    ckpt_disk_tee_free(t);
    return rc;
}

void ckpt_disk_tee_free(struct ckpt_disk_tee *t)
{
    if (!t)
        return;
    if (t->att_pending && t->att_cmd && t->q)
        qmp_cancel(t->q, t->att_cmd);
    close_conns(t);
    if (t->lst) {
        evconnlistener_free(t->lst);
        unlink(t->sock_path);
    }
    if (t->full_ev)
        event_free(t->full_ev);
    if (t->att_ev)
        event_free(t->att_ev);
    epoch_dispose(&t->open);
    epoch_dispose(&t->sealed);
    for (size_t i = 0; i < t->n; i++) {
        free(t->d[i].id);
        free(t->d[i].path);
        colo_close(&t->d[i].fd);
    }
    free(t);
}

/* ------------------------------------------------------------------ */
/* The stage (secondary)                                                */

struct stage_disk {
    char *id;
    char *path;
    int fd;
    uint64_t size;
    bool announced; /* DISK_INFO seen on this link */
};

struct ckpt_disk_stage {
    struct stage_disk d[XPRT_DISK_MAX];
    size_t n;
    struct epoch staged;
};

int ckpt_disk_stage_new(const struct ckpt_disk_cfg *d, size_t n,
                        struct ckpt_disk_stage **ret)
{
    struct ckpt_disk_stage *s;

    *ret = NULL;
    if (!n || n > XPRT_DISK_MAX)
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->n = n;
    for (size_t i = 0; i < n; i++)
        s->d[i].fd = -1;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        int rc;

        s->d[i].id = strdup(d[i].id ? d[i].id : "");
        s->d[i].path = strdup(d[i].path ? d[i].path : "");
        if (!s->d[i].id || !s->d[i].path) {
            ckpt_disk_stage_free(s);
            return -ENOMEM;
        }
        s->d[i].fd = open(s->d[i].path, O_RDWR | O_CLOEXEC);
        if (s->d[i].fd < 0 || fstat(s->d[i].fd, &st) < 0) {
            rc = -errno;
            colo_err("disk %s: cannot open %s: %s", s->d[i].id, s->d[i].path,
                     strerror(errno));
            ckpt_disk_stage_free(s);
            return rc;
        }
        s->d[i].size = (uint64_t)st.st_size;
    }
    *ret = s;
    return 0;
}

void ckpt_disk_stage_free(struct ckpt_disk_stage *s)
{
    if (!s)
        return;
    epoch_dispose(&s->staged);
    for (size_t i = 0; i < s->n; i++) {
        free(s->d[i].id);
        free(s->d[i].path);
        colo_close(&s->d[i].fd);
    }
    free(s);
}

static int pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        off += (uint64_t)w;
        len -= (size_t)w;
    }
    return 0;
}

static int zero_range(int fd, uint64_t off, uint64_t len)
{
    static const uint8_t z[65536];

    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  (off_t)len) == 0)
        return 0;
    while (len) {
        size_t k = len < sizeof(z) ? (size_t)len : sizeof(z);
        int rc = pwrite_all(fd, z, k, off);

        if (rc < 0)
            return rc;
        off += k;
        len -= k;
    }
    return 0;
}

int ckpt_disk_stage_info(struct ckpt_disk_stage *s,
                         const struct xprt_disk_info *d, char *why,
                         size_t whysz)
{
    struct stage_disk *sd;
    int rc;

    if (d->disk >= s->n || strcmp(s->d[d->disk].id, d->id) != 0) {
        if (why)
            snprintf(why, whysz,
                     "the primary's disk %u (%s) is not "
                     "configured here",
                     d->disk, d->id);
        return -COLO_EPEER_REJECTED;
    }
    sd = &s->d[d->disk];
    if (sd->size != d->size) {
        if (why)
            snprintf(why, whysz,
                     "disk %s: image %s is %llu bytes, the "
                     "primary's is %llu",
                     sd->id, sd->path, (unsigned long long)sd->size,
                     (unsigned long long)d->size);
        return -COLO_EPEER_REJECTED;
    }
    rc = zero_range(sd->fd, 0, sd->size);
    if (rc < 0) {
        if (why)
            snprintf(why, whysz, "disk %s: cannot clear %s: %s", sd->id,
                     sd->path, strerror(-rc));
        return rc;
    }
    sd->announced = true;
    return 0;
}

static int apply(struct ckpt_disk_stage *s, const struct ckpt_disk_wr *w)
{
    int fd = s->d[w->disk].fd;

    if (w->flags & XPRT_DISK_WRITE_ZEROES)
        return zero_range(fd, w->offset, w->length);
    return pwrite_all(fd, w->data, w->length, w->offset);
}

int ckpt_disk_stage_write(struct ckpt_disk_stage *s,
                          const struct xprt_disk_write_view *w, bool direct)
{
    struct stage_disk *sd;

    if (w->disk >= s->n || !s->d[w->disk].announced)
        return -COLO_ESTREAM_CORRUPT;
    sd = &s->d[w->disk];
    if (w->offset > sd->size || w->length > sd->size - w->offset)
        return -COLO_ESTREAM_CORRUPT;
    if (direct) {
        struct ckpt_disk_wr x = {w->disk, w->flags, w->offset, w->length,
                                 w->data};

        return apply(s, &x);
    }
    if (!(w->flags & XPRT_DISK_WRITE_ZEROES) &&
        s->staged.bytes + w->length > CKPT_DISK_STAGE_MAX)
        return -COLO_ESTREAM_TOO_BIG;
    return epoch_add(&s->staged, w->disk, w->flags, w->offset, w->data,
                     w->length);
}

int ckpt_disk_stage_commit(struct ckpt_disk_stage *s)
{
    int rc = 0;

    for (size_t i = 0; i < s->staged.n && rc == 0; i++)
        rc = apply(s, &s->staged.w[i]);
    epoch_clear(&s->staged);
    for (size_t i = 0; i < s->n && rc == 0; i++)
        if (fdatasync(s->d[i].fd) < 0)
            rc = -errno;
    return rc;
}

void ckpt_disk_stage_drop(struct ckpt_disk_stage *s)
{
    epoch_clear(&s->staged);
}

void ckpt_disk_stage_reset(struct ckpt_disk_stage *s)
{
    epoch_clear(&s->staged);
    for (size_t i = 0; i < s->n; i++)
        s->d[i].announced = false;
}

uint64_t ckpt_disk_stage_staged_bytes(const struct ckpt_disk_stage *s)
{
    return s->staged.bytes;
}
