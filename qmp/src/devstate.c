/*
 * Device state save and load through QMP. See qmp/devstate.h.
 *
 * Every step is one QMP command; each command carries a small token whose
 * destroy notifier detaches it from its operation, so freeing the saver,
 * the client or the load (by freeing the client) at any time leaks nothing
 * and calls nothing.
 */
#include "qmp/devstate.h"

#include "common/error.h"
#include "common/fault.h"
#include "common/fd.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/timeutil.h"

#define LOAD_TIMEOUT_MS 60000

const char *qmp_loader_name(enum qmp_loader l)
{
    switch (l) {
    case QMP_LOADER_INCOMING:
        return "incoming";
    case QMP_LOADER_XEN:
        return "xen-load-devices-state";
    case QMP_LOADER_NONE:
        break;
    }
    return "none";
}

/* A memfd and a second open of it with another access mode (QEMU checks
 * that an fdset fd's mode equals the open mode; O_RDWR is refused). */
static int memfd_pair(const char *name, int mode, int *ret_rw, int *ret_other)
{
    char path[64];
    int rw = memfd_create(name, MFD_CLOEXEC);
    int other;

    if (rw < 0)
        return -errno;
    snprintf(path, sizeof(path), "/proc/self/fd/%d", rw);
    other = open(path, mode | O_CLOEXEC);
    if (other < 0) {
        int rc = -errno;

        colo_close(&rw);
        return rc;
    }
    *ret_rw = rw;
    *ret_other = other;
    return 0;
}

/* ================================================================== */
/* Save */

struct save_tok;

struct qmp_saver {
    struct qmp_client *c;
    int memfd; /* O_RDWR: we read the blob back through it */
    int wfd;   /* O_WRONLY: its file description is shared with QEMU */
    int fdset_id;
    bool busy;
    bool one_shot;
    unsigned flags;
    bool was_running;
    qmp_save_cb cb;
    void *arg;
    struct save_tok *tok; /* the step in flight */
    uint8_t *blob;        /* parked while `cont` runs */
    size_t blob_len;
};

struct save_tok {
    struct qmp_saver *s; /* NULL once the saver is gone */
};

static void tok_destroy(void *arg)
{
    struct save_tok *t = arg;

    if (t->s && t->s->tok == t)
        t->s->tok = NULL;
    free(t);
}

static void saver_finish(struct qmp_saver *s, int rc, uint8_t *blob,
                         size_t len);

static void send_step(struct qmp_saver *s, const char *cmd, json_t *args,
                      int fd, qmp_reply_cb cb)
{
    struct save_tok *t = calloc(1, sizeof(*t));
    int rc;

    if (!t) {
        json_decref(args);
        saver_finish(s, -ENOMEM, NULL, 0);
        return;
    }
    t->s = s;
    rc = qmp_send_ex(s->c, cmd, args, fd, 0, cb, t, tok_destroy, NULL);
    json_decref(args);
    if (rc < 0) {
        free(t);
        saver_finish(s, rc, NULL, 0);
        return;
    }
    s->tok = t;
}

static void saver_cont_done(struct qmp_client *c, int rc, json_t *ret,
                            const char *desc, void *arg);

/* Read back what QEMU wrote: the shared offset says how much. */
static int read_blob(struct qmp_saver *s, uint8_t **ret_blob, size_t *ret_len)
{
    off_t end = lseek(s->wfd, 0, SEEK_CUR);
    uint8_t *blob;
    size_t got = 0;

    if (end < 0)
        return -errno;
    if ((uint64_t)end > QMP_DEVSTATE_MAX)
        return -COLO_ESTREAM_TOO_BIG;
    if (end < 4)
        return -COLO_ESTREAM_TRUNCATED;
    blob = malloc((size_t)end);
    if (!blob)
        return -ENOMEM;
    while (got < (size_t)end) {
        ssize_t n = pread(s->memfd, blob + got, (size_t)end - got, (off_t)got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int rc = n < 0 ? -errno : -COLO_ESTREAM_TRUNCATED;

            free(blob);
            return rc;
        }
        got += (size_t)n;
    }
    if (memcmp(blob, "QEVM", 4) != 0) {
        free(blob);
        return -COLO_ESTREAM_CORRUPT;
    }
    *ret_blob = blob;
    *ret_len = got;
    return 0;
}

