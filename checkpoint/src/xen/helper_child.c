/*
 * Helper mode: runs in `colo __xen-helper`, a process of its own, so that
 * libxenguest's blocking calls never run on the loop (libxl does the same
 * with libxl-save-helper). Each libxc callback becomes a CALL frame; the
 * helper blocks on the channel until the parent's REPLY arrives.
 */
#include "checkpoint/xen_helper.h"
#include "checkpoint/xen_seam.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"

#ifndef COLO_XC_RESTORE_MEMFLAGS
#define COLO_XC_RESTORE_MEMFLAGS 0 /* checkpoint/xen_detect.cmake not in */
#endif

struct helper {
    int chan;
    bool chan_dead;
    xentoollog_logger lg; /* libxc's logger; from_lg() maps back */
    uint32_t domid;
};

/* The logger's callbacks receive &h->lg. */
static struct helper *from_lg(xentoollog_logger *lg)
{
    return (struct helper *)((char *)lg - offsetof(struct helper, lg));
}

static int send_msg(struct helper *h, const struct ckpt_xen_msg *m)
{
    struct colo_buf b;
    int rc;

    if (h->chan_dead)
        return -EPIPE;
    colo_buf_init(&b, 0);
    rc = ckpt_xen_msg_encode(&b, m);
    if (rc >= 0)
        rc = colo_write_all(h->chan, b.data, b.len);
    colo_buf_dispose(&b);
    if (rc < 0)
        h->chan_dead = true;
    return rc;
}

/* Block until the REPLY for cb. Any other frame is a protocol error. */
static int call(struct helper *h, enum ckpt_xen_cb cb, uint32_t a, uint64_t b,
                uint64_t c, uint64_t d, int failval)
{
    struct ckpt_xen_msg m = {.type = CKPT_XEN_MSG_CALL,
                             .u32a = cb,
                             .u32b = a,
                             .u64a = b,
                             .u64b = c,
                             .u64c = d};
    uint8_t f[CKPT_XEN_MSG_HDR_SIZE + 8];
    ssize_t n;

    if (send_msg(h, &m) < 0)
        return failval;
    if (colo_read_all(h->chan, f, sizeof(f)) < 0)
        goto dead;
    n = ckpt_xen_msg_decode(f, sizeof(f), &m);
    if (n != (ssize_t)sizeof(f) || m.type != CKPT_XEN_MSG_REPLY ||
        m.u32a != (uint32_t)cb)
        goto dead;
    return m.i32a;
dead:
    h->chan_dead = true;
    return failval;
}

/* ---- libxc callbacks --------------------------------------------------- */

static int cb_suspend(void *data)
{
    return call(data, CKPT_XEN_CB_SUSPEND, 0, 0, 0, 0, 0);
}

static int cb_precopy(struct precopy_stats st, void *data)
{
    return call(data, CKPT_XEN_CB_PRECOPY_POLICY, 0, st.iteration,
                (uint64_t)(int64_t)st.dirty_count, st.total_written,
                XGS_POLICY_ABORT);
}

static int cb_postcopy(void *data)
{
    return call(data, CKPT_XEN_CB_POSTCOPY, 0, 0, 0, 0, 0);
}

static int cb_checkpoint(void *data)
{
    return call(data, CKPT_XEN_CB_CHECKPOINT, 0, 0, 0, 0, 0);
}

static int cb_wait_checkpoint(void *data)
{
    return call(data, CKPT_XEN_CB_WAIT_CHECKPOINT, 0, 0, 0, 0, 0);
}

static int cb_logdirty(uint32_t domid, unsigned enable, void *data)
{
    return call(data, CKPT_XEN_CB_SWITCH_LOGDIRTY, enable, domid, 0, 0, -1);
}

static int cb_static_data_done(unsigned int missing, void *data)
{
    return call(data, CKPT_XEN_CB_STATIC_DATA_DONE, missing, 0, 0, 0, -1);
}

