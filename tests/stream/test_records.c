/*
 * Record framing and colo records: round trips, byte-at-a-time delivery,
 * truncation, caps, padding, unknown types.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "transport/colo_rec.h"
#include "transport/record.h"

#define MAX_ITEMS 64

struct got {
    int n;
    struct xprt_item it[MAX_ITEMS];
    uint8_t *body[MAX_ITEMS];
};

static void got_free(struct got *g)
{
    for (int i = 0; i < g->n; i++)
        free(g->body[i]);
    g->n = 0;
}

/* Feed buf in chunks of `step` bytes (0: all at once); returns the final
 * rc (error or eof result). */
static int feed(enum xprt_format fmt, uint32_t cap, const uint8_t *buf,
                size_t len, size_t step, struct got *g, char *why, size_t whysz)
{
    struct xprt_reader r;
    size_t off = 0;
    int rc = 0;

    xprt_reader_init(&r, fmt, cap);
    got_free(g); /* results of an earlier feed, also a failed one */
    while (off < len) {
        size_t chunk = step ? step : len - off;
        size_t avail;

        if (chunk > len - off)
            chunk = len - off;
        avail = chunk;
        while (avail > 0) {
            struct xprt_item it;
            ssize_t n = xprt_reader_push(&r, buf + off, avail, &it);

            if (n < 0) {
                rc = (int)n;
                goto out;
            }
            off += (size_t)n;
            avail -= (size_t)n;
            if (it.kind != XPRT_ITEM_NONE && g->n < MAX_ITEMS) {
                g->it[g->n] = it;
                g->body[g->n] = malloc(it.length + 1);
                memcpy(g->body[g->n], it.body, it.length);
                g->it[g->n].body = g->body[g->n];
                g->n++;
            }
        }
    }
    rc = xprt_reader_eof(&r);
out:
    if (why)
        snprintf(why, whysz, "%s", xprt_reader_why(&r));
    xprt_reader_dispose(&r);
    return rc;
}

