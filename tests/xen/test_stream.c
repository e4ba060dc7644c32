/*
 * The fake libxc behind the real helper process and the real parent
 * object: save produces a libxl v2 stream (colo writes the libxl layer,
 * the helper the libxc layer on the same fd), checked by the transport
 * reader's layer tracking and by Debian's verify-stream-v2; restore
 * consumes such streams and reports restore_results.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checkpoint/xen_helper.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "transport/record.h"
#include "transport/xen_stream.h"
#include "xen_tutil.h"

static const char emu[] = "QEVM-device-state";

/* Read all of fd through the transport reader, one byte at a time; the
 * item sequence goes to seq. Returns the reader's final rc (eof). */
static int read_layers(int fd, enum xprt_format fmt, char *seq, size_t sz,
                       int *ret_pages)
{
    struct xprt_reader r;
    struct colo_buf b;
    uint8_t tmp[65536];
    ssize_t n;
    size_t off = 0;
    int rc = 0;

    seq[0] = '\0';
    *ret_pages = 0;
    colo_buf_init(&b, 0);
    lseek(fd, 0, SEEK_SET);
    while ((n = read(fd, tmp, sizeof(tmp))) > 0)
        colo_buf_append(&b, tmp, (size_t)n);
    xprt_reader_init(&r, fmt, 0);
    while (off < b.len) {
        struct xprt_item it;
        ssize_t k = xprt_reader_push(&r, b.data + off, 1, &it);

        if (k < 0) {
            rc = (int)k;
            cr_log_error("reader: %s", xprt_reader_why(&r));
            goto out;
        }
        off += (size_t)k;
        if (it.kind == XPRT_ITEM_RECORD) {
            size_t l = strlen(seq);

            if (it.layer == XPRT_LAYER_LIBXC &&
                it.type == XPRT_LIBXC_PAGE_DATA) {
                (*ret_pages)++;
                continue; /* too many to list */
            }
            snprintf(seq + l, sz - l, "%s:%s ", xprt_layer_name(it.layer),
                     xprt_rec_type_name(it.layer, it.type));
        } else if (it.kind == XPRT_ITEM_HEADER) {
            size_t l = strlen(seq);

            snprintf(seq + l, sz - l, "%s:hdr ", xprt_layer_name(it.layer));
        }
    }
    rc = xprt_reader_eof(&r);
out:
    xprt_reader_dispose(&r);
    colo_buf_dispose(&b);
    return rc;
}

static void plain_save(int fd, struct tctx *t)
{
    struct ckpt_xen_helper_params p = {
        .op = CKPT_XEN_OP_SAVE,
        .stream = CKPT_XEN_STREAM_PLAIN,
        .domid = 7,
        .io_fd = fd,
        .back_fd = -1,
        .save_flags = CKPT_XEN_SAVE_LIVE,
    };

    cr_assert_eq(ckpt_xen_stream_begin(fd), 0);
    tctx_start(t, NULL, &p);
    tctx_run(t, 20000);
    cr_assert_eq(t->rc, 0, "%s\nlogs:\n%s", t->res.error, t->logs);
    cr_assert_eq(ckpt_xen_stream_end(fd, emu, sizeof(emu)), 0);
}