static void save_done(struct qmp_client *c, int rc, json_t *ret,
                      const char *desc, void *arg)
{
    struct save_tok *t = arg;
    struct qmp_saver *s = t->s;
    uint8_t *blob = NULL;
    size_t len = 0;

    (void)c;
    (void)ret;
    if (!s)
        return;
    if (rc < 0) {
        colo_err("qmp: xen-save-devices-state: %s",
                 desc ? desc : colo_strerror(rc));
        saver_finish(s, rc, NULL, 0);
        return;
    }
    rc = read_blob(s, &blob, &len);
    if (rc < 0) {
        colo_err("qmp: reading the device state back: %s", colo_strerror(rc));
        saver_finish(s, rc, NULL, 0);
        return;
    }
    colo_debug("qmp: device state saved, %zu bytes", len);
    if ((s->flags & QMP_SAVE_RESUME) && s->was_running) {
        s->blob = blob; /* delivered when cont answered */
        s->blob_len = len;
        send_step(s, "cont", NULL, -1, saver_cont_done);
        return;
    }
    saver_finish(s, 0, blob, len);
}

static void saver_cont_done(struct qmp_client *c, int rc, json_t *ret,
                            const char *desc, void *arg)
{
    struct save_tok *t = arg;
    struct qmp_saver *s = t->s;
    uint8_t *blob;

    (void)c;
    (void)ret;
    if (!s)
        return;
    blob = s->blob;
    s->blob = NULL;
    if (rc < 0) {
        colo_err("qmp: cont after save: %s", desc ? desc : colo_strerror(rc));
        free(blob);
        saver_finish(s, rc, NULL, 0);
        return;
    }
    saver_finish(s, 0, blob, s->blob_len);
}

static void save_run(struct qmp_saver *s)
{
    json_t *args;
    char fname[64];

    /* Rewind the description QEMU shares: it writes from offset 0 and
     * the offset afterwards is the blob length. */
    if (lseek(s->wfd, 0, SEEK_SET) < 0 || ftruncate(s->memfd, 0) < 0) {
        saver_finish(s, -errno, NULL, 0);
        return;
    }
    snprintf(fname, sizeof(fname), "/dev/fdset/%d", s->fdset_id);
    args = json_pack("{s:s, s:b}", "filename", fname, "live",
                     (s->flags & QMP_SAVE_RELEASE_DISKS) != 0);
    if (!args) {
        saver_finish(s, -ENOMEM, NULL, 0);
        return;
    }
    send_step(s, "xen-save-devices-state", args, -1, save_done);
}

static void addfd_done(struct qmp_client *c, int rc, json_t *ret,
                       const char *desc, void *arg)
{
    struct save_tok *t = arg;
    struct qmp_saver *s = t->s;
    json_t *set = json_object_get(ret, "fdset-id");

    (void)c;
    if (!s)
        return;
    if (rc == 0 && !json_is_integer(set))
        rc = -EPROTO;
    if (rc < 0) {
        colo_err("qmp: add-fd: %s", desc ? desc : colo_strerror(rc));
        saver_finish(s, rc, NULL, 0);
        return;
    }
    s->fdset_id = (int)json_integer_value(set);
    save_run(s);
}

static void save_prepare(struct qmp_saver *s)
{
    if (s->fdset_id >= 0) {
        save_run(s);
        return;
    }
    send_step(s, "add-fd", NULL, s->wfd, addfd_done);
}

static void stop_done(struct qmp_client *c, int rc, json_t *ret,
                      const char *desc, void *arg)
{
    struct save_tok *t = arg;
    struct qmp_saver *s = t->s;

    (void)c;
    (void)ret;
    if (!s)
        return;
    if (rc < 0) {
        colo_err("qmp: stop: %s", desc ? desc : colo_strerror(rc));
        saver_finish(s, rc, NULL, 0);
        return;
    }
    save_prepare(s);
}

