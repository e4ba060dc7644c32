/* Helper channel framing: every message type both ways, caps, bad frames,
 * byte-at-a-time decoding. */
#include <criterion/criterion.h>
#include <string.h>

#include "checkpoint/xen_helper.h"
#include "common/buf.h"
#include "common/error.h"

static void roundtrip(const struct ckpt_xen_msg *in, struct ckpt_xen_msg *out,
                      struct colo_buf *b)
{
    ssize_t n;

    b->len = 0;
    cr_assert_eq(ckpt_xen_msg_encode(b, in), 0);
    /* Every proper prefix needs more bytes. */
    for (size_t i = 0; i < b->len; i++)
        cr_assert_eq(ckpt_xen_msg_decode(b->data, i, out), 0, "prefix %zu", i);
    n = ckpt_xen_msg_decode(b->data, b->len, out);
    cr_assert_eq(n, (ssize_t)b->len);
    cr_assert_eq(out->type, in->type);
}

Test(msg, every_type_roundtrips)
{
    struct colo_buf b;
    struct ckpt_xen_msg in, out;

    colo_buf_init(&b, 0);
    in = (struct ckpt_xen_msg){.type = CKPT_XEN_MSG_LOG,
                               .u32a = 8,
                               .u32b = 0xffffffffu,
                               .text = "xc: oops",
                               .text_len = 8};
    roundtrip(&in, &out, &b);
    cr_assert_eq(out.u32a, 8);
    cr_assert_eq(out.u32b, 0xffffffffu);
    cr_assert_eq(out.text_len, 8);
    cr_assert(!memcmp(out.text, "xc: oops", 8));
    cr_assert_eq(b.len, 8 + 8 + 8);

    in = (struct ckpt_xen_msg){.type = CKPT_XEN_MSG_PROGRESS,
                               .u64a = 1ull << 40,
                               .u64b = 3,
                               .text = "xc: Frames",
                               .text_len = 10};
    roundtrip(&in, &out, &b);
    cr_assert_eq(out.u64a, 1ull << 40);
    cr_assert_eq(out.u64b, 3);

    for (uint32_t cb = 1; cb <= CKPT_XEN_CB_MAX; cb++) {
        in = (struct ckpt_xen_msg){.type = CKPT_XEN_MSG_CALL,
                                   .u32a = cb,
                                   .u32b = 7,
                                   .u64a = 0x0102030405060708ull,
                                   .u64b = (uint64_t)-1,
                                   .u64c = 42};
        roundtrip(&in, &out, &b);
        cr_assert_eq(b.len, 40);
        cr_assert_eq(out.u32a, cb);
        cr_assert_eq(out.u32b, 7);
        cr_assert_eq(out.u64a, 0x0102030405060708ull);
        cr_assert_eq((int64_t)out.u64b, -1);
        cr_assert_eq(out.u64c, 42);
        /* Little-endian, field by field. */
        cr_assert_eq(b.data[0], CKPT_XEN_MSG_CALL);
        cr_assert_eq(b.data[8], cb);
        cr_assert_eq(b.data[16], 0x08);
        cr_assert_str_neq(ckpt_xen_cb_name(cb), "unknown");

        in = (struct ckpt_xen_msg){
            .type = CKPT_XEN_MSG_REPLY, .u32a = cb, .i32a = -1};
        roundtrip(&in, &out, &b);
        cr_assert_eq(b.len, 16);
        cr_assert_eq(out.u32a, cb);
        cr_assert_eq(out.i32a, -1);
    }
    cr_assert_str_eq(ckpt_xen_cb_name(0), "unknown");

    in = (struct ckpt_xen_msg){
        .type = CKPT_XEN_MSG_RESULTS, .u64a = 0xfeffc, .u64b = 0xfeffd};
    roundtrip(&in, &out, &b);
    cr_assert_eq(out.u64a, 0xfeffc);
    cr_assert_eq(out.u64b, 0xfeffd);

    in = (struct ckpt_xen_msg){.type = CKPT_XEN_MSG_DONE,
                               .i32a = -1,
                               .i32b = 19,
                               .u64a = 5,
                               .u64b = 6,
                               .text = "no Xen hypervisor",
                               .text_len = 17};
    roundtrip(&in, &out, &b);
    cr_assert_eq(out.i32a, -1);
    cr_assert_eq(out.i32b, 19);
    cr_assert_eq(out.u64a, 5);
    cr_assert_eq(out.u64b, 6);
    cr_assert_eq(out.text_len, 17);
    colo_buf_dispose(&b);
}

