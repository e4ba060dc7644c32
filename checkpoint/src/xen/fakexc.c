/*
 * A fake libxenguest for tests (the seam in xen_seam.h). Not a stub: save
 * writes a real libxc v3 stream (image + domain header, X86_CPUID_POLICY,
 * X86_MSR_POLICY, STATIC_DATA_END, PAGE_DATA, X86_TSC_INFO, HVM_CONTEXT,
 * HVM_PARAMS, then END or CHECKPOINT) and calls the callbacks in the order
 * libxc 4.17's xg_sr_save.c does; restore parses such a stream record by
 * record, reading no byte past libxc's own records (the parent reads the
 * libxl records between checkpoints from the same fd), and drives the
 * restore callbacks as xg_sr_restore.c does.
 *
 * Knobs (environment of the helper): COLO_XEN_FAKE_PAGES (guest pages,
 * default 8, max 4096), COLO_XEN_FAKE_ROUNDS (precopy rounds before
 * libxc's own limit stops them, default 5).
 */
#include "checkpoint/xen_helper.h"
#include "checkpoint/xen_seam.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "transport/record.h"
#include "transport/xen_stream.h"

#define FAKE_PAGE        4096u
#define FAKE_STORE_GFN   0xfeffcu
#define FAKE_CONSOLE_GFN 0xfeffdu
#define FAKE_REC_MAX     (8u << 20)
#define FAKE_BATCH       4u

struct fake_xch {
    xentoollog_logger *lg;
};

static unsigned env_num(const char *name, unsigned def, unsigned max)
{
    const char *s = getenv(name);
    char *end;
    unsigned long v;

    if (!s || !*s)
        return def;
    v = strtoul(s, &end, 10);
    if (*end || v == 0 || v > max)
        return def;
    return (unsigned)v;
}

static xc_interface *fake_open(xentoollog_logger *lg, char *why, size_t whysz)
{
    struct fake_xch *x = calloc(1, sizeof(*x));

    if (!x) {
        snprintf(why, whysz, "fake libxc: out of memory");
        errno = ENOMEM;
        return NULL;
    }
    x->lg = lg;
    return (xc_interface *)x;
}

static void fake_close(xc_interface *xch)
{
    free(xch);
}

static xentoollog_logger *lg_of(xc_interface *xch)
{
    return ((struct fake_xch *)xch)->lg;
}

/* Errors as libxc reports them: -1 with errno. */
static int fail(int err)
{
    errno = err;
    return -1;
}

static int wr(int fd, uint32_t type, const void *body, size_t len)
{
    int rc = xprt_rec_write_fd(fd, type, body, len);

    return rc < 0 ? fail(-rc) : 0;
}

/* ---- save -------------------------------------------------------------- */

/* One PAGE_DATA record for pfns [first, first+n): u32 count, u32 0,
 * count x u64 pfn (type NOTAB = 0), count pages. Page bytes encode pfn
 * and round so a restore can tell rounds apart. */
static int send_pages(int fd, uint64_t first, unsigned n, unsigned round)
{
    uint8_t head[8], pfns[FAKE_BATCH * 8];
    uint8_t pages[FAKE_BATCH][FAKE_PAGE];
    struct iovec iov[3];
    int rc;

    colo_put_le32(head, n);
    colo_put_le32(head + 4, 0);
    for (unsigned i = 0; i < n; i++) {
        colo_put_le64(pfns + 8 * i, first + i);
        memset(pages[i], (int)((first + i) * 16 + round), FAKE_PAGE);
    }
    iov[0] = (struct iovec){head, 8};
    iov[1] = (struct iovec){pfns, 8 * n};
    iov[2] = (struct iovec){pages, (size_t)n * FAKE_PAGE};
    rc = xprt_rec_writev_fd(fd, XPRT_LIBXC_PAGE_DATA, iov, 3);

    return rc < 0 ? fail(-rc) : 0;
}