static void status_done(struct qmp_client *c, int rc, json_t *ret,
                        const char *desc, void *arg)
{
    struct save_tok *t = arg;
    struct qmp_saver *s = t->s;

    (void)c;
    if (!s)
        return;
    if (rc < 0) {
        colo_err("qmp: query-status: %s", desc ? desc : colo_strerror(rc));
        saver_finish(s, rc, NULL, 0);
        return;
    }
    s->was_running = json_is_true(json_object_get(ret, "running"));
    if (s->was_running) {
        send_step(s, "stop", NULL, -1, stop_done);
        return;
    }
    save_prepare(s);
}

int qmp_saver_new(struct qmp_client *c, struct qmp_saver **ret)
{
    struct qmp_saver *s = calloc(1, sizeof(*s));
    int rc;

    if (!s)
        return -ENOMEM;
    s->c = c;
    s->fdset_id = -1;
    rc = memfd_pair("colo-devstate", O_WRONLY, &s->memfd, &s->wfd);
    if (rc < 0) {
        free(s);
        return rc;
    }
    *ret = s;
    return 0;
}

void qmp_saver_free(struct qmp_saver *s)
{
    if (!s)
        return;
    if (s->tok)
        s->tok->s = NULL;
    if (s->fdset_id >= 0 && qmp_client_state(s->c) == QMP_CONNECTED) {
        /* QEMU closes it once the VM runs (or the monitor goes away). */
        qmp_remove_fd(s->c, s->fdset_id, -1, NULL, NULL);
    }
    free(s->blob);
    colo_close(&s->memfd);
    colo_close(&s->wfd);
    free(s);
}

int qmp_saver_save(struct qmp_saver *s, unsigned flags, qmp_save_cb cb,
                   void *arg)
{
    struct save_tok *t;
    int rc;

    if (s->busy)
        return -EBUSY;
    if (qmp_client_state(s->c) != QMP_CONNECTED)
        return -ENOTCONN;
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->s = s;
    s->flags = flags;
    s->cb = cb;
    s->arg = arg;
    s->was_running = false;
    /* The first step is sent here so a failure is a return value. */
    if (flags & QMP_SAVE_NO_STOP) {
        if (s->fdset_id >= 0) {
            char fname[64];
            json_t *args;

            if (lseek(s->wfd, 0, SEEK_SET) < 0 || ftruncate(s->memfd, 0) < 0) {
                free(t);
                return -errno;
            }
            snprintf(fname, sizeof(fname), "/dev/fdset/%d", s->fdset_id);
            args = json_pack("{s:s, s:b}", "filename", fname, "live",
                             (flags & QMP_SAVE_RELEASE_DISKS) != 0);
            rc = args ? qmp_send_ex(s->c, "xen-save-devices-state", args, -1, 0,
                                    save_done, t, tok_destroy, NULL)
                      : -ENOMEM;
            json_decref(args);
        } else {
            rc = qmp_send_ex(s->c, "add-fd", NULL, s->wfd, 0, addfd_done, t,
                             tok_destroy, NULL);
        }
    } else {
        rc = qmp_send_ex(s->c, "query-status", NULL, -1, 0, status_done, t,
                         tok_destroy, NULL);
    }
    if (rc < 0) {
        free(t);
        return rc;
    }
    s->tok = t;
    s->busy = true;
    return 0;
}

static void saver_finish(struct qmp_saver *s, int rc, uint8_t *blob, size_t len)
{
    qmp_save_cb cb = s->cb;
    void *arg = s->arg;
    struct qmp_client *c = s->c;
    bool was_running = s->was_running;

    s->busy = false;
    s->cb = NULL;
    if (s->one_shot)
        qmp_saver_free(s);
    if (cb)
        cb(c, rc, rc == 0 ? blob : NULL, rc == 0 ? len : 0, was_running, arg);
    else
        free(blob);
}

