/*
 * Xen formats: libxl v2 streams with libxc segments, checkpointed streams
 * with interleaved layers, the COLO back channel, the xl save header, and
 * Debian's verify-stream-v2 as an external oracle.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "transport/record.h"
#include "transport/xen_stream.h"

#define ORACLE "/usr/lib/xen-4.17/bin/verify-stream-v2"

static void emu_rec(struct colo_buf *b, uint32_t type, const char *data,
                    size_t len)
{
    uint8_t h[8];
    struct iovec iov[2] = {{h, 8}, {(void *)data, len}};

    xprt_emulator_hdr_encode(h, XPRT_EMULATOR_QEMU_UPSTREAM, 0);
    cr_assert_eq(xprt_rec_writev_buf(b, type, iov, 2), 0);
}

static void page_data(struct colo_buf *b, uint64_t pfn)
{
    uint8_t head[16], page[4096];
    struct iovec iov[2] = {{head, 16}, {page, 4096}};

    colo_put_le32(head, 1);
    colo_put_le32(head + 4, 0);
    colo_put_le64(head + 8, pfn);
    memset(page, (int)pfn, sizeof(page));
    cr_assert_eq(xprt_rec_writev_buf(b, XPRT_LIBXC_PAGE_DATA, iov, 2), 0);
}

/* A plain libxl stream: header, LIBXC_CONTEXT + a libxc segment, emulator
 * records, END. */
static void plain_stream(struct colo_buf *b, bool with_page)
{
    uint8_t hdr[XPRT_LIBXL_HDR_SIZE];
    uint8_t ih[XPRT_LIBXC_IHDR_SIZE], dh[XPRT_LIBXC_DHDR_SIZE];
    struct xprt_libxc_dhdr d = {XPRT_LIBXC_DOM_X86_HVM, 12, 4, 17};

    xprt_libxl_hdr_encode(hdr);
    colo_buf_append(b, hdr, sizeof(hdr));
    cr_assert_eq(xprt_rec_write_buf(b, XPRT_LIBXL_LIBXC_CONTEXT, NULL, 0), 0);
    if (with_page) {
        xprt_libxc_ihdr_encode(ih, 3);
        xprt_libxc_dhdr_encode(dh, &d);
        colo_buf_append(b, ih, sizeof(ih));
        colo_buf_append(b, dh, sizeof(dh));
        page_data(b, 5);
        xprt_rec_write_buf(b, XPRT_LIBXC_END, NULL, 0);
    } else {
        cr_assert_eq(xprt_libxc_min_stream(b), 0);
    }
    emu_rec(b, XPRT_LIBXL_EMULATOR_CONTEXT, "qemu-blob", 9);
    cr_assert_eq(xprt_rec_write_buf(b, XPRT_LIBXL_END, NULL, 0), 0);
}

/* Run all bytes through a reader, step bytes at a time, recording the
 * (layer,type,kind) sequence into seq. */
static int run(enum xprt_format fmt, const struct colo_buf *b, size_t step,
               char *seq, size_t seqsz, char *why, size_t whysz)
{
    struct xprt_reader r;
    size_t off = 0;
    int rc = 0;

    seq[0] = '\0';
    xprt_reader_init(&r, fmt, 0);
    while (off < b->len) {
        size_t chunk = step && step < b->len - off ? step : b->len - off;

        while (chunk) {
            struct xprt_item it;
            ssize_t n = xprt_reader_push(&r, b->data + off, chunk, &it);

            if (n < 0) {
                rc = (int)n;
                goto out;
            }
            off += (size_t)n;
            chunk -= (size_t)n;
            if (it.kind == XPRT_ITEM_RECORD) {
                size_t l = strlen(seq);
                snprintf(seq + l, seqsz - l, "%s:%s ",
                         xprt_layer_name(it.layer),
                         xprt_rec_type_name(it.layer, it.type));
            } else if (it.kind == XPRT_ITEM_HEADER) {
                size_t l = strlen(seq);
                snprintf(seq + l, seqsz - l, "%s:hdr ",
                         xprt_layer_name(it.layer));
            }
        }
    }
    rc = xprt_reader_eof(&r);
out:
    snprintf(why, whysz, "%s", xprt_reader_why(&r));
    xprt_reader_dispose(&r);
    return rc;
}