Test(stream, plain_save_layers_and_oracle)
{
    struct tctx t;
    int fd = tutil_tmpfile(), pages, orc;
    char seq[4096];

    tctx_init(&t);
    plain_save(fd, &t);
    /* libxc's order: logdirty on, precopy policy before and after each
     * pass (two passes, then stop-and-copy), suspend, logdirty off. */
    cr_assert_str_eq(t.seq,
                     "logdirty1 precopy_policy precopy_policy "
                     "precopy_policy suspend logdirty0 ",
                     "%s", t.seq);
    cr_assert_gt(t.nlogs, 0);
    cr_assert(strstr(t.logs, "fake save: domain 7"), "%s", t.logs);
    cr_assert_gt(t.nprogress, 0);
    cr_assert_eq(t.res.exit_status, 0);
    cr_assert(t.res.got_done);

    cr_assert_eq(read_layers(fd, XPRT_FMT_LIBXL, seq, sizeof(seq), &pages), 0,
                 "%s", seq);
    cr_assert_str_eq(seq,
                     "libxl:hdr libxl:LIBXC_CONTEXT libxc:hdr libxc:hdr "
                     "libxc:X86_CPUID_POLICY libxc:X86_MSR_POLICY "
                     "libxc:STATIC_DATA_END libxc:X86_TSC_INFO "
                     "libxc:HVM_CONTEXT libxc:HVM_PARAMS libxc:END "
                     "libxl:EMULATOR_CONTEXT libxl:END ",
                     "%s", seq);
    /* 8 pages + 4 dirty pages in pass 2 + 2 after suspend, 4 per record */
    cr_assert_eq(pages, 2 + 1 + 1, "pages %d", pages);

    orc = tutil_oracle(fd, "libxl");
    if (orc == -1) {
        printf("not checked here: verify-stream-v2 not installed "
               "(xen-utils-4.17)\n");
    } else {
        cr_assert_eq(orc, 0, "verify-stream-v2 rejected the stream");
        /* The oracle is not a rubber stamp: flip a reserved byte of the
         * libxc image header (offset 16 + 8 + 18). */
        uint8_t bad = 1;

        cr_assert_eq(pwrite(fd, &bad, 1, 16 + 8 + 18), 1);
        cr_assert_neq(tutil_oracle(fd, "libxl"), 0);
    }
    close(fd);
    tctx_dispose(&t);
}

Test(stream, xl_save_file_oracle)
{
    struct tctx t;
    struct colo_buf b;
    const char *json = "{\"c_info\":{\"name\":\"pvh1\",\"type\":\"pvh\"}}";
    int fd = tutil_tmpfile(), pages, orc;
    char seq[4096];

    colo_buf_init(&b, 0);
    cr_assert_eq(xprt_xl_hdr_write(&b, json, strlen(json)), 0);
    cr_assert_eq(colo_write_all(fd, b.data, b.len), 0);
    colo_buf_dispose(&b);
    tctx_init(&t);
    plain_save(fd, &t);
    cr_assert_eq(read_layers(fd, XPRT_FMT_XL, seq, sizeof(seq), &pages), 0,
                 "%s", seq);
    cr_assert(!strncmp(seq, "xl:hdr libxl:hdr", 16), "%s", seq);
    orc = tutil_oracle(fd, "xl");
    if (orc == -1)
        printf("not checked here: verify-stream-v2 not installed "
               "(xen-utils-4.17)\n");
    else
        cr_assert_eq(orc, 0, "verify-stream-v2 rejected the xl file");
    close(fd);
    tctx_dispose(&t);
}

/* REMUS: the owner writes the libxl records of each checkpoint from inside
 * the checkpoint callback, as libxl's stream writer does. */
static int remus_reply(struct tctx *t, const struct ckpt_xen_call *c)
{
    if (c->cb == CKPT_XEN_CB_CHECKPOINT) {
        cr_assert_eq(ckpt_xen_stream_checkpoint_end(t->io_fd, emu, sizeof(emu)),
                     0);
        return t->ncalls[CKPT_XEN_CB_CHECKPOINT] < 3 ? 1 : 0;
    }
    return tctx_default_reply(c);
}

static void remus_save(int fd, struct tctx *t)
{
    struct ckpt_xen_helper_params p = {
        .op = CKPT_XEN_OP_SAVE,
        .stream = CKPT_XEN_STREAM_REMUS,
        .domid = 9,
        .io_fd = fd,
        .back_fd = -1,
        .save_flags = CKPT_XEN_SAVE_LIVE,
    };

    t->io_fd = fd;
    t->on_call = remus_reply;
    cr_assert_eq(ckpt_xen_stream_begin(fd), 0);
    tctx_start(t, NULL, &p);
    tctx_run(t, 20000);
    cr_assert_eq(t->rc, 0, "%s\nlogs:\n%s", t->res.error, t->logs);
}

