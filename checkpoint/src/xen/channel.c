/*
 * Helper channel framing (see xen_helper.h and docs/xen.md). The libxl
 * records colo writes around libxc's stream are libxl_rec.c's.
 */
#include "checkpoint/xen_helper.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "transport/record.h"
#include "transport/xen_stream.h"

/* Fixed head size of each type's payload; -1 unknown. */
static int head_size(uint16_t type, bool *has_text)
{
    *has_text = false;
    switch (type) {
    case CKPT_XEN_MSG_LOG:
        *has_text = true;
        return 8;
    case CKPT_XEN_MSG_PROGRESS:
        *has_text = true;
        return 16;
    case CKPT_XEN_MSG_CALL:
        return 32;
    case CKPT_XEN_MSG_RESULTS:
        return 16;
    case CKPT_XEN_MSG_DONE:
        *has_text = true;
        return 24;
    case CKPT_XEN_MSG_REPLY:
        return 8;
    default:
        return -1;
    }
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

int ckpt_xen_msg_encode(struct colo_buf *out, const struct ckpt_xen_msg *m)
{
    uint8_t f[CKPT_XEN_MSG_HDR_SIZE + 32];
    bool has_text;
    int head = head_size(m->type, &has_text);
    size_t tlen = 0;
    uint8_t *p = f + CKPT_XEN_MSG_HDR_SIZE;
    int rc;

    if (head < 0)
        return -EINVAL;
    if (has_text && m->text) {
        tlen = m->text_len;
        if (tlen > CKPT_XEN_TEXT_MAX)
            tlen = CKPT_XEN_TEXT_MAX;
    }
    memset(f, 0, sizeof(f));
    put_le16(f, m->type);
    put_le16(f + 2, 0);
    colo_put_le32(f + 4, (uint32_t)((size_t)head + tlen));
    switch (m->type) {
    case CKPT_XEN_MSG_LOG:
        colo_put_le32(p, m->u32a);
        colo_put_le32(p + 4, m->u32b);
        break;
    case CKPT_XEN_MSG_PROGRESS:
    case CKPT_XEN_MSG_RESULTS:
        colo_put_le64(p, m->u64a);
        colo_put_le64(p + 8, m->u64b);
        break;
    case CKPT_XEN_MSG_CALL:
        colo_put_le32(p, m->u32a);
        colo_put_le32(p + 4, m->u32b);
        colo_put_le64(p + 8, m->u64a);
        colo_put_le64(p + 16, m->u64b);
        colo_put_le64(p + 24, m->u64c);
        break;
    case CKPT_XEN_MSG_DONE:
        colo_put_le32(p, (uint32_t)m->i32a);
        colo_put_le32(p + 4, (uint32_t)m->i32b);
        colo_put_le64(p + 8, m->u64a);
        colo_put_le64(p + 16, m->u64b);
        break;
    case CKPT_XEN_MSG_REPLY:
        colo_put_le32(p, m->u32a);
        colo_put_le32(p + 4, (uint32_t)m->i32a);
        break;
    }
    rc = colo_buf_append(out, f, CKPT_XEN_MSG_HDR_SIZE + (size_t)head);
    if (rc < 0)
        return rc;
    if (tlen) {
        rc = colo_buf_append(out, m->text, tlen);
        if (rc < 0) {
            out->len -= CKPT_XEN_MSG_HDR_SIZE + (size_t)head;
            return rc;
        }
    }
    return 0;
}

ssize_t ckpt_xen_msg_decode(const uint8_t *p, size_t len,
                            struct ckpt_xen_msg *ret)
{
    uint16_t type;
    uint32_t plen;
    bool has_text;
    int head;
    const uint8_t *b;

    memset(ret, 0, sizeof(*ret));
    if (len < CKPT_XEN_MSG_HDR_SIZE)
        return 0;
    type = get_le16(p);
    plen = colo_get_le32(p + 4);
    if (plen > CKPT_XEN_MSG_MAX)
        return -COLO_ESTREAM_TOO_BIG;
    head = head_size(type, &has_text);
    if (head < 0 || get_le16(p + 2) != 0)
        return -COLO_ESTREAM_CORRUPT;
    if (plen < (uint32_t)head || (!has_text && plen != (uint32_t)head) ||
        plen - (uint32_t)head > CKPT_XEN_TEXT_MAX)
        return -COLO_ESTREAM_CORRUPT;
    if (len < CKPT_XEN_MSG_HDR_SIZE + (size_t)plen)
        return 0;
    b = p + CKPT_XEN_MSG_HDR_SIZE;
    ret->type = type;
    switch (type) {
    case CKPT_XEN_MSG_LOG:
        ret->u32a = colo_get_le32(b);
        ret->u32b = colo_get_le32(b + 4);
        break;
    case CKPT_XEN_MSG_PROGRESS:
    case CKPT_XEN_MSG_RESULTS:
        ret->u64a = colo_get_le64(b);
        ret->u64b = colo_get_le64(b + 8);
        break;
    case CKPT_XEN_MSG_CALL:
        ret->u32a = colo_get_le32(b);
        ret->u32b = colo_get_le32(b + 4);
        ret->u64a = colo_get_le64(b + 8);
        ret->u64b = colo_get_le64(b + 16);
        ret->u64c = colo_get_le64(b + 24);
        if (ret->u32a < 1 || ret->u32a > CKPT_XEN_CB_MAX)
            return -COLO_ESTREAM_CORRUPT;
        break;
    case CKPT_XEN_MSG_DONE:
        ret->i32a = (int32_t)colo_get_le32(b);
        ret->i32b = (int32_t)colo_get_le32(b + 4);
        ret->u64a = colo_get_le64(b + 8);
        ret->u64b = colo_get_le64(b + 16);
        break;
    case CKPT_XEN_MSG_REPLY:
        ret->u32a = colo_get_le32(b);
        ret->i32a = (int32_t)colo_get_le32(b + 4);
        if (ret->u32a < 1 || ret->u32a > CKPT_XEN_CB_MAX)
            return -COLO_ESTREAM_CORRUPT;
        break;
    }
    if (has_text) {
        ret->text = (const char *)b + head;
        ret->text_len = plen - (uint32_t)head;
    }
    return (ssize_t)(CKPT_XEN_MSG_HDR_SIZE + plen);
}

const char *ckpt_xen_cb_name(uint32_t cb)
{
    static const char *const names[] = {
        [CKPT_XEN_CB_SUSPEND] = "suspend",
        [CKPT_XEN_CB_PRECOPY_POLICY] = "precopy_policy",
        [CKPT_XEN_CB_POSTCOPY] = "postcopy",
        [CKPT_XEN_CB_CHECKPOINT] = "checkpoint",
        [CKPT_XEN_CB_WAIT_CHECKPOINT] = "wait_checkpoint",
        [CKPT_XEN_CB_SWITCH_LOGDIRTY] = "switch_qemu_logdirty",
        [CKPT_XEN_CB_STATIC_DATA_DONE] = "static_data_done",
    };

    if (cb >= 1 && cb <= CKPT_XEN_CB_MAX)
        return names[cb];
    return "unknown";
}