Test(xen, plain_libxl_stream_layers)
{
    struct colo_buf b;
    char seq[1024], why[256];

    colo_buf_init(&b, 0);
    plain_stream(&b, true);
    cr_assert_eq(run(XPRT_FMT_LIBXL, &b, 0, seq, sizeof(seq), why, sizeof(why)),
                 0, "%s", why);
    cr_assert_str_eq(seq, "libxl:hdr libxl:LIBXC_CONTEXT libxc:hdr libxc:hdr "
                          "libxc:PAGE_DATA libxc:END libxl:EMULATOR_CONTEXT "
                          "libxl:END ");
    cr_assert_eq(run(XPRT_FMT_AUTO, &b, 1, seq, sizeof(seq), why, sizeof(why)),
                 0, "%s", why);
    colo_buf_dispose(&b);
}

/* Checkpointed: libxc CHECKPOINT hands over to libxl until CHECKPOINT_END,
 * then libxc records continue without headers. */
static void checkpointed_stream(struct colo_buf *b)
{
    uint8_t hdr[XPRT_LIBXL_HDR_SIZE];
    uint8_t ih[XPRT_LIBXC_IHDR_SIZE], dh[XPRT_LIBXC_DHDR_SIZE];
    struct xprt_libxc_dhdr d = {XPRT_LIBXC_DOM_X86_HVM, 12, 4, 17};

    xprt_libxl_hdr_encode(hdr);
    colo_buf_append(b, hdr, sizeof(hdr));
    xprt_rec_write_buf(b, XPRT_LIBXL_LIBXC_CONTEXT, NULL, 0);
    xprt_libxc_ihdr_encode(ih, 3);
    xprt_libxc_dhdr_encode(dh, &d);
    colo_buf_append(b, ih, sizeof(ih));
    colo_buf_append(b, dh, sizeof(dh));
    for (int c = 0; c < 2; c++) {
        page_data(b, (uint64_t)c);
        xprt_rec_write_buf(b, XPRT_LIBXC_CHECKPOINT, NULL, 0);
        /* libxl's part of the checkpoint; type 3 here is libxl's
         * EMULATOR_CONTEXT although libxc's 3 is X86_PV_P2M_FRAMES. */
        emu_rec(b, XPRT_LIBXL_EMULATOR_XENSTORE_DATA, "k\0v\0", 4);
        emu_rec(b, XPRT_LIBXL_EMULATOR_CONTEXT, "devstate", 8);
        xprt_rec_write_buf(b, XPRT_LIBXL_CHECKPOINT_END, NULL, 0);
    }
    page_data(b, 9);
    xprt_rec_write_buf(b, XPRT_LIBXC_END, NULL, 0);
    xprt_rec_write_buf(b, XPRT_LIBXL_END, NULL, 0);
}

Test(xen, checkpointed_stream_interleaved_layers)
{
    struct colo_buf b;
    char seq[2048], why[256];
    const char *want =
        "libxl:hdr libxl:LIBXC_CONTEXT libxc:hdr libxc:hdr "
        "libxc:PAGE_DATA libxc:CHECKPOINT libxl:EMULATOR_XENSTORE_DATA "
        "libxl:EMULATOR_CONTEXT libxl:CHECKPOINT_END "
        "libxc:PAGE_DATA libxc:CHECKPOINT libxl:EMULATOR_XENSTORE_DATA "
        "libxl:EMULATOR_CONTEXT libxl:CHECKPOINT_END "
        "libxc:PAGE_DATA libxc:END libxl:END ";

    colo_buf_init(&b, 0);
    checkpointed_stream(&b);
    cr_assert_eq(run(XPRT_FMT_LIBXL, &b, 0, seq, sizeof(seq), why, sizeof(why)),
                 0, "%s", why);
    cr_assert_str_eq(seq, want);
    cr_assert_eq(run(XPRT_FMT_LIBXL, &b, 1, seq, sizeof(seq), why, sizeof(why)),
                 0, "%s", why);
    cr_assert_str_eq(seq, want);
    colo_buf_dispose(&b);
}