Test(stream, remus_save_interleaved_layers)
{
    struct tctx t;
    int fd = tutil_tmpfile(), pages;
    char seq[8192];
    const char *ck = "libxc:X86_TSC_INFO libxc:HVM_CONTEXT libxc:HVM_PARAMS "
                     "libxc:CHECKPOINT libxl:EMULATOR_CONTEXT "
                     "libxl:CHECKPOINT_END ";
    char want[4096];

    tctx_init(&t);
    remus_save(fd, &t);
    cr_assert_str_eq(t.seq,
                     "logdirty1 precopy_policy precopy_policy "
                     "precopy_policy suspend postcopy checkpoint suspend "
                     "postcopy checkpoint suspend postcopy checkpoint "
                     "logdirty0 ",
                     "%s", t.seq);
    /* A checkpointed stream stops without END once the toolstack ends
     * checkpointing: the reader says so at EOF, after every record
     * parsed with the right layer. */
    cr_assert_eq(read_layers(fd, XPRT_FMT_LIBXL, seq, sizeof(seq), &pages),
                 -COLO_ESTREAM_TRUNCATED, "%s", seq);
    snprintf(want, sizeof(want),
             "libxl:hdr libxl:LIBXC_CONTEXT libxc:hdr libxc:hdr "
             "libxc:X86_CPUID_POLICY libxc:X86_MSR_POLICY "
             "libxc:STATIC_DATA_END %s%s%s",
             ck, ck, ck);
    cr_assert_str_eq(seq, want);
    cr_assert_gt(pages, 4);
    close(fd);
    tctx_dispose(&t);
}

/* ---- restore ----------------------------------------------------------- */

/* Skip the libxl header and LIBXC_CONTEXT as libxl's reader does before it
 * starts the helper. */
static void read_libxl_prefix(int fd)
{
    uint8_t b[XPRT_LIBXL_HDR_SIZE + XPRT_REC_HDR_SIZE];

    lseek(fd, 0, SEEK_SET);
    cr_assert_eq(colo_read_all(fd, b, sizeof(b)), 0);
    cr_assert_eq(xprt_libxl_hdr_check(b, NULL), 0);
    cr_assert_eq(colo_get_le32(b + 16), XPRT_LIBXL_LIBXC_CONTEXT);
}

/* Read one libxl record; returns its type. */
static uint32_t read_libxl_rec(int fd)
{
    uint8_t h[8], body[256];
    uint32_t type, len;

    cr_assert_eq(colo_read_all(fd, h, 8), 0);
    type = colo_get_le32(h);
    len = colo_get_le32(h + 4);
    cr_assert_leq(xprt_rec_padded_len(len), sizeof(body));
    cr_assert_eq(colo_read_all(fd, body, xprt_rec_padded_len(len)), 0);
    if (type == XPRT_LIBXL_EMULATOR_CONTEXT)
        cr_assert(!memcmp(body + 8, emu, sizeof(emu)));
    return type;
}

static struct ckpt_xen_helper_params restore_params(int fd,
                                                    enum ckpt_xen_stream s)
{
    return (struct ckpt_xen_helper_params){
        .op = CKPT_XEN_OP_RESTORE,
        .stream = s,
        .domid = 12,
        .io_fd = fd,
        .back_fd = -1,
        .store_evtchn = 1,
        .console_evtchn = 2,
    };
}