static void cb_restore_results(xen_pfn_t store, xen_pfn_t console, void *data)
{
    struct ckpt_xen_msg m = {
        .type = CKPT_XEN_MSG_RESULTS, .u64a = store, .u64b = console};

    send_msg(data, &m);
}

/* ---- logger ------------------------------------------------------------ */

__attribute__((format(printf, 5, 0))) static void
lg_vmessage(xentoollog_logger *lg, xentoollog_level level, int errnoval,
            const char *context, const char *fmt, va_list al)
{
    struct helper *h = from_lg(lg);
    char line[CKPT_XEN_TEXT_MAX];
    struct ckpt_xen_msg m = {.type = CKPT_XEN_MSG_LOG};
    int n = 0;

    if (context)
        n = snprintf(line, sizeof(line), "%s: ", context);
    if (n >= 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, al);
    m.u32a = (uint32_t)level;
    m.u32b = (uint32_t)errnoval;
    m.text = line;
    m.text_len = strlen(line);
    send_msg(h, &m);
}

static void lg_progress(xentoollog_logger *lg, const char *context,
                        const char *doing_what, int percent, unsigned long done,
                        unsigned long total)
{
    struct helper *h = from_lg(lg);
    char line[256];
    struct ckpt_xen_msg m = {.type = CKPT_XEN_MSG_PROGRESS};

    (void)percent;
    snprintf(line, sizeof(line), "%s: %s", context ? context : "xc",
             doing_what ? doing_what : "");
    m.u64a = done;
    m.u64b = total;
    m.text = line;
    m.text_len = strlen(line);
    send_msg(h, &m);
}

static void lg_destroy(xentoollog_logger *lg)
{
    (void)lg;
}

/* ---- real ops ---------------------------------------------------------- */

static xc_interface *real_open(xentoollog_logger *lg, char *why, size_t whysz)
{
    xc_interface *xch = xc_interface_open(lg, lg, 0);

    if (!xch) {
        int e = errno;

        snprintf(why, whysz,
                 "no Xen hypervisor: xc_interface_open failed (%s); is "
                 "this a Xen dom0 with privcmd?",
                 strerror(e));
        errno = e;
    }
    return xch;
}

static void real_close(xc_interface *xch)
{
    xc_interface_close(xch);
}

static int real_restore(xc_interface *xch, int io_fd, uint32_t dom,
                        unsigned int store_evtchn, unsigned long *store_mfn,
                        uint32_t store_domid, unsigned int console_evtchn,
                        unsigned long *console_mfn, uint32_t console_domid,
                        xc_stream_type_t stream, struct restore_callbacks *cb,
                        int send_back_fd)
{
#if COLO_XC_RESTORE_MEMFLAGS
    return xc_domain_restore(xch, io_fd, dom, store_evtchn, store_mfn,
                             store_domid, console_evtchn, console_mfn,
                             console_domid, stream, cb, send_back_fd, 0u);
#else
    return xc_domain_restore(xch, io_fd, dom, store_evtchn, store_mfn,
                             store_domid, console_evtchn, console_mfn,
                             console_domid, stream, cb, send_back_fd);
#endif
}

static const struct ckpt_xen_guest_ops real_ops = {
    .name = "libxenguest",
    .open = real_open,
    .close = real_close,
    .save = xc_domain_save,
    .restore = real_restore,
};

const struct ckpt_xen_guest_ops *ckpt_xen_real_ops(void)
{
    return &real_ops;
}

static void quiet_vmessage(xentoollog_logger *lg, xentoollog_level level,
                           int errnoval, const char *context, const char *fmt,
                           va_list al)
{
    (void)lg;
    (void)level;
    (void)errnoval;
    (void)context;
    (void)fmt;
    (void)al;
}

int ckpt_xen_probe(char *why, size_t whysz)
{
    /* A silent logger: the caller prints why. */
    xentoollog_logger lg = {.vmessage = quiet_vmessage, .destroy = lg_destroy};
    xc_interface *xch = real_open(&lg, why, whysz);

    if (!xch)
        return -COLO_EXEN;
    xc_interface_close(xch);
    return 0;
}