int qmp_devstate_save(struct qmp_client *c, unsigned flags, qmp_save_cb cb,
                      void *arg)
{
    struct qmp_saver *s;
    int rc = qmp_saver_new(c, &s);

    if (rc < 0)
        return rc;
    s->one_shot = true;
    rc = qmp_saver_save(s, flags, cb, arg);
    if (rc < 0)
        qmp_saver_free(s);
    return rc;
}

/* ================================================================== */
/* Load */

struct load_op {
    struct qmp_client *c;
    unsigned flags;
    enum qmp_loader loader;
    int rfd; /* read-only fd of the blob */
    int fdset_id;
    int hook_id;
    bool done;
    bool waiting;        /* for the MIGRATION event */
    int refs;            /* pending commands + hook */
    struct event *timer; /* the whole load's deadline */
    char fdname[48];
    qmp_load_cb cb;
    void *arg;
};

static void load_unref(void *arg)
{
    struct load_op *op = arg;

    if (--op->refs > 0)
        return;
    if (op->timer)
        event_free(op->timer);
    colo_close(&op->rfd);
    free(op);
}

static void load_finish(struct load_op *op, int rc)
{
    qmp_load_cb cb = op->cb;

    if (op->done)
        return;
    op->done = true;
    if (op->timer)
        event_del(op->timer);
    if (op->hook_id > 0) {
        int id = op->hook_id;

        op->hook_id = 0;
        op->refs++; /* removing the hook drops its ref */
        qmp_client_remove_hook(op->c, id);
        op->refs--;
    }
    if (rc == 0)
        colo_info("qmp: device state loaded (%s)", qmp_loader_name(op->loader));
    else
        colo_err("qmp: device state load (%s) failed: %s",
                 qmp_loader_name(op->loader), colo_strerror(rc));
    op->refs++;
    if (cb)
        cb(op->c, rc, op->loader, op->arg);
    load_unref(op);
}

static int load_send(struct load_op *op, const char *cmd, json_t *args, int fd,
                     uint32_t timeout_ms, qmp_reply_cb cb)
{
    int rc =
        qmp_send_ex(op->c, cmd, args, fd, timeout_ms, cb, op, load_unref, NULL);

    json_decref(args);
    if (rc == 0)
        op->refs++;
    return rc;
}

static void load_cont_done(struct qmp_client *c, int rc, json_t *ret,
                           const char *desc, void *arg)
{
    struct load_op *op = arg;

    (void)c;
    (void)ret;
    if (op->done)
        return;
    if (rc < 0)
        colo_err("qmp: cont after load: %s", desc ? desc : "");
    load_finish(op, rc);
}

static void load_loaded(struct load_op *op)
{
    int rc;

    if (op->flags & QMP_LOAD_PAUSED) {
        load_finish(op, 0);
        return;
    }
    rc = load_send(op, "cont", NULL, -1, 0, load_cont_done);
    if (rc < 0)
        load_finish(op, rc);
}

/* --- incoming loader --- */

static void load_hook(struct qmp_client *c, int rc, const char *event,
                      json_t *data, void *arg)
{
    struct load_op *op = arg;
    const char *st;

    (void)c;
    if (op->done)
        return;
    if (rc < 0) {
        op->hook_id = 0;
        load_finish(op, rc); /* QEMU died or the link broke */
        return;
    }
    if (!op->waiting || strcmp(event, "MIGRATION") != 0)
        return;
    st = json_string_value(json_object_get(data, "status"));
    if (!st)
        return;
    colo_debug("qmp: incoming migration status %s", st);
    if (strcmp(st, "completed") == 0) {
        op->waiting = false;
        load_loaded(op);
    } else if (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0) {
        op->waiting = false;
        colo_err("qmp: incoming device-state load %s (see QEMU's stderr)", st);
        load_finish(op, -COLO_EQMP_GENERIC);
    }
}