/* A colo stream with one of every record type. */
static void build_colo_stream(struct colo_buf *b)
{
    uint8_t hdr[XPRT_COLO_HDR_SIZE];
    struct xprt_colo_hello h = {.version = XPRT_COLO_VERSION,
                                .role = XPRT_ROLE_SAVEFILE,
                                .page_size = 4096,
                                .flags = XPRT_HELLO_FLAG_COLO,
                                .ram_size = 64ull << 20};
    static uint8_t page_a[4096], page_b[4096];
    const void *pages[2] = {page_a, page_b};
    uint64_t pfns[2] = {7, 0x12345};
    uint8_t hb[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const char *json = "{\"name\":\"vm1\"}";

    memset(page_a, 0xaa, sizeof(page_a));
    memset(page_b, 0x5b, sizeof(page_b));
    strcpy(h.vm_name, "vm1");
    xprt_colo_hdr_encode(hdr);
    cr_assert(colo_buf_append(b, hdr, sizeof(hdr)) >= 0);
    cr_assert(xprt_colo_hello_write(b, &h) == 0);
    cr_assert(xprt_colo_config_write(b, json, strlen(json)) == 0);
    cr_assert(xprt_ckpt_begin_write(b, 1, XPRT_CKPT_FLAG_FULL) == 0);
    cr_assert(xprt_ram_pages_write(b, 2, 12, pfns, pages) == 0);
    cr_assert(xprt_devstate_write(b, XPRT_DEVSTATE_QEMU_XEN_SAVE, "QEVM", 5) ==
              0);
    cr_assert(xprt_ckpt_end_write(b, 1) == 0);
    cr_assert(xprt_ack_write(b, 1, 0) == 0);
    cr_assert(xprt_rec_write_buf(b, XPRT_COLO_HEARTBEAT, hb, 8) == 0);
    cr_assert(xprt_error_write(b, -COLO_EPEER_REJECTED, "no thanks") == 0);
    cr_assert(xprt_rec_write_buf(b, XPRT_COLO_END, NULL, 0) == 0);
}

static void check_colo_items(struct got *g)
{
    struct xprt_colo_hello h;
    struct xprt_ram_pages_view v;
    const char *json;
    const uint8_t *blob;
    size_t len;
    uint64_t n;
    uint32_t f;
    int32_t st;
    char text[64];

    cr_assert_eq(g->n, 11, "items: %d", g->n);
    cr_assert_eq(g->it[0].kind, XPRT_ITEM_HEADER);
    cr_assert_eq(g->it[0].type, XPRT_HDR_COLO);
    cr_assert_eq(g->it[1].type, XPRT_COLO_HELLO);
    cr_assert_eq(xprt_colo_hello_decode(g->it[1].body, g->it[1].length, &h), 0);
    cr_assert_str_eq(h.vm_name, "vm1");
    cr_assert_eq(h.ram_size, 64ull << 20);
    cr_assert_eq(h.page_size, 4096);
    cr_assert_eq(h.role, XPRT_ROLE_SAVEFILE);
    cr_assert_eq(
        xprt_colo_config_decode(g->it[2].body, g->it[2].length, &json, &len),
        0);
    cr_assert_eq(len, strlen("{\"name\":\"vm1\"}"));
    cr_assert_eq(xprt_ckpt_begin_decode(g->it[3].body, g->it[3].length, &n, &f),
                 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(f, XPRT_CKPT_FLAG_FULL);
    cr_assert_eq(g->it[4].type, XPRT_COLO_RAM_PAGES);
    cr_assert_eq(
        xprt_ram_pages_decode(g->it[4].body, g->it[4].length, 0, 12, &v), 0);
    cr_assert_eq(v.count, 2);
    cr_assert_eq(xprt_ram_pages_pfn(&v, 1), 0x12345);
    cr_assert_eq(xprt_ram_pages_page(&v, 0)[100], 0xaa);
    cr_assert_eq(xprt_ram_pages_page(&v, 1)[4095], 0x5b);
    cr_assert_eq(
        xprt_devstate_decode(g->it[5].body, g->it[5].length, &f, &blob, &len),
        0);
    cr_assert_eq(len, 5);
    cr_assert_str_eq((const char *)blob, "QEVM");
    cr_assert_eq(xprt_ckpt_end_decode(g->it[6].body, g->it[6].length, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(xprt_ack_decode(g->it[7].body, g->it[7].length, &n, &st), 0);
    cr_assert_eq(st, 0);
    cr_assert_eq(g->it[8].type, XPRT_COLO_HEARTBEAT);
    cr_assert_eq(xprt_error_decode(g->it[9].body, g->it[9].length, &st, text,
                                   sizeof(text)),
                 0);
    cr_assert_eq(st, -COLO_EPEER_REJECTED);
    cr_assert_str_eq(text, "no thanks");
    cr_assert_eq(g->it[10].type, XPRT_COLO_END);
    for (int i = 1; i < g->n; i++) {
        cr_assert_eq(g->it[i].offset % 8, 0);
        cr_assert_eq(g->it[i].index, (uint64_t)(i - 1));
        cr_assert_eq(g->it[i].layer, XPRT_LAYER_COLO);
    }
}

Test(records, colo_round_trip_whole_and_byte_at_a_time)
{
    struct colo_buf b;
    struct got g = {0};
    char why[256];

    colo_buf_init(&b, 0);
    build_colo_stream(&b);
    cr_assert_eq(feed(XPRT_FMT_COLO, 0, b.data, b.len, 0, &g, why, sizeof(why)),
                 0, "%s", why);
    check_colo_items(&g);
    got_free(&g);
    cr_assert_eq(feed(XPRT_FMT_COLO, 0, b.data, b.len, 1, &g, why, sizeof(why)),
                 0, "%s", why);
    check_colo_items(&g);
    got_free(&g);
    cr_assert_eq(feed(XPRT_FMT_AUTO, 0, b.data, b.len, 7, &g, why, sizeof(why)),
                 0, "%s", why);
    check_colo_items(&g);
    got_free(&g);
    colo_buf_dispose(&b);
}

Test(records, eof_mid_header_and_mid_body)
{
    struct colo_buf b;
    struct got g = {0};
    char why[256];
    int rc;

    colo_buf_init(&b, 0);
    cr_assert(xprt_rec_write_buf(&b, 0x42, "hello world", 11) == 0);
    /* Mid header. */
    rc = feed(XPRT_FMT_RECORDS, 0, b.data, 5, 1, &g, why, sizeof(why));
    cr_assert_eq(rc, -COLO_ESTREAM_TRUNCATED);
    cr_assert(strstr(why, "record header"), "%s", why);
    cr_assert(strstr(why, "offset 0"), "%s", why);
    /* Mid body. */
    rc = feed(XPRT_FMT_RECORDS, 0, b.data, 12, 0, &g, why, sizeof(why));
    cr_assert_eq(rc, -COLO_ESTREAM_TRUNCATED);
    cr_assert(strstr(why, "record body"), "%s", why);
    /* Whole record, then EOF: fine for bare records. */
    rc = feed(XPRT_FMT_RECORDS, 0, b.data, b.len, 3, &g, why, sizeof(why));
    cr_assert_eq(rc, 0, "%s", why);
    cr_assert_eq(g.n, 1);
    cr_assert_eq(g.it[0].length, 11);
    cr_assert(!memcmp(g.it[0].body, "hello world", 11));
    got_free(&g);
    colo_buf_dispose(&b);
}

Test(records, colo_stream_without_end_is_truncated)
{
    struct colo_buf b;
    struct got g = {0};
    char why[256];
    uint8_t hdr[XPRT_COLO_HDR_SIZE];

    colo_buf_init(&b, 0);
    xprt_colo_hdr_encode(hdr);
    colo_buf_append(&b, hdr, sizeof(hdr));
    xprt_ckpt_begin_write(&b, 3, 0);
    cr_assert_eq(feed(XPRT_FMT_COLO, 0, b.data, b.len, 0, &g, why, sizeof(why)),
                 -COLO_ESTREAM_TRUNCATED);
    cr_assert(strstr(why, "without an END"), "%s", why);
    got_free(&g);
    colo_buf_dispose(&b);
}

Test(records, length_cap_exact_and_over)
{
    struct colo_buf b;
    struct got g = {0};
    uint8_t *body = calloc(1, 4096);
    char why[256];

    colo_buf_init(&b, 0);
    cr_assert(xprt_rec_write_buf(&b, 9, body, 4096) == 0);
    /* Exactly at the cap: accepted, both whole and split. */
    cr_assert_eq(
        feed(XPRT_FMT_RECORDS, 4096, b.data, b.len, 0, &g, why, sizeof(why)), 0,
        "%s", why);
    cr_assert_eq(g.n, 1);
    got_free(&g);
    cr_assert_eq(
        feed(XPRT_FMT_RECORDS, 4096, b.data, b.len, 1000, &g, why, sizeof(why)),
        0, "%s", why);
    got_free(&g);
    /* One over: rejected from the header alone, both ways. */
    cr_assert_eq(
        feed(XPRT_FMT_RECORDS, 4095, b.data, b.len, 0, &g, why, sizeof(why)),
        -COLO_ESTREAM_TOO_BIG);
    cr_assert_eq(
        feed(XPRT_FMT_RECORDS, 4095, b.data, 8, 1, &g, why, sizeof(why)),
        -COLO_ESTREAM_TOO_BIG);
    cr_assert(strstr(why, "over the cap"), "%s", why);
    got_free(&g);
    free(body);
    colo_buf_dispose(&b);
}

Test(records, default_cap_is_libxc_128mib)
{
    struct xprt_reader r;
    uint8_t hdr[8];

    xprt_reader_init(&r, XPRT_FMT_RECORDS, 0);
    xprt_rec_hdr_encode(hdr, 1, XPRT_REC_MAX_DEFAULT);
    cr_assert_eq(xprt_reader_next_size(&r, hdr, 8),
                 (ssize_t)(8 + XPRT_REC_MAX_DEFAULT));
    xprt_rec_hdr_encode(hdr, 1, XPRT_REC_MAX_DEFAULT + 1);
    cr_assert_eq(xprt_reader_next_size(&r, hdr, 8), -COLO_ESTREAM_TOO_BIG);
    cr_assert_eq(xprt_reader_next_size(&r, hdr, 3), 8);
    xprt_reader_dispose(&r);
}

Test(records, bad_padding_is_corrupt)
{
    struct colo_buf b;
    struct got g = {0};
    char why[256];

    colo_buf_init(&b, 0);
    cr_assert(xprt_rec_write_buf(&b, 0x42, "abc", 3) == 0);
    cr_assert_eq(b.len, 16);
    b.data[15] = 1;
    cr_assert_eq(
        feed(XPRT_FMT_RECORDS, 0, b.data, b.len, 0, &g, why, sizeof(why)),
        -COLO_ESTREAM_CORRUPT);
    cr_assert(strstr(why, "padding"), "%s", why);
    cr_assert_eq(
        feed(XPRT_FMT_RECORDS, 0, b.data, b.len, 1, &g, why, sizeof(why)),
        -COLO_ESTREAM_CORRUPT);
    got_free(&g);
    colo_buf_dispose(&b);
}

Test(records, unknown_types)
{
    struct colo_buf b;
    struct got g = {0};
    uint8_t hdr[XPRT_COLO_HDR_SIZE];
    char why[256];

    /* Unknown mandatory colo type: unsupported, says which. */
    colo_buf_init(&b, 0);
    xprt_colo_hdr_encode(hdr);
    colo_buf_append(&b, hdr, sizeof(hdr));
    xprt_rec_write_buf(&b, XPRT_COLO_REC_BASE + 0x77, "x", 1);
    cr_assert_eq(feed(XPRT_FMT_COLO, 0, b.data, b.len, 0, &g, why, sizeof(why)),
                 -COLO_ESTREAM_UNSUPPORTED);
    cr_assert(strstr(why, "record #0"), "%s", why);
    /* Unknown optional colo type: delivered, stream goes on. */
    b.len = sizeof(hdr);
    xprt_rec_write_buf(&b, XPRT_COLO_REC_BASE + XPRT_COLO_OPTIONAL_BIT + 1, "x",
                       1);
    xprt_rec_write_buf(&b, XPRT_COLO_END, NULL, 0);
    cr_assert_eq(feed(XPRT_FMT_COLO, 0, b.data, b.len, 0, &g, why, sizeof(why)),
                 0, "%s", why);
    cr_assert_eq(g.n, 3);
    got_free(&g);
    /* Link handshake records never appear in a stream. */
    b.len = sizeof(hdr);
    xprt_rec_write_buf(&b, XPRT_LINK_HELLO, "x", 1);
    cr_assert_eq(feed(XPRT_FMT_COLO, 0, b.data, b.len, 0, &g, why, sizeof(why)),
                 -COLO_ESTREAM_CORRUPT);
    /* Data after END. */
    b.len = sizeof(hdr);
    xprt_rec_write_buf(&b, XPRT_COLO_END, NULL, 0);
    xprt_rec_write_buf(&b, XPRT_COLO_END, NULL, 0);
    cr_assert_eq(feed(XPRT_FMT_COLO, 0, b.data, b.len, 0, &g, why, sizeof(why)),
                 -COLO_ESTREAM_CORRUPT);
    cr_assert(strstr(why, "after the END"), "%s", why);
    got_free(&g);
    colo_buf_dispose(&b);
}

Test(records, codec_caps)
{
    uint8_t body[64];
    struct xprt_ram_pages_view v;
    struct xprt_colo_hello h;
    int32_t st;
    uint64_t pfn = 1;
    uint8_t *big;

    /* RAM_PAGES: count over the cap and at the cap. */
    colo_put_le32(body, XPRT_COLO_RAM_PAGES_MAX + 1);
    colo_put_le32(body + 4, 12);
    cr_assert_eq(xprt_ram_pages_decode(body, 64, 0, 0, &v),
                 -COLO_ESTREAM_TOO_BIG);
    cr_assert_eq(xprt_ram_pages_head_encode(body, 0, 12, &pfn), -EINVAL);
    size_t len = xprt_ram_pages_body_len(XPRT_COLO_RAM_PAGES_MAX, 12);
    big = calloc(1, len);
    cr_assert_eq(xprt_ram_pages_head_encode(big, 1, 12, &pfn), 0);
    colo_put_le32(big, XPRT_COLO_RAM_PAGES_MAX);
    cr_assert_eq(xprt_ram_pages_decode(big, len, 0, 12, &v), 0);
    cr_assert_eq(xprt_ram_pages_decode(big, len - 1, 0, 12, &v),
                 -COLO_ESTREAM_CORRUPT);
    cr_assert_eq(xprt_ram_pages_decode(big, len, 16, 12, &v),
                 -COLO_ESTREAM_TOO_BIG);
    free(big);
    /* HELLO name over the cap. */
    memset(body, 0, sizeof(body));
    colo_put_le32(body, XPRT_COLO_VERSION);
    colo_put_le32(body + 8, 4096);
    colo_put_le32(body + 24, XPRT_COLO_NAME_MAX + 1);
    cr_assert_eq(xprt_colo_hello_decode(body, 32, &h), -COLO_ESTREAM_TOO_BIG);
    /* ERROR text over the cap / inconsistent length. */
    colo_put_le32(body + 4, XPRT_COLO_ERROR_TEXT_MAX + 1);
    cr_assert_eq(xprt_error_decode(body, 16, &st, NULL, 0),
                 -COLO_ESTREAM_TOO_BIG);
    colo_put_le32(body + 4, 3);
    cr_assert_eq(xprt_error_decode(body, 16, &st, NULL, 0),
                 -COLO_ESTREAM_CORRUPT);
    /* VM_CONFIG at and over the cap. */
    big = malloc(XPRT_COLO_CONFIG_MAX + 1);
    memset(big, 'x', XPRT_COLO_CONFIG_MAX + 1);
    const char *json;
    cr_assert_eq(
        xprt_colo_config_decode(big, XPRT_COLO_CONFIG_MAX, &json, &len), 0);
    cr_assert_eq(
        xprt_colo_config_decode(big, XPRT_COLO_CONFIG_MAX + 1, &json, &len),
        -COLO_ESTREAM_TOO_BIG);
    free(big);
}

Test(records, writers_agree)
{
    struct colo_buf b;
    int p[2];
    uint8_t got[64];
    struct iovec iov[2] = {{"ab", 2}, {"cde", 3}};

    colo_buf_init(&b, 0);
    cr_assert_eq(xprt_rec_writev_buf(&b, 5, iov, 2), 0);
    cr_assert_eq(b.len, 16);
    cr_assert(pipe(p) == 0);
    cr_assert_eq(xprt_rec_writev_fd(p[1], 5, iov, 2), 0);
    cr_assert_eq(read(p[0], got, sizeof(got)), 16);
    cr_assert(!memcmp(got, b.data, 16));
    cr_assert_eq(got[0], 5);
    cr_assert_eq(got[4], 5);
    close(p[0]);
    close(p[1]);
    colo_buf_dispose(&b);
}