Test(xen, layer_order_errors)
{
    struct colo_buf b;
    char seq[1024], why[256];
    uint8_t hdr[XPRT_LIBXL_HDR_SIZE];

    /* CHECKPOINT_END while libxc owns nothing. */
    colo_buf_init(&b, 0);
    xprt_libxl_hdr_encode(hdr);
    colo_buf_append(&b, hdr, sizeof(hdr));
    xprt_rec_write_buf(&b, XPRT_LIBXL_CHECKPOINT_END, NULL, 0);
    cr_assert_eq(run(XPRT_FMT_LIBXL, &b, 0, seq, sizeof(seq), why, sizeof(why)),
                 -COLO_ESTREAM_CORRUPT);
    cr_assert(strstr(why, "outside a libxc checkpoint"), "%s", why);
    /* Unknown mandatory libxl type. */
    b.len = sizeof(hdr);
    xprt_rec_write_buf(&b, 0x77, NULL, 0);
    cr_assert_eq(run(XPRT_FMT_LIBXL, &b, 0, seq, sizeof(seq), why, sizeof(why)),
                 -COLO_ESTREAM_UNSUPPORTED);
    cr_assert(strstr(why, "0x77"), "%s", why);
    /* Optional libxl type is fine. */
    b.len = sizeof(hdr);
    xprt_rec_write_buf(&b, 0x80000077u, "z", 1);
    xprt_rec_write_buf(&b, XPRT_LIBXL_END, NULL, 0);
    cr_assert_eq(run(XPRT_FMT_LIBXL, &b, 0, seq, sizeof(seq), why, sizeof(why)),
                 0, "%s", why);
    /* Bad libxc image header after LIBXC_CONTEXT. */
    b.len = sizeof(hdr);
    xprt_rec_write_buf(&b, XPRT_LIBXL_LIBXC_CONTEXT, NULL, 0);
    xprt_libxc_min_stream(&b);
    b.data[sizeof(hdr) + 8 + 9] ^= 0xff; /* "XENF" */
    cr_assert_eq(run(XPRT_FMT_LIBXL, &b, 0, seq, sizeof(seq), why, sizeof(why)),
                 -COLO_ESTREAM_CORRUPT);
    cr_assert(strstr(why, "libxc image header"), "%s", why);
    cr_assert(strstr(why, "offset 24"), "%s", why);
    /* Big-endian libxl stream: unsupported. */
    b.len = 0;
    xprt_libxl_hdr_encode(hdr);
    hdr[15] = 1;
    colo_buf_append(&b, hdr, sizeof(hdr));
    cr_assert_eq(run(XPRT_FMT_LIBXL, &b, 0, seq, sizeof(seq), why, sizeof(why)),
                 -COLO_ESTREAM_UNSUPPORTED);
    colo_buf_dispose(&b);
}

Test(xen, back_channel)
{
    struct colo_buf b;
    char seq[1024], why[256];
    uint8_t st[4], pfns[16] = {0};

    colo_buf_init(&b, 0);
    xprt_ckpt_state_encode(st, XPRT_CKPT_SVM_SUSPENDED);
    xprt_rec_write_buf(&b, XPRT_LIBXL_CHECKPOINT_STATE, st, 4);
    xprt_rec_write_buf(&b, XPRT_LIBXC_CHECKPOINT_DIRTY_PFN_LIST, pfns, 16);
    xprt_ckpt_state_encode(st, XPRT_CKPT_SVM_READY);
    xprt_rec_write_buf(&b, XPRT_LIBXL_CHECKPOINT_STATE, st, 4);
    cr_assert_eq(
        run(XPRT_FMT_BACKCHANNEL, &b, 1, seq, sizeof(seq), why, sizeof(why)), 0,
        "%s", why);
    cr_assert_str_eq(seq, "libxl:CHECKPOINT_STATE "
                          "libxc:CHECKPOINT_DIRTY_PFN_LIST "
                          "libxl:CHECKPOINT_STATE ");
    xprt_rec_write_buf(&b, XPRT_LIBXL_EMULATOR_CONTEXT, pfns, 16);
    cr_assert_eq(
        run(XPRT_FMT_BACKCHANNEL, &b, 0, seq, sizeof(seq), why, sizeof(why)),
        -COLO_ESTREAM_UNSUPPORTED);
    /* A state id out of range. */
    b.len = 0;
    xprt_ckpt_state_encode(st, 9);
    xprt_rec_write_buf(&b, XPRT_LIBXL_CHECKPOINT_STATE, st, 4);
    cr_assert_eq(
        run(XPRT_FMT_BACKCHANNEL, &b, 0, seq, sizeof(seq), why, sizeof(why)),
        -COLO_ESTREAM_CORRUPT);
    colo_buf_dispose(&b);
}