static void getfd_done(struct qmp_client *c, int rc, json_t *ret,
                       const char *desc, void *arg);

static void incoming_started(struct qmp_client *c, int rc, json_t *ret,
                             const char *desc, void *arg)
{
    struct load_op *op = arg;

    (void)c;
    (void)ret;
    if (op->done)
        return;
    if (rc < 0) {
        colo_err("qmp: migrate-incoming: %s", desc ? desc : "");
        op->waiting = false;
        load_finish(op, rc);
    }
    /* else: the MIGRATION event (hook) finishes the load */
}

static void caps_done(struct qmp_client *c, int rc, json_t *ret,
                      const char *desc, void *arg)
{
    struct load_op *op = arg;

    (void)c;
    (void)ret;
    if (op->done)
        return;
    if (rc < 0) {
        colo_err("qmp: migrate-set-capabilities events: %s", desc ? desc : "");
        load_finish(op, rc);
        return;
    }
    rc = load_send(op, "getfd", json_pack("{s:s}", "fdname", op->fdname),
                   op->rfd, 0, getfd_done);
    if (rc < 0)
        load_finish(op, rc);
}

static void getfd_done(struct qmp_client *c, int rc, json_t *ret,
                       const char *desc, void *arg)
{
    struct load_op *op = arg;
    char uri[64];
    json_t *args;

    (void)c;
    (void)ret;
    if (op->done)
        return;
    if (rc < 0) {
        colo_err("qmp: getfd: %s", desc ? desc : "");
        load_finish(op, rc);
        return;
    }
    if (colo_fault(COLO_FAULT_DEVICE_LOAD)) {
        colo_err("qmp: fault point %d (device load) fired",
                 COLO_FAULT_DEVICE_LOAD);
        qmp_closefd(c, op->fdname, NULL, NULL);
        load_finish(op, -COLO_EFAULT_INJECTED);
        return;
    }
    rc = qmp_client_add_hook(op->c, load_hook, op, load_unref);
    if (rc < 0) {
        load_finish(op, rc);
        return;
    }
    op->hook_id = rc;
    op->refs++;
    op->waiting = true;
    snprintf(uri, sizeof(uri), "fd:%s", op->fdname);
    args = json_pack("{s:s}", "uri", uri);
    rc = args ? load_send(op, "migrate-incoming", args, -1, 0, incoming_started)
              : -ENOMEM;
    if (rc < 0)
        load_finish(op, rc);
}

/* --- xen loader --- */

static void xenload_done(struct qmp_client *c, int rc, json_t *ret,
                         const char *desc, void *arg)
{
    struct load_op *op = arg;

    (void)ret;
    if (op->done)
        return;
    /* The VM is paused here: QEMU frees the fdset when it runs again. */
    qmp_remove_fd(c, op->fdset_id, -1, NULL, NULL);
    if (rc < 0) {
        colo_err("qmp: xen-load-devices-state: %s", desc ? desc : "");
        load_finish(op, rc);
        return;
    }
    load_loaded(op);
}

static void xen_addfd_done(struct qmp_client *c, int rc, json_t *ret,
                           const char *desc, void *arg)
{
    struct load_op *op = arg;
    json_t *set = json_object_get(ret, "fdset-id");
    char fname[64];

    (void)c;
    if (op->done)
        return;
    if (rc == 0 && !json_is_integer(set))
        rc = -EPROTO;
    if (rc < 0) {
        colo_err("qmp: add-fd: %s", desc ? desc : colo_strerror(rc));
        load_finish(op, rc);
        return;
    }
    op->fdset_id = (int)json_integer_value(set);
    snprintf(fname, sizeof(fname), "/dev/fdset/%d", op->fdset_id);
    rc = load_send(op, "xen-load-devices-state",
                   json_pack("{s:s}", "filename", fname), -1, LOAD_TIMEOUT_MS,
                   xenload_done);
    if (rc < 0)
        load_finish(op, rc);
}

/* --- choosing --- */