Test(stream, plain_restore)
{
    struct tctx t;
    struct ckpt_xen_helper_params p;
    int fd = tutil_tmpfile();

    tctx_init(&t);
    plain_save(fd, &t);
    tctx_dispose(&t);

    tctx_init(&t);
    read_libxl_prefix(fd);
    p = restore_params(fd, CKPT_XEN_STREAM_PLAIN);
    tctx_start(&t, NULL, &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, 0, "%s\nlogs:\n%s", t.res.error, t.logs);
    cr_assert_str_eq(t.seq, "static_data_done restore_results ", "%s", t.seq);
    cr_assert_eq(t.nresults, 1);
    cr_assert_eq(t.store_gfn, 0xfeffc);
    cr_assert_eq(t.res.store_gfn, 0xfeffc);
    cr_assert_eq(t.res.console_gfn, 0xfeffd);
    cr_assert(strstr(t.logs, "fake restore: 14 pages, 0 checkpoints"), "%s",
              t.logs);
    /* libxc read exactly its own records: libxl's follow. */
    cr_assert_eq(read_libxl_rec(fd), XPRT_LIBXL_EMULATOR_CONTEXT);
    cr_assert_eq(read_libxl_rec(fd), XPRT_LIBXL_END);
    close(fd);
    tctx_dispose(&t);
}

/* On each CHECKPOINT the owner reads libxl's records up to CHECKPOINT_END
 * (libxl_stream_read's job) before answering. */
static int restore_ckpt_reply(struct tctx *t, const struct ckpt_xen_call *c)
{
    if (c->cb == CKPT_XEN_CB_CHECKPOINT) {
        cr_assert_eq(read_libxl_rec(t->io_fd), XPRT_LIBXL_EMULATOR_CONTEXT);
        cr_assert_eq(read_libxl_rec(t->io_fd), XPRT_LIBXL_CHECKPOINT_END);
        return 1; /* XGR_CHECKPOINT_SUCCESS */
    }
    return c->cb == CKPT_XEN_CB_STATIC_DATA_DONE ? 0 : 1;
}

Test(stream, remus_restore_fails_over_at_eof)
{
    struct tctx t;
    struct ckpt_xen_helper_params p;
    int fd = tutil_tmpfile();

    tctx_init(&t);
    remus_save(fd, &t);
    tctx_dispose(&t);

    tctx_init(&t);
    read_libxl_prefix(fd);
    t.io_fd = fd;
    t.on_call = restore_ckpt_reply;
    p = restore_params(fd, CKPT_XEN_STREAM_REMUS);
    tctx_start(&t, NULL, &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, 0, "%s\nlogs:\n%s", t.res.error, t.logs);
    cr_assert_str_eq(t.seq,
                     "static_data_done checkpoint checkpoint checkpoint "
                     "restore_results ",
                     "%s", t.seq);
    cr_assert(strstr(t.logs, "fake restore: failover"), "%s", t.logs);
    cr_assert(strstr(t.logs, "3 checkpoints"), "%s", t.logs);
    close(fd);
    tctx_dispose(&t);
}

Test(stream, plain_restore_of_checkpointed_stream_fails)
{
    struct tctx t;
    struct ckpt_xen_helper_params p;
    int fd = tutil_tmpfile();

    tctx_init(&t);
    remus_save(fd, &t);
    tctx_dispose(&t);

    tctx_init(&t);
    read_libxl_prefix(fd);
    p = restore_params(fd, CKPT_XEN_STREAM_PLAIN);
    tctx_start(&t, NULL, &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, -COLO_EXEN, "rc %d", t.rc);
    cr_assert_eq(t.res.exit_status, 1);
    cr_assert(strstr(t.res.error, "restore of domain 12 failed"), "%s",
              t.res.error);
    cr_assert(strstr(t.logs, "non-checkpointed"), "%s", t.logs);
    close(fd);
    tctx_dispose(&t);
}

/* ---- COLO: a primary save helper and a secondary restore helper -------- */

/*
 * Both helpers on one loop. Stream P->S over one socketpair, the back
 * channel S->P over another. The primary's owner writes the libxl records
 * of each checkpoint from its checkpoint callback; the secondary's owner
 * reads exactly those records (without blocking the loop) before it
 * answers its checkpoint callback.
 */