Test(msg, text_cap)
{
    struct colo_buf b;
    struct ckpt_xen_msg in = {.type = CKPT_XEN_MSG_LOG}, out;
    static char big[CKPT_XEN_TEXT_MAX + 100];

    memset(big, 'a', sizeof(big));
    colo_buf_init(&b, 0);
    in.text = big;
    in.text_len = CKPT_XEN_TEXT_MAX; /* at the cap: kept whole */
    roundtrip(&in, &out, &b);
    cr_assert_eq(out.text_len, CKPT_XEN_TEXT_MAX);
    in.text_len = sizeof(big); /* over: cut to the cap */
    roundtrip(&in, &out, &b);
    cr_assert_eq(out.text_len, CKPT_XEN_TEXT_MAX);
    /* A peer claiming one byte more text than the cap is corrupt. */
    colo_put_le32(b.data + 4, 8 + CKPT_XEN_TEXT_MAX + 1);
    cr_assert_lt(ckpt_xen_msg_decode(b.data, b.len, &out), 0);
    colo_buf_dispose(&b);
}

Test(msg, bad_frames)
{
    uint8_t f[64] = {0};
    struct ckpt_xen_msg out;

    /* Oversized length: refused from the header alone. */
    f[0] = CKPT_XEN_MSG_LOG;
    colo_put_le32(f + 4, CKPT_XEN_MSG_MAX + 1);
    cr_assert_eq(ckpt_xen_msg_decode(f, 8, &out), -COLO_ESTREAM_TOO_BIG);
    /* The longest valid LOG: wait for more bytes. */
    colo_put_le32(f + 4, 8 + CKPT_XEN_TEXT_MAX);
    cr_assert_eq(ckpt_xen_msg_decode(f, 64, &out), 0);
    /* Unknown type, reserved bits, wrong fixed size. */
    memset(f, 0, sizeof(f));
    f[0] = 9;
    cr_assert_eq(ckpt_xen_msg_decode(f, 8, &out), -COLO_ESTREAM_CORRUPT);
    f[0] = CKPT_XEN_MSG_REPLY;
    f[2] = 1;
    colo_put_le32(f + 4, 8);
    cr_assert_eq(ckpt_xen_msg_decode(f, 16, &out), -COLO_ESTREAM_CORRUPT);
    f[2] = 0;
    colo_put_le32(f + 4, 9);
    cr_assert_eq(ckpt_xen_msg_decode(f, 17, &out), -COLO_ESTREAM_CORRUPT);
    colo_put_le32(f + 4, 8);
    colo_put_le32(f + 8, 0); /* REPLY for cb 0 */
    cr_assert_eq(ckpt_xen_msg_decode(f, 16, &out), -COLO_ESTREAM_CORRUPT);
    colo_put_le32(f + 8, CKPT_XEN_CB_MAX + 1);
    cr_assert_eq(ckpt_xen_msg_decode(f, 16, &out), -COLO_ESTREAM_CORRUPT);
    colo_put_le32(f + 8, CKPT_XEN_CB_SUSPEND);
    cr_assert_eq(ckpt_xen_msg_decode(f, 16, &out), 16);
    /* DONE shorter than its fixed head. */
    memset(f, 0, sizeof(f));
    f[0] = CKPT_XEN_MSG_DONE;
    colo_put_le32(f + 4, 23);
    cr_assert_eq(ckpt_xen_msg_decode(f, 31, &out), -COLO_ESTREAM_CORRUPT);
}
