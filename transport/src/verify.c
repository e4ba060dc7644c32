/*
 * Stream verification rules on top of the reader.
 */
#include "transport/verify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "transport/colo_rec.h"
#include "transport/xen_stream.h"

void xprt_verifier_init(struct xprt_verifier *v, enum xprt_format fmt,
                        uint32_t max_record)
{
    memset(v, 0, sizeof(*v));
    xprt_reader_init(&v->rd, fmt, max_record);
}

void xprt_verifier_dispose(struct xprt_verifier *v)
{
    xprt_reader_dispose(&v->rd);
}

const char *xprt_verifier_why(const struct xprt_verifier *v)
{
    return v->why;
}

static int bad(struct xprt_verifier *v, const struct xprt_item *it, int rc,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int bad(struct xprt_verifier *v, const struct xprt_item *it, int rc,
               const char *fmt, ...)
{
    char reason[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    snprintf(v->why, sizeof(v->why), "at offset %llu, record #%llu (%s %s): %s",
             (unsigned long long)it->offset, (unsigned long long)it->index,
             xprt_layer_name(it->layer),
             xprt_rec_type_name(it->layer, it->type), reason);
    v->err = rc;
    return rc;
}

static int colo_record(struct xprt_verifier *v, const struct xprt_item *it)
{
    uint64_t n;
    uint32_t flags;

    if (!v->seen_hello && it->type != XPRT_COLO_HELLO)
        return bad(v, it, -COLO_ESTREAM_CORRUPT,
                   "the first record must be HELLO");
    switch (it->type) {
    case XPRT_COLO_HELLO: {
        struct xprt_colo_hello h;

        if (v->seen_hello)
            return bad(v, it, -COLO_ESTREAM_CORRUPT, "second HELLO");
        xprt_colo_hello_decode(it->body, it->length, &h); /* reader checked */
        v->seen_hello = true;
        v->sum.page_size = h.page_size;
        snprintf(v->sum.vm_name, sizeof(v->sum.vm_name), "%s", h.vm_name);
        return 0;
    }
    case XPRT_COLO_VM_CONFIG:
        v->sum.config_bytes += it->length;
        return 0;
    case XPRT_COLO_CHECKPOINT_BEGIN:
        xprt_ckpt_begin_decode(it->body, it->length, &n, &flags);
        if (v->in_ckpt)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "CHECKPOINT_BEGIN(%llu) inside checkpoint %llu",
                       (unsigned long long)n, (unsigned long long)v->open_n);
        if (v->have_ckpt && n != v->sum.last_ckpt + 1)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "checkpoint %llu follows %llu (expected %llu)",
                       (unsigned long long)n,
                       (unsigned long long)v->sum.last_ckpt,
                       (unsigned long long)v->sum.last_ckpt + 1);
        v->in_ckpt = true;
        v->open_full = flags & XPRT_CKPT_FLAG_FULL;
        v->open_n = n;
        return 0;
    case XPRT_COLO_CHECKPOINT_END:
        xprt_ckpt_end_decode(it->body, it->length, &n);
        if (!v->in_ckpt)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "CHECKPOINT_END(%llu) without a BEGIN",
                       (unsigned long long)n);
        if (n != v->open_n)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "CHECKPOINT_END(%llu) closes checkpoint %llu",
                       (unsigned long long)n, (unsigned long long)v->open_n);
        v->in_ckpt = false;
        if (!v->have_ckpt)
            v->sum.first_ckpt = n;
        v->have_ckpt = true;
        v->sum.last_ckpt = n;
        v->sum.checkpoints++;
        return 0;
    case XPRT_COLO_RAM_PAGES: {
        struct xprt_ram_pages_view pv;

        if (!v->in_ckpt)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "RAM_PAGES outside a checkpoint");
        xprt_ram_pages_decode(it->body, it->length, 0, 0, &pv);
        if ((1u << pv.page_shift) != v->sum.page_size)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "page size %u differs from HELLO's %u",
                       1u << pv.page_shift, v->sum.page_size);
        v->sum.pages += pv.count;
        return 0;
    }
    case XPRT_COLO_DEVICE_STATE:
        if (!v->in_ckpt)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "DEVICE_STATE outside a checkpoint");
        v->sum.devstate_bytes += it->length - XPRT_DEVSTATE_HEAD_SIZE;
        return 0;
    case XPRT_COLO_DISK_INFO: {
        struct xprt_disk_info d;

        if (!v->in_ckpt || !v->open_full)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "DISK_INFO outside a FULL checkpoint");
        xprt_disk_info_decode(it->body, it->length, &d); /* reader checked */
        v->disk_size[d.disk] = d.size + 1;
        return 0;
    }
    case XPRT_COLO_DISK_WRITE: {
        struct xprt_disk_write_view w;

        if (!v->in_ckpt)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "DISK_WRITE outside a checkpoint");
        xprt_disk_write_decode(it->body, it->length, &w);
        if (!v->disk_size[w.disk])
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "DISK_WRITE to disk %u without its DISK_INFO", w.disk);
        if (w.offset + w.length > v->disk_size[w.disk] - 1)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "DISK_WRITE of %u octets at %llu past the end of disk "
                       "%u (%llu octets)",
                       w.length, (unsigned long long)w.offset, w.disk,
                       (unsigned long long)(v->disk_size[w.disk] - 1));
        v->sum.disk_writes++;
        if (!(w.flags & XPRT_DISK_WRITE_ZEROES))
            v->sum.disk_bytes += w.length;
        return 0;
    }
    case XPRT_COLO_END:
        if (v->in_ckpt)
            return bad(v, it, -COLO_ESTREAM_TRUNCATED,
                       "END inside checkpoint %llu",
                       (unsigned long long)v->open_n);
        return 0;
    default:
        return 0;
    }
}