static int send_range(int fd, unsigned from, unsigned to, unsigned round)
{
    for (unsigned p = from; p < to; p += FAKE_BATCH) {
        unsigned n = to - p < FAKE_BATCH ? to - p : FAKE_BATCH;

        if (send_pages(fd, p, n, round) < 0)
            return -1;
    }
    return 0;
}

static int send_headers(int fd)
{
    uint8_t ih[XPRT_LIBXC_IHDR_SIZE], dh[XPRT_LIBXC_DHDR_SIZE];
    /* libxc writes X86_HVM for PVH guests too. */
    struct xprt_libxc_dhdr d = {XPRT_LIBXC_DOM_X86_HVM, 12, 4, 17};
    uint8_t cpuid[24] = {0}, msr[16] = {0};
    int rc;

    xprt_libxc_ihdr_encode(ih, XPRT_LIBXC_VERSION);
    xprt_libxc_dhdr_encode(dh, &d);
    rc = colo_write_all(fd, ih, sizeof(ih));
    if (rc == 0)
        rc = colo_write_all(fd, dh, sizeof(dh));
    if (rc < 0)
        return fail(-rc);
    /* One CPUID leaf (leaf 0: 0xd, "GenuineIntel") and one MSR (0xce). */
    colo_put_le32(cpuid + 8, 0xd);
    colo_put_le32(cpuid + 12, 0x756e6547);
    colo_put_le32(cpuid + 16, 0x6c65746e);
    colo_put_le32(cpuid + 20, 0x49656e69);
    colo_put_le32(msr, 0xce);
    if (wr(fd, XPRT_LIBXC_X86_CPUID_POLICY, cpuid, sizeof(cpuid)) < 0 ||
        wr(fd, XPRT_LIBXC_X86_MSR_POLICY, msr, sizeof(msr)) < 0 ||
        wr(fd, XPRT_LIBXC_STATIC_DATA_END, NULL, 0) < 0)
        return -1;
    return 0;
}

/* x86 HVM end_of_checkpoint: TSC_INFO, HVM_CONTEXT, HVM_PARAMS. */
static int send_context(int fd, unsigned round)
{
    uint8_t tsc[24] = {0}, ctx[64], params[8 + 2 * 16];

    colo_put_le32(tsc, 0);           /* mode default */
    colo_put_le32(tsc + 4, 2000000); /* kHz */
    colo_put_le64(tsc + 8, 1000000u * (round + 1));
    memset(ctx, 0x40 + (int)round, sizeof(ctx));
    colo_put_le32(params, 2);
    colo_put_le32(params + 4, 0);
    colo_put_le64(params + 8, 1); /* HVM_PARAM_STORE_PFN */
    colo_put_le64(params + 16, FAKE_STORE_GFN);
    colo_put_le64(params + 24, 17); /* HVM_PARAM_CONSOLE_PFN */
    colo_put_le64(params + 32, FAKE_CONSOLE_GFN);
    if (wr(fd, XPRT_LIBXC_X86_TSC_INFO, tsc, sizeof(tsc)) < 0 ||
        wr(fd, XPRT_LIBXC_HVM_CONTEXT, ctx, sizeof(ctx)) < 0 ||
        wr(fd, XPRT_LIBXC_HVM_PARAMS, params, sizeof(params)) < 0)
        return -1;
    return 0;
}

/* COLO: the secondary's dirty pfns arrive on the back channel after each
 * suspend (libxc's merge of the secondary's bitmap). */
static int read_back_dirty(int recv_fd, unsigned *ret_count)
{
    uint8_t h[XPRT_REC_HDR_SIZE];
    uint32_t type, len;
    uint8_t *body;
    int rc;

    rc = colo_read_all(recv_fd, h, sizeof(h));
    if (rc < 0)
        return fail(-rc == 0 ? EIO : -rc);
    type = colo_get_le32(h);
    len = colo_get_le32(h + 4);
    if (type != XPRT_LIBXC_CHECKPOINT_DIRTY_PFN_LIST || len % 8 ||
        len > FAKE_REC_MAX)
        return fail(EINVAL);
    body = malloc(len ? len : 1);
    if (!body)
        return fail(ENOMEM);
    rc = colo_read_all(recv_fd, body, len);
    free(body);
    if (rc < 0)
        return fail(EIO);
    *ret_count = len / 8;
    return 0;
}