static void load_status_done(struct qmp_client *c, int rc, json_t *ret,
                             const char *desc, void *arg)
{
    struct load_op *op = arg;
    const char *st = json_string_value(json_object_get(ret, "status"));

    if (op->done)
        return;
    if (rc < 0) {
        colo_err("qmp: query-status: %s", desc ? desc : colo_strerror(rc));
        load_finish(op, rc);
        return;
    }
    if (st && strcmp(st, "inmigrate") == 0 &&
        qmp_has_command(c, "migrate-incoming") != 0) {
        op->loader = QMP_LOADER_INCOMING;
        colo_info("qmp: loading device state with migrate-incoming: QEMU "
                  "waits for an incoming migration (-incoming defer); "
                  "one load per QEMU process");
        /* MIGRATION events are sent only with the "events" capability. */
        rc = load_send(op, "migrate-set-capabilities",
                       json_pack("{s:[{s:s, s:b}, {s:s, s:b}]}", "capabilities",
                                 "capability", "events", "state", 1,
                                 "capability", "late-block-activate", "state",
                                 1),
                       -1, 0, caps_done);
    } else if ((op->flags & QMP_LOAD_XEN_DM) &&
               qmp_has_command(c, "xen-load-devices-state") != 0) {
        op->loader = QMP_LOADER_XEN;
        colo_info("qmp: loading device state with xen-load-devices-state: "
                  "QEMU is a Xen device model (status %s)",
                  st ? st : "?");
        rc = load_send(op, "add-fd", NULL, op->rfd, 0, xen_addfd_done);
    } else {
        colo_err("qmp: no device-state loader for this QEMU (status %s): "
                 "xen-load-devices-state aborts QEMU 7.2 outside a Xen "
                 "device model; start the secondary with -S -incoming "
                 "defer -global migration.send-configuration=off -machine "
                 "suppress-vmdesc=on",
                 st ? st : "?");
        rc = -ENOTSUP;
    }
    if (rc < 0)
        load_finish(op, rc);
}

static void load_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct load_op *op = arg;

    (void)fd;
    (void)what;
    colo_err("qmp: device state load not done within %d ms", LOAD_TIMEOUT_MS);
    /* load_finish() holds its own reference across the callback; op is
     * not used after it. */
    load_finish(op, -ETIMEDOUT);
}

int qmp_devstate_load(struct qmp_client *c, const uint8_t *blob, size_t len,
                      unsigned flags, qmp_load_cb cb, void *arg)
{
    struct timeval tv = colo_ms_to_tv(LOAD_TIMEOUT_MS);
    static unsigned counter;
    struct load_op *op;
    int memfd = -1;
    int rc;

    if (len < 4 || memcmp(blob, "QEVM", 4) != 0)
        return -EINVAL;
    if (len > QMP_DEVSTATE_MAX)
        return -COLO_ESTREAM_TOO_BIG;
    if (qmp_client_state(c) != QMP_CONNECTED)
        return -ENOTCONN;
    op = calloc(1, sizeof(*op));
    if (!op)
        return -ENOMEM;
    op->c = c;
    op->flags = flags;
    op->cb = cb;
    op->arg = arg;
    op->rfd = -1;
    op->fdset_id = -1;
    snprintf(op->fdname, sizeof(op->fdname), "colo-load-%u", counter++);
    rc = memfd_pair("colo-devstate-load", O_RDONLY, &memfd, &op->rfd);
    if (rc < 0)
        goto fail;
    rc = colo_write_all(memfd, blob, len);
    colo_close(&memfd);
    if (rc < 0)
        goto fail;
    op->timer = evtimer_new(qmp_client_base(c), load_timer_cb, op);
    if (!op->timer || evtimer_add(op->timer, &tv) < 0) {
        rc = -ENOMEM;
        goto fail;
    }
    /* A regular file's reader starts at the shared offset: it is 0. */
    rc = load_send(op, "query-status", NULL, -1, 0, load_status_done);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    if (op->timer)
        event_free(op->timer);
    colo_close(&op->rfd);
    free(op);
    return rc;
}