static int libxc_page_data(struct xprt_verifier *v, const struct xprt_item *it)
{
    uint32_t count, npages = 0;

    if (it->length < 8)
        return bad(v, it, -COLO_ESTREAM_CORRUPT, "PAGE_DATA too short");
    count = colo_get_le32(it->body);
    if (!count || colo_get_le32(it->body + 4))
        return bad(v, it, -COLO_ESTREAM_CORRUPT,
                   "PAGE_DATA count 0 or reserved bits set");
    if ((uint64_t)count * 8 > it->length - 8)
        return bad(v, it, -COLO_ESTREAM_CORRUPT,
                   "PAGE_DATA count %u larger than the record", count);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t pfn = colo_get_le64(it->body + 8 + 8 * (size_t)i);
        uint32_t type = (uint32_t)(pfn >> 60);

        if (pfn & 0x0ff0000000000000ull)
            return bad(v, it, -COLO_ESTREAM_CORRUPT, "reserved bits in pfn[%u]",
                       i);
        if (type >= 5 && type <= 8)
            return bad(v, it, -COLO_ESTREAM_CORRUPT,
                       "invalid page type in pfn[%u]", i);
        if (type <= 4 || (type >= 9 && type <= 0xc))
            npages++;
    }
    if ((uint64_t)it->length != 8 + (uint64_t)count * 8 + npages * 4096ull)
        return bad(
            v, it, -COLO_ESTREAM_CORRUPT, "PAGE_DATA length %u, expected %llu",
            it->length,
            (unsigned long long)(8 + (uint64_t)count * 8 + npages * 4096ull));
    v->sum.pages += npages;
    return 0;
}

static int xen_record(struct xprt_verifier *v, const struct xprt_item *it)
{
    uint32_t id, idx;

    if (it->layer == XPRT_LAYER_LIBXC) {
        if (it->type == XPRT_LIBXC_PAGE_DATA)
            return libxc_page_data(v, it);
        return 0;
    }
    switch (it->type) {
    case XPRT_LIBXL_EMULATOR_CONTEXT:
    case XPRT_LIBXL_EMULATOR_XENSTORE_DATA:
        xprt_emulator_hdr_decode(it->body, it->length, &id, &idx);
        if (id > XPRT_EMULATOR_QEMU_UPSTREAM)
            return bad(v, it, -COLO_ESTREAM_CORRUPT, "unknown emulator id 0x%x",
                       id);
        if (it->type == XPRT_LIBXL_EMULATOR_CONTEXT)
            v->sum.devstate_bytes += it->length - 8;
        return 0;
    case XPRT_LIBXL_CHECKPOINT_END:
        v->sum.checkpoints++;
        return 0;
    default:
        return 0;
    }
}

static int item(struct xprt_verifier *v, const struct xprt_item *it)
{
    if (it->kind == XPRT_ITEM_HEADER) {
        if (it->type == XPRT_HDR_XL) {
            struct xprt_xl_hdr h;

            if (xprt_xl_hdr_parse(it->body, it->length, 0, &h) > 0)
                v->sum.config_bytes += h.config_len;
        }
        return 0;
    }
    v->sum.records++;
    switch (it->layer) {
    case XPRT_LAYER_COLO:
        v->sum.records_colo++;
        return colo_record(v, it);
    case XPRT_LAYER_LIBXL:
        v->sum.records_libxl++;
        return xen_record(v, it);
    case XPRT_LAYER_LIBXC:
        v->sum.records_libxc++;
        return xen_record(v, it);
    default:
        return 0;
    }
}

int xprt_verifier_push(struct xprt_verifier *v, const void *data, size_t len)
{
    const uint8_t *p = data;

    if (v->err)
        return v->err;
    while (len) {
        struct xprt_item it;
        ssize_t n = xprt_reader_push(&v->rd, p, len, &it);

        if (n < 0) {
            snprintf(v->why, sizeof(v->why), "%s", xprt_reader_why(&v->rd));
            v->err = (int)n;
            return v->err;
        }
        p += n;
        len -= (size_t)n;
        v->sum.bytes += (uint64_t)n;
        if (it.kind != XPRT_ITEM_NONE && item(v, &it) < 0)
            return v->err;
    }
    return 0;
}

int xprt_verifier_finish(struct xprt_verifier *v)
{
    int rc;

    v->sum.fmt = v->rd.fmt_cur;
    if (v->err)
        return v->err;
    rc = xprt_reader_eof(&v->rd);
    if (rc < 0) {
        snprintf(v->why, sizeof(v->why), "%s", xprt_reader_why(&v->rd));
        v->err = rc;
        return rc;
    }
    if (v->sum.fmt == XPRT_FMT_COLO && !v->seen_hello) {
        snprintf(v->why, sizeof(v->why), "colo stream without HELLO");
        v->err = -COLO_ESTREAM_CORRUPT;
    }
    return v->err;
}