Test(xen, xl_header_round_trip_and_corruptions)
{
    struct colo_buf b;
    struct xprt_xl_hdr h;
    const char *json = "{\"c_info\":{\"name\":\"vm1\"}}";
    char seq[1024], why[256];
    ssize_t n;

    colo_buf_init(&b, 0);
    cr_assert_eq(xprt_xl_hdr_write(&b, json, strlen(json)), 0);
    n = xprt_xl_hdr_parse(b.data, b.len, 0, &h);
    cr_assert_eq(n, (ssize_t)b.len);
    cr_assert_eq(h.config_len, strlen(json));
    cr_assert(!memcmp(h.config, json, h.config_len));
    cr_assert_eq(h.mandatory_flags,
                 XPRT_XL_MANDATORY_JSON | XPRT_XL_MANDATORY_STREAMV2);
    /* Every prefix: "need more", never an error or a read past len. */
    for (size_t i = 0; i < b.len; i++)
        cr_assert_eq(xprt_xl_hdr_parse(b.data, i, 0, &h), 0, "prefix %zu", i);
    /* Byte-order swapped header is read. */
    {
        struct colo_buf s;
        colo_buf_init(&s, 0);
        colo_buf_append(&s, b.data, b.len);
        for (int f = 32; f < 48; f += 4) {
            uint32_t v = colo_get_le32(s.data + f);
            colo_put_be32(s.data + f, v);
        }
        colo_put_be32(s.data + 48, colo_get_le32(s.data + 48));
        n = xprt_xl_hdr_parse(s.data, s.len, 0, &h);
        cr_assert_eq(n, (ssize_t)s.len);
        cr_assert(h.swapped);
        cr_assert_eq(h.config_len, strlen(json));
        colo_buf_dispose(&s);
    }
    /* Corruptions. */
    b.data[3] ^= 1;
    cr_assert_eq(xprt_xl_hdr_parse(b.data, b.len, 0, &h),
                 -COLO_ESTREAM_CORRUPT);
    cr_assert_eq(xprt_xl_hdr_parse(b.data, 10, 0, &h), -COLO_ESTREAM_CORRUPT);
    b.data[3] ^= 1;
    colo_put_le32(b.data + 32, 0x11223344);
    cr_assert_eq(xprt_xl_hdr_parse(b.data, b.len, 0, &h),
                 -COLO_ESTREAM_CORRUPT);
    colo_put_le32(b.data + 32, XPRT_XL_BYTEORDER);
    colo_put_le32(b.data + 36, 0x7);
    cr_assert_eq(xprt_xl_hdr_parse(b.data, b.len, 0, &h),
                 -COLO_ESTREAM_UNSUPPORTED);
    colo_put_le32(b.data + 36, XPRT_XL_MANDATORY_JSON); /* no STREAMv2 */
    cr_assert_eq(xprt_xl_hdr_parse(b.data, b.len, 0, &h),
                 -COLO_ESTREAM_UNSUPPORTED);
    colo_put_le32(b.data + 36, 3);
    colo_put_le32(b.data + 48, 9999); /* config longer than opt data */
    cr_assert_eq(xprt_xl_hdr_parse(b.data, b.len, 0, &h),
                 -COLO_ESTREAM_CORRUPT);
    colo_put_le32(b.data + 48, (uint32_t)strlen(json) + 1);
    colo_put_le32(b.data + 44, 100);
    cr_assert_eq(xprt_xl_hdr_parse(b.data, b.len, 64, &h),
                 -COLO_ESTREAM_TOO_BIG);
    cr_assert_eq(xprt_xl_hdr_parse(b.data, b.len, 100, &h), 0); /* need */
    /* Whole xl save file through the reader. */
    b.len = 0;
    xprt_xl_hdr_write(&b, json, strlen(json));
    plain_stream(&b, false);
    cr_assert_eq(run(XPRT_FMT_XL, &b, 1, seq, sizeof(seq), why, sizeof(why)), 0,
                 "%s", why);
    cr_assert(!strncmp(seq, "xl:hdr libxl:hdr", 16), "%s", seq);
    cr_assert_eq(run(XPRT_FMT_AUTO, &b, 0, seq, sizeof(seq), why, sizeof(why)),
                 0, "%s", why);
    colo_buf_dispose(&b);
}