struct colo_pair {
    struct tctx p, s;
    int stream[2], back[2];
    struct event *ev_s; /* secondary: waiting for libxl records */
    size_t want, got;   /* bytes of libxl records to read */
    uint8_t buf[256];
};

static int colo_p_reply(struct tctx *t, const struct ckpt_xen_call *c)
{
    struct colo_pair *cp = t->user;

    if (c->cb == CKPT_XEN_CB_CHECKPOINT) {
        cr_assert_eq(
            ckpt_xen_stream_checkpoint_end(cp->stream[0], emu, sizeof(emu)), 0);
        return 1;
    }
    if (c->cb == CKPT_XEN_CB_WAIT_CHECKPOINT)
        return t->ncalls[c->cb] < 3 ? 1 : 0;
    return tctx_default_reply(c);
}

static void colo_s_read(evutil_socket_t fd, short what, void *arg)
{
    struct colo_pair *cp = arg;
    ssize_t n;

    (void)what;
    n = read(fd, cp->buf + cp->got, cp->want - cp->got);
    cr_assert_gt(n, 0);
    cp->got += (size_t)n;
    if (cp->got < cp->want)
        return;
    event_del(cp->ev_s);
    cr_assert_eq(colo_get_le32(cp->buf), XPRT_LIBXL_EMULATOR_CONTEXT);
    cr_assert_eq(colo_get_le32(cp->buf + cp->want - 8),
                 XPRT_LIBXL_CHECKPOINT_END);
    cr_assert_eq(ckpt_xen_helper_reply(cp->s.h, 1), 0);
}

static int colo_s_reply(struct tctx *t, const struct ckpt_xen_call *c)
{
    struct colo_pair *cp = t->user;

    if (c->cb == CKPT_XEN_CB_CHECKPOINT) {
        cp->want = 8 + xprt_rec_padded_len(8 + sizeof(emu)) + 8;
        cp->got = 0;
        event_add(cp->ev_s, NULL);
        return TUTIL_NO_REPLY;
    }
    return c->cb == CKPT_XEN_CB_STATIC_DATA_DONE ? 0 : 1;
}

Test(stream, colo_primary_and_secondary)
{
    struct colo_pair cp;
    struct ckpt_xen_helper_params pp = {
        .op = CKPT_XEN_OP_SAVE, .stream = CKPT_XEN_STREAM_COLO, .domid = 4};
    struct ckpt_xen_helper_params sp;
    uint8_t pre[XPRT_LIBXL_HDR_SIZE + XPRT_REC_HDR_SIZE];
    const char *ck = "checkpoint postcopy wait_checkpoint ";
    char want[1024];

    memset(&cp, 0, sizeof(cp));
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cp.stream),
                 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cp.back),
                 0);
    tctx_init(&cp.p);
    tctx_init_on(&cp.s, cp.p.base);
    cp.p.user = cp.s.user = &cp;
    cp.p.on_call = colo_p_reply;
    cp.s.on_call = colo_s_reply;
    cp.ev_s = event_new(cp.p.base, cp.stream[1], EV_READ | EV_PERSIST,
                        colo_s_read, &cp);

    /* Primary: libxl prefix, then the save helper (back channel in). */
    cr_assert_eq(ckpt_xen_stream_begin(cp.stream[0]), 0);
    pp.io_fd = cp.stream[0];
    pp.back_fd = cp.back[0];
    tctx_start(&cp.p, NULL, &pp);
    /* Secondary: consume the prefix, then the restore helper. */
    cr_assert_eq(colo_read_all(cp.stream[1], pre, sizeof(pre)), 0);
    cr_assert_eq(xprt_libxl_hdr_check(pre, NULL), 0);
    sp = restore_params(cp.stream[1], CKPT_XEN_STREAM_COLO);
    sp.back_fd = cp.back[1];
    tctx_start(&cp.s, NULL, &sp);

    tctx_run(&cp.p, 20000);
    cr_assert_eq(cp.p.rc, 0, "%s\n%s", cp.p.res.error, cp.p.logs);
    snprintf(want, sizeof(want),
             "logdirty1 suspend %ssuspend %ssuspend %s"
             "logdirty0 ",
             ck, ck, ck);
    cr_assert_str_eq(cp.p.seq, want);
    cr_assert(strstr(cp.p.logs, "secondary dirty pfns: 1"), "%s", cp.p.logs);
    /* The primary is done: its end of the stream closes, the secondary
     * fails over to the last checkpoint. */
    shutdown(cp.stream[0], SHUT_WR);
    tctx_run(&cp.s, 20000);
    cr_assert_eq(cp.s.rc, 0, "%s\n%s", cp.s.res.error, cp.s.logs);
    cr_assert_str_eq(cp.s.seq,
                     "static_data_done checkpoint restore_results postcopy "
                     "wait_checkpoint suspend checkpoint postcopy "
                     "wait_checkpoint suspend checkpoint postcopy "
                     "wait_checkpoint suspend restore_results ",
                     "%s", cp.s.seq);
    cr_assert(strstr(cp.s.logs, "3 checkpoints"), "%s", cp.s.logs);
    event_free(cp.ev_s);
    tctx_dispose(&cp.s);
    tctx_dispose(&cp.p);
    for (int i = 0; i < 2; i++) {
        close(cp.stream[i]);
        close(cp.back[i]);
    }
}