/* ---- main -------------------------------------------------------------- */

static int parse_u32(const char *s, uint32_t *ret)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v > UINT32_MAX)
        return -EINVAL;
    *ret = (uint32_t)v;
    return 0;
}

static int parse_fd(const char *s, int *ret)
{
    uint32_t v;

    if (strcmp(s, "-1") == 0) {
        *ret = -1;
        return 0;
    }
    if (parse_u32(s, &v) < 0 || v > INT32_MAX)
        return -EINVAL;
    *ret = (int)v;
    return 0;
}

int ckpt_xen_helper_main(int argc, char **argv,
                         const struct ckpt_xen_guest_ops *ops)
{
    struct helper h = {.chan = -1};
    struct ckpt_xen_msg done = {.type = CKPT_XEN_MSG_DONE};
    char why[CKPT_XEN_TEXT_MAX] = "";
    bool save;
    int io = -1, back = -1, rc = -1, status;
    uint32_t v[6] = {0}, stream = 0;
    unsigned long store = 0, console = 0;
    xc_interface *xch;

    if (argc < 1)
        return 2;
    save = strcmp(argv[0], "save") == 0;
    if (!save && strcmp(argv[0], "restore") != 0)
        return 2;
    if (argc != (save ? 7 : 10))
        return 2;
    if (parse_fd(argv[1], &h.chan) < 0 || parse_fd(argv[2], &io) < 0 ||
        parse_u32(argv[3], &h.domid) < 0)
        return 2;
    for (int i = 4; i < argc - 2; i++)
        if (parse_u32(argv[i], &v[i - 4]) < 0)
            return 2;
    if (parse_u32(argv[argc - 2], &stream) < 0 || stream > 2 ||
        parse_fd(argv[argc - 1], &back) < 0 || h.chan < 0 || io < 0)
        return 2;
    /* A dead parent must turn into EPIPE on the next write, not a kill. */
    signal(SIGPIPE, SIG_IGN);
    h.lg.vmessage = lg_vmessage;
    h.lg.progress = lg_progress;
    h.lg.destroy = lg_destroy;

    xch = ops->open(&h.lg, why, sizeof(why));
    if (!xch) {
        done.i32a = -1;
        done.i32b = errno;
        goto report;
    }
    if (save) {
        struct save_callbacks cb = {
            .suspend = cb_suspend,
            .precopy_policy = cb_precopy,
            .postcopy = cb_postcopy,
            .checkpoint = cb_checkpoint,
            .wait_checkpoint = cb_wait_checkpoint,
            .switch_qemu_logdirty = cb_logdirty,
            .data = &h,
        };

        rc = ops->save(xch, io, h.domid, v[0], &cb, (xc_stream_type_t)stream,
                       back);
    } else {
        struct restore_callbacks cb = {
            .static_data_done = cb_static_data_done,
            .suspend = cb_suspend,
            .postcopy = cb_postcopy,
            .checkpoint = cb_checkpoint,
            .wait_checkpoint = cb_wait_checkpoint,
            .restore_results = cb_restore_results,
            .data = &h,
        };

        rc = ops->restore(xch, io, h.domid, v[0], &store, v[1], v[2], &console,
                          v[3], (xc_stream_type_t)stream, &cb, back);
    }
    done.i32a = rc;
    done.i32b = rc ? errno : 0;
    if (rc)
        snprintf(why, sizeof(why), "%s %s of domain %u failed: %s", ops->name,
                 save ? "save" : "restore", h.domid, strerror(done.i32b));
    ops->close(xch);
report:
    done.u64a = store;
    done.u64b = console;
    done.text = why;
    done.text_len = strlen(why);
    if (send_msg(&h, &done) < 0)
        status = 3;
    else
        status = done.i32a ? 1 : 0;
    colo_close(&h.chan);
    return status;
}