static int oracle(const struct colo_buf *b, const char *fmt)
{
    char path[] = "/tmp/colo-stream-XXXXXX";
    int fd = mkstemp(path), status;
    pid_t pid;

    cr_assert(fd >= 0);
    cr_assert_eq(colo_write_all(fd, b->data, b->len), 0);
    close(fd);
    pid = fork();
    if (pid == 0) { /* no cr_assert in the child: it would report */
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        /* Debian installs the xen python package outside sys.path. */
        setenv("PYTHONPATH", "/usr/lib/xen-4.17/lib/python", 1);
        /* Do not let the tool inherit Criterion's message channel. */
        close_range(3, ~0u, 0);
        execl(ORACLE, ORACLE, "-f", fmt, "-i", path, (char *)NULL);
        _exit(127);
    }
    cr_assert(pid > 0);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    unlink(path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

Test(xen, verify_stream_v2_oracle)
{
    struct colo_buf b;
    const char *json = "{\"c_info\":{\"name\":\"vm1\"}}";

    if (access(ORACLE, X_OK) != 0) {
        cr_skip_test("%s not installed (xen-utils-4.17)", ORACLE);
    }
    colo_buf_init(&b, 0);
    plain_stream(&b, false);
    cr_assert_eq(oracle(&b, "libxl"), 0, "minimal libxl stream rejected");
    b.len = 0;
    plain_stream(&b, true);
    cr_assert_eq(oracle(&b, "libxl"), 0, "libxl stream with a page");
    b.len = 0;
    xprt_xl_hdr_write(&b, json, strlen(json));
    plain_stream(&b, true);
    cr_assert_eq(oracle(&b, "xl"), 0, "xl save file rejected");
    /* The oracle is not a rubber stamp: bad padding fails it too. */
    b.data[b.len - 8 - 16 + 8 + 9 + 1] = 0x55;
    cr_assert_neq(oracle(&b, "xl"), 0);
    colo_buf_dispose(&b);
}

/* A receiver that lends the libxc segment to libxenguest: the reader
 * skips it on request and keeps tracking the libxl layer. */
Test(xen, libxc_segment_consumed_elsewhere)
{
    struct colo_buf b;
    struct xprt_reader r;
    struct xprt_item it;
    uint8_t hdr[XPRT_LIBXL_HDR_SIZE];
    size_t off = 0;
    ssize_t n;

    colo_buf_init(&b, 0);
    xprt_libxl_hdr_encode(hdr);
    colo_buf_append(&b, hdr, sizeof(hdr));
    xprt_rec_write_buf(&b, XPRT_LIBXL_LIBXC_CONTEXT, NULL, 0);
    /* (libxc bytes would be here, read by the helper) */
    emu_rec(&b, XPRT_LIBXL_EMULATOR_CONTEXT, "dev", 3);
    xprt_rec_write_buf(&b, XPRT_LIBXL_CHECKPOINT_END, NULL, 0);
    /* (more libxc bytes, ending with libxc END) */
    xprt_rec_write_buf(&b, XPRT_LIBXL_END, NULL, 0);

    xprt_reader_init(&r, XPRT_FMT_LIBXL, 0);
    cr_assert_eq(xprt_reader_libxc_consumed(&r, false), -EINVAL);
    n = xprt_reader_push(&r, b.data, b.len, &it); /* header */
    off += (size_t)n;
    n = xprt_reader_push(&r, b.data + off, b.len - off, &it);
    off += (size_t)n;
    cr_assert_eq(it.type, XPRT_LIBXL_LIBXC_CONTEXT);
    cr_assert_eq(xprt_reader_next_layer(&r), XPRT_LAYER_LIBXC);
    cr_assert_eq(xprt_reader_libxc_consumed(&r, true), 0);
    cr_assert_eq(xprt_reader_next_layer(&r), XPRT_LAYER_LIBXL);
    n = xprt_reader_push(&r, b.data + off, b.len - off, &it);
    off += (size_t)n;
    cr_assert_eq(it.type, XPRT_LIBXL_EMULATOR_CONTEXT);
    n = xprt_reader_push(&r, b.data + off, b.len - off, &it);
    off += (size_t)n;
    cr_assert_eq(it.type, XPRT_LIBXL_CHECKPOINT_END);
    cr_assert_eq(xprt_reader_next_layer(&r), XPRT_LAYER_LIBXC);
    cr_assert_eq(xprt_reader_libxc_consumed(&r, false), 0);
    n = xprt_reader_push(&r, b.data + off, b.len - off, &it);
    cr_assert_eq(it.layer, XPRT_LAYER_LIBXL);
    cr_assert_eq(it.type, XPRT_LIBXL_END);
    cr_assert_eq(xprt_reader_eof(&r), 0);
    xprt_reader_dispose(&r);
    colo_buf_dispose(&b);
}