/* ---- failures reported by libxc ----------------------------------------- */

static int abort_precopy(struct tctx *t, const struct ckpt_xen_call *c)
{
    (void)t;
    if (c->cb == CKPT_XEN_CB_PRECOPY_POLICY)
        return c->b >= 1 ? -1 : 0; /* XGS_POLICY_ABORT after one pass */
    return tctx_default_reply(c);
}

Test(stream, precopy_policy_abort_fails_save)
{
    struct tctx t;
    int fd = tutil_tmpfile();
    struct ckpt_xen_helper_params p = {.op = CKPT_XEN_OP_SAVE,
                                       .stream = CKPT_XEN_STREAM_PLAIN,
                                       .domid = 5,
                                       .io_fd = fd,
                                       .back_fd = -1,
                                       .save_flags = CKPT_XEN_SAVE_LIVE};

    tctx_init(&t);
    t.on_call = abort_precopy;
    t.free_in_done = true;
    tctx_start(&t, NULL, &p);
    tctx_run(&t, 20000);
    cr_assert_null(t.h); /* freed inside done, nothing fired after */
    cr_assert_eq(t.rc, -COLO_EXEN, "rc %d", t.rc);
    cr_assert_eq(t.ncalls[CKPT_XEN_CB_SUSPEND], 0);
    cr_assert_eq(t.res.helper_errno, ECANCELED);
    cr_assert(strstr(t.logs, "precopy policy"), "%s", t.logs);
    cr_assert(strstr(t.seq, "logdirty0"), "%s", t.seq); /* cleaned up */
    close(fd);
    tctx_dispose(&t);
}

Test(stream, restore_of_garbage_fails)
{
    struct tctx t;
    struct ckpt_xen_helper_params p;
    int fd = tutil_tmpfile();
    uint8_t junk[64];

    memset(junk, 0x5a, sizeof(junk));
    cr_assert_eq(colo_write_all(fd, junk, sizeof(junk)), 0);
    lseek(fd, 0, SEEK_SET);
    tctx_init(&t);
    p = restore_params(fd, CKPT_XEN_STREAM_PLAIN);
    tctx_start(&t, NULL, &p);
    tctx_run(&t, 20000);
    cr_assert_eq(t.rc, -COLO_EXEN, "rc %d", t.rc);
    cr_assert(strstr(t.logs, "bad libxc image/domain header"), "%s", t.logs);
    cr_assert_eq(t.nresults, 0);
    close(fd);
    tctx_dispose(&t);
}