static int fake_save(xc_interface *xch, int io_fd, uint32_t dom, uint32_t flags,
                     struct save_callbacks *cb, xc_stream_type_t stream,
                     int recv_fd)
{
    xentoollog_logger *lg = lg_of(xch);
    unsigned pages = env_num("COLO_XEN_FAKE_PAGES", 8, 4096);
    unsigned rounds = env_num("COLO_XEN_FAKE_ROUNDS", 5, 1000);
    unsigned round = 0, dirty = pages, ckpt = 0;
    uint64_t written = 0;
    int rc = -1, r;

    /* libxc asserts these for checkpointed streams. */
    if (!cb || !cb->suspend || !cb->postcopy || !cb->checkpoint ||
        (stream == XC_STREAM_COLO && (!cb->wait_checkpoint || recv_fd < 0)))
        return fail(EINVAL);
    xtl_log(lg, XTL_INFO, -1, "xc", "fake save: domain %u, %u pages, %s", dom,
            pages,
            stream == XC_STREAM_PLAIN   ? "plain"
            : stream == XC_STREAM_REMUS ? "remus"
                                        : "colo");
    if (send_headers(io_fd) < 0)
        return -1;
    if (cb->switch_qemu_logdirty && cb->switch_qemu_logdirty(dom, 1, cb->data))
        return fail(EIO);

    if (flags & XCFLAGS_LIVE) {
        /* Precopy: the policy is asked before the first pass and after
         * each; dirty pages halve per pass in this fake guest. */
        for (;;) {
            struct precopy_stats st = {round, written, (long)dirty};
            int pol = cb->precopy_policy
                          ? cb->precopy_policy(st, cb->data)
                          : (round >= rounds ? XGS_POLICY_STOP_AND_COPY
                                             : XGS_POLICY_CONTINUE_PRECOPY);

            if (pol == XGS_POLICY_ABORT) {
                xtl_log(lg, XTL_ERROR, -1, "xc",
                        "Abandoning migration by precopy policy request");
                errno = ECANCELED;
                goto out;
            }
            if (pol == XGS_POLICY_STOP_AND_COPY || round >= rounds)
                break;
            if (send_range(io_fd, 0, dirty, round) < 0)
                goto out;
            written += dirty;
            xtl_progress(lg, "xc", "Frames iteration", written,
                         (unsigned long)pages * (round + 1));
            round++;
            dirty = dirty > 1 ? dirty / 2 : 1;
        }
    }

    for (;;) {
        /* suspend_and_send_dirty */
        if (cb->suspend(cb->data) != 1) {
            xtl_log(lg, XTL_ERROR, -1, "xc", "Save callback suspend() failed");
            errno = EIO;
            goto out;
        }
        if (stream == XC_STREAM_COLO && ckpt > 0) {
            unsigned sec;

            if (read_back_dirty(recv_fd, &sec) < 0)
                goto out;
            xtl_log(lg, XTL_DETAIL, -1, "xc", "secondary dirty pfns: %u", sec);
        }
        if (send_range(io_fd, 0, (flags & XCFLAGS_LIVE) ? dirty : pages,
                       round) < 0 ||
            send_context(io_fd, round) < 0)
            goto out;
        round++;
        if (stream == XC_STREAM_PLAIN)
            break;
        if (wr(io_fd, XPRT_LIBXC_CHECKPOINT, NULL, 0) < 0)
            goto out;
        ckpt++;
        if (stream == XC_STREAM_COLO) {
            if (!cb->checkpoint(cb->data)) {
                errno = EIO;
                goto out;
            }
        }
        r = cb->postcopy(cb->data);
        if (r <= 0) {
            errno = EIO;
            goto out;
        }
        r = stream == XC_STREAM_COLO ? cb->wait_checkpoint(cb->data)
                                     : cb->checkpoint(cb->data);
        if (r <= 0) { /* 0: the toolstack ended checkpointing */
            rc = r == 0 ? 0 : -1;
            goto logdirty_off;
        }
        dirty = 2; /* a quiet guest between checkpoints */
    }
    if (wr(io_fd, XPRT_LIBXC_END, NULL, 0) < 0)
        goto out;
    rc = 0;
logdirty_off:
    if (cb->switch_qemu_logdirty)
        cb->switch_qemu_logdirty(dom, 0, cb->data);
    if (rc == 0)
        xtl_log(lg, XTL_INFO, -1, "xc", "fake save: done after %u rounds",
                round);
    return rc;
out:
    if (cb->switch_qemu_logdirty) {
        int e = errno;

        cb->switch_qemu_logdirty(dom, 0, cb->data);
        errno = e;
    }
    return -1;
}

/* ---- restore ----------------------------------------------------------- */

/* Read exactly n bytes; 0 ok, 1 clean EOF before the first byte, -1. */
static int rd(int fd, void *p, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t k = read(fd, (uint8_t *)p + got, n - got);

        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0) {
            if (got == 0)
                return 1;
            errno = EIO;
            return -1;
        }
        got += (size_t)k;
    }
    return 0;
}

static int check_pages(const uint8_t *b, uint32_t len, unsigned *ret_pages)
{
    uint32_t count;

    if (len < 8)
        return fail(EINVAL);
    count = colo_get_le32(b);
    if (count == 0 || (uint64_t)count * (8 + FAKE_PAGE) + 8 != len)
        return fail(EINVAL);
    *ret_pages += count;
    return 0;
}

static int fake_restore(xc_interface *xch, int io_fd, uint32_t dom,
                        unsigned int store_evtchn, unsigned long *store_mfn,
                        uint32_t store_domid, unsigned int console_evtchn,
                        unsigned long *console_mfn, uint32_t console_domid,
                        xc_stream_type_t stream, struct restore_callbacks *cb,
                        int send_back_fd)
{
    xentoollog_logger *lg = lg_of(xch);
    uint8_t ih[XPRT_LIBXC_IHDR_SIZE], dh[XPRT_LIBXC_DHDR_SIZE];
    struct xprt_libxc_dhdr d;
    uint8_t *body = NULL;
    unsigned pages = 0, ckpts = 0;
    bool static_done = false;
    int rc = -1, r;

    (void)store_evtchn;
    (void)store_domid;
    (void)console_evtchn;
    (void)console_domid;
    if (!cb ||
        (stream != XC_STREAM_PLAIN &&
         (!cb->suspend || !cb->postcopy || !cb->checkpoint ||
          !cb->wait_checkpoint || !cb->restore_results)) ||
        (stream == XC_STREAM_COLO && send_back_fd < 0))
        return fail(EINVAL);
    if (rd(io_fd, ih, sizeof(ih)) != 0 || xprt_libxc_ihdr_check(ih, NULL) < 0 ||
        rd(io_fd, dh, sizeof(dh)) != 0 || xprt_libxc_dhdr_decode(dh, &d) < 0) {
        xtl_log(lg, XTL_ERROR, -1, "xc", "bad libxc image/domain header");
        return fail(EINVAL);
    }
    xtl_log(lg, XTL_INFO, -1, "xc", "fake restore: domain %u, type %u", dom,
            d.type);
    for (;;) {
        uint8_t h[XPRT_REC_HDR_SIZE], pad[8];
        uint32_t type, len;

        r = rd(io_fd, h, sizeof(h));
        if (r == 1 && ckpts > 0 && stream != XC_STREAM_PLAIN) {
            /* The primary went away between checkpoints: fail over to
             * the last complete one (libxc's BROKEN_CHANNEL path). */
            xtl_log(lg, XTL_INFO, -1, "xc", "fake restore: failover");
            break;
        }
        if (r != 0) {
            if (r == 1)
                errno = EIO;
            goto out;
        }
        type = colo_get_le32(h);
        len = colo_get_le32(h + 4);
        if (len > FAKE_REC_MAX) {
            errno = EFBIG;
            goto out;
        }
        free(body);
        body = malloc(len + 8);
        if (!body)
            goto out;
        if (rd(io_fd, body, len) != 0 ||
            rd(io_fd, pad, (size_t)(xprt_rec_padded_len(len) - len)) != 0)
            goto out;
        switch (type) {
        case XPRT_LIBXC_PAGE_DATA:
            if (check_pages(body, len, &pages) < 0)
                goto out;
            break;
        case XPRT_LIBXC_STATIC_DATA_END:
            static_done = true;
            if (cb->static_data_done && cb->static_data_done(0, cb->data)) {
                errno = EIO;
                goto out;
            }
            break;
        case XPRT_LIBXC_CHECKPOINT:
            if (stream == XC_STREAM_PLAIN) {
                xtl_log(lg, XTL_ERROR, -1, "xc",
                        "Found checkpoint in non-checkpointed stream");
                errno = EINVAL;
                goto out;
            }
            ckpts++;
            r = cb->checkpoint(cb->data);
            if (r == XGR_CHECKPOINT_FAILOVER)
                goto complete;
            if (r != XGR_CHECKPOINT_SUCCESS) {
                errno = EIO;
                goto out;
            }
            if (stream == XC_STREAM_COLO) {
                uint8_t pfn[8];
                int wrc;

                if (ckpts == 1)
                    cb->restore_results(FAKE_STORE_GFN, FAKE_CONSOLE_GFN,
                                        cb->data);
                if (cb->postcopy(cb->data) <= 0 ||
                    cb->wait_checkpoint(cb->data) <= 0 ||
                    cb->suspend(cb->data) <= 0) {
                    errno = EIO;
                    goto out;
                }
                /* The secondary's dirty pages since it resumed. */
                colo_put_le64(pfn, 1);
                wrc = xprt_rec_write_fd(send_back_fd,
                                        XPRT_LIBXC_CHECKPOINT_DIRTY_PFN_LIST,
                                        pfn, sizeof(pfn));
                if (wrc < 0) {
                    errno = -wrc;
                    goto out;
                }
            }
            break;
        case XPRT_LIBXC_END:
            goto complete;
        default:
            break; /* contexts, policies, params: accepted as they come */
        }
    }
complete:
    if (!static_done && cb->static_data_done &&
        cb->static_data_done(XGR_SDD_MISSING_CPUID | XGR_SDD_MISSING_MSR,
                             cb->data)) {
        errno = EIO;
        goto out;
    }
    if (cb->restore_results)
        cb->restore_results(FAKE_STORE_GFN, FAKE_CONSOLE_GFN, cb->data);
    *store_mfn = FAKE_STORE_GFN;
    *console_mfn = FAKE_CONSOLE_GFN;
    xtl_log(lg, XTL_INFO, -1, "xc", "fake restore: %u pages, %u checkpoints",
            pages, ckpts);
    rc = 0;
out:
    if (rc) {
        int e = errno ? errno : EIO;

        xtl_log(lg, XTL_ERROR, e, "xc", "fake restore failed");
        errno = e;
    }
    free(body);
    return rc;
}

static const struct ckpt_xen_guest_ops fake_ops = {
    .name = "fake-libxc",
    .open = fake_open,
    .close = fake_close,
    .save = fake_save,
    .restore = fake_restore,
};

const struct ckpt_xen_guest_ops *ckpt_xen_fake_ops(void)
{
    return &fake_ops;
}
