/*
 * colo's own records, for QEMU guests and for colo's link.
 *
 * Type range: 0x80C0_0000 - 0x80C0_FFFF ("C0" for colo). Bit 31 is set, so
 * a Xen reader would treat them as optional records and never mistake them
 * for libxl/libxc ones. Within the range:
 *   0x80C0_0000 - 0x80C0_7FFF  mandatory: a colo reader that does not know
 *                              the type fails (-COLO_ESTREAM_UNSUPPORTED);
 *   0x80C0_8000 - 0x80C0_EFFF  optional: unknown ones are skipped;
 *   0x80C0_F000 - 0x80C0_FFFF  link-internal (handshake), never delivered
 *                              to the user and never in a stream.
 * A colo stream (save file or replication stream) is a 16-byte header
 * "ColoStrm" (same shape as libxl's: u64 ident, u32 version 1, u32 options,
 * big-endian), colo records, and END (type 0, empty) as in libxl.
 *
 * Every body is little-endian, fixed-width, field by field; every count and
 * length has a cap and a decode that enforces it. Layouts are in
 * docs/protocol.md. Encoders append a whole record (header, body, padding)
 * or, for the bulky ones, give the small head to send before borrowed data.
 * Decoders take a record body and return views into it (borrowed).
 *
 * The engine decides the order of records; verify-stream checks the rules
 * written in docs/protocol.md (HELLO first, BEGIN(n)/END(n) pairs numbered
 * n, n+1, ..., RAM_PAGES/DEVICE_STATE only inside a checkpoint, END last).
 */
#ifndef COLO_TRANSPORT_COLO_REC_H
#define COLO_TRANSPORT_COLO_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/buf.h"

/* Stream header */
#define XPRT_COLO_IDENT    0x436f6c6f5374726dull /* "ColoStrm" */
#define XPRT_COLO_VERSION  1u
#define XPRT_COLO_HDR_SIZE 16u
void xprt_colo_hdr_encode(uint8_t out[XPRT_COLO_HDR_SIZE]);
int xprt_colo_hdr_check(const uint8_t in[XPRT_COLO_HDR_SIZE]);

#define XPRT_COLO_REC_BASE     0x80C00000u
#define XPRT_COLO_REC_MASK     0xFFFF0000u
#define XPRT_COLO_OPTIONAL_BIT 0x00008000u
#define XPRT_COLO_LINK_FIRST   0x80C0F000u

static inline bool xprt_is_colo_type(uint32_t type)
{
    return (type & XPRT_COLO_REC_MASK) == XPRT_COLO_REC_BASE;
}

enum xprt_colo_rec {
    XPRT_COLO_END = 0x00000000u, /* libxl's END, ends a colo stream too */
    XPRT_COLO_HELLO = 0x80C00001u,
    XPRT_COLO_VM_CONFIG = 0x80C00002u,
    XPRT_COLO_RAM_PAGES = 0x80C00003u,
    XPRT_COLO_DEVICE_STATE = 0x80C00004u,
    XPRT_COLO_CHECKPOINT_BEGIN = 0x80C00005u,
    XPRT_COLO_CHECKPOINT_END = 0x80C00006u,
    XPRT_COLO_ACK = 0x80C00007u,
    XPRT_COLO_HEARTBEAT = 0x80C00008u, /* link-level; swallowed by links */
    XPRT_COLO_ERROR = 0x80C00009u,
    XPRT_COLO_DISK_INFO = 0x80C0000Au,
    XPRT_COLO_DISK_WRITE = 0x80C0000Bu,
    XPRT_COLO_HANDOVER = 0x80C0000Cu, /* migrate: READY (S->P), GO (P->S) */
    XPRT_COLO_REC_KNOWN_LAST = XPRT_COLO_HANDOVER,
    /* link-internal handshake (link.h; docs/protocol.md "Handshake") */
    XPRT_LINK_HELLO = 0x80C0F001u,
    XPRT_LINK_AUTH = 0x80C0F002u,    /* link version 1 only (refused) */
    XPRT_LINK_AUTH_OK = 0x80C0F003u, /* link version 1 only (refused) */
    XPRT_LINK_REJECT = 0x80C0F004u,
};

/* LINK_HELLO's flags word (link version 2): the protection this side
 * requires. Exactly one; both sides must send the same (no negotiation,
 * so no downgrade). */
#define XPRT_LINK_HELLO_PLAIN    (1u << 0) /* --insecure */
#define XPRT_LINK_HELLO_TLS_PSK  (1u << 1) /* TLS 1.3, PSK from the key */
#define XPRT_LINK_HELLO_TLS_X509 (1u << 2) /* TLS 1.3, --tls-creds */

/* Caps */
#define XPRT_COLO_NAME_MAX       255u       /* VM name bytes */
#define XPRT_COLO_CONFIG_MAX     (1u << 20) /* VM_CONFIG JSON bytes */
#define XPRT_COLO_ERROR_TEXT_MAX 4096u
#define XPRT_COLO_RAM_PAGES_MAX  8192u /* pages per RAM_PAGES record */
#define XPRT_COLO_PAGE_SHIFT_MIN 12u
#define XPRT_COLO_PAGE_SHIFT_MAX 21u

/* Roles in HELLO */
enum xprt_colo_role {
    XPRT_ROLE_PRIMARY = 0,   /* sender of checkpoints */
    XPRT_ROLE_SECONDARY = 1, /* receiver */
    XPRT_ROLE_SAVEFILE = 2,  /* a save file written by `colo save` */
};

/* ---- HELLO: u32 version, u32 role, u32 page_size, u32 flags,
 *             u64 ram_size, u32 name_len, u32 reserved, name bytes ------ */
struct xprt_colo_hello {
    uint32_t version;                     /* XPRT_COLO_VERSION */
    uint32_t role;                        /* enum xprt_colo_role */
    uint32_t page_size;                   /* power of two, 4 KiB .. 2 MiB */
    uint32_t flags;                       /* XPRT_HELLO_FLAG_* */
    uint64_t ram_size;                    /* bytes of guest RAM */
    char vm_name[XPRT_COLO_NAME_MAX + 1]; /* NUL-terminated */
};
/*
 * HELLO flags: every bit any colo HELLO carries is defined here, and only
 * here (docs/protocol.md lists them).
 *   COLO       COLO mode (the secondary's copy runs between checkpoints);
 *              else Remus. With XEN|XEN_REMUS: the Xen stream in COLO mode.
 *   MIGRATE    a migration: one checkpoint, the receiver resumes after it
 *   XEN        the VM is a Xen domain: after HELLO + VM_CONFIG the stream
 *              is libxl's (ckpt_secondary_cbs.xen_incoming)
 *   XEN_REMUS  ... and it is to be protected (a checkpointed libxl stream)
 */
#define XPRT_HELLO_FLAG_COLO      (1u << 0)
#define XPRT_HELLO_FLAG_MIGRATE   (1u << 1)
#define XPRT_HELLO_FLAG_XEN       (1u << 2)
#define XPRT_HELLO_FLAG_XEN_REMUS (1u << 3)
int xprt_colo_hello_write(struct colo_buf *out,
                          const struct xprt_colo_hello *h);
int xprt_colo_hello_decode(const uint8_t *body, size_t len,
                           struct xprt_colo_hello *ret);

/* ---- VM_CONFIG: JSON text, no NUL, 1 .. XPRT_COLO_CONFIG_MAX bytes ----- */
int xprt_colo_config_write(struct colo_buf *out, const char *json, size_t len);
/* Checks the size and that there is no NUL; *ret_json points into body. */
int xprt_colo_config_decode(const uint8_t *body, size_t len,
                            const char **ret_json, size_t *ret_len);

/* ---- RAM_PAGES: u32 count, u32 page_shift, u64 pfn[count],
 *                 page data count << page_shift --------------------------- */
#define XPRT_RAM_PAGES_HEAD_SIZE(count) (8u + 8u * (size_t)(count))
/* Body length for count pages (fits u32 for every allowed count). */
size_t xprt_ram_pages_body_len(uint32_t count, uint32_t page_shift);
/*
 * Encode the head (count, page_shift, pfns) into out (which must hold
 * XPRT_RAM_PAGES_HEAD_SIZE(count) bytes); the pages follow it as borrowed
 * iovecs, so the caller sends {head, page0, page1, ...} without an extra
 * copy. -EINVAL for count 0 or over XPRT_COLO_RAM_PAGES_MAX, or a bad
 * page_shift.
 */
int xprt_ram_pages_head_encode(uint8_t *out, uint32_t count,
                               uint32_t page_shift, const uint64_t *pfns);
/*
 * The one builder of a RAM_PAGES record's body as iovecs, for any writer
 * (xprt_rec_writev_buf, xprt_link_sendv): encodes the head into head
 * (XPRT_RAM_PAGES_HEAD_SIZE(count) bytes) as iov[0], then pages[i] (1 <<
 * page_shift bytes of page pfns[i], borrowed), pages adjacent in memory
 * merged into one iovec. iov must hold count + 1 entries. Returns the
 * number of iovecs used, or xprt_ram_pages_head_encode's error.
 */
int xprt_ram_pages_iov(uint8_t *head, uint32_t count, uint32_t page_shift,
                       const uint64_t *pfns, const void *const *pages,
                       struct iovec *iov);
/* Whole record into a colo_buf (tests, small writers): pages[i] points to
 * 1 << page_shift bytes. */
int xprt_ram_pages_write(struct colo_buf *out, uint32_t count,
                         uint32_t page_shift, const uint64_t *pfns,
                         const void *const *pages);
struct xprt_ram_pages_view {
    uint32_t count;
    uint32_t page_shift;
    const uint8_t *pfns_le; /* count little-endian u64: xprt_ram_pages_pfn */
    const uint8_t *data;    /* count pages back to back */
};
/* max_count 0 = XPRT_COLO_RAM_PAGES_MAX. Checks count (1..max), page_shift
 * (expect_shift if nonzero), and that len is exactly head + pages. */
int xprt_ram_pages_decode(const uint8_t *body, size_t len, uint32_t max_count,
                          uint32_t expect_shift,
                          struct xprt_ram_pages_view *ret);
uint64_t xprt_ram_pages_pfn(const struct xprt_ram_pages_view *v, uint32_t i);
static inline const uint8_t *
xprt_ram_pages_page(const struct xprt_ram_pages_view *v, uint32_t i)
{
    return v->data + ((size_t)i << v->page_shift);
}

/* ---- DEVICE_STATE: u32 format, u32 reserved, blob ------------------------ */
#define XPRT_DEVSTATE_QEMU_XEN_SAVE 1u /* xen-save-devices-state output */
#define XPRT_DEVSTATE_HEAD_SIZE     8u
void xprt_devstate_head_encode(uint8_t out[XPRT_DEVSTATE_HEAD_SIZE],
                               uint32_t format);
int xprt_devstate_write(struct colo_buf *out, uint32_t format, const void *blob,
                        size_t len);
int xprt_devstate_decode(const uint8_t *body, size_t len, uint32_t *ret_format,
                         const uint8_t **ret_blob, size_t *ret_len);

/* ---- CHECKPOINT_BEGIN: u64 n, u32 flags, u32 reserved
 *      CHECKPOINT_END:   u64 n, u64 reserved
 *      ACK:              u64 n, i32 status (0 committed, else -COLO_E*),
 *                        u32 reserved -------------------------------------- */
#define XPRT_CKPT_FLAG_FULL (1u << 0) /* carries all of RAM (first one) */
#define XPRT_CKPT_BODY_SIZE 16u
int xprt_ckpt_begin_write(struct colo_buf *out, uint64_t n, uint32_t flags);
int xprt_ckpt_begin_decode(const uint8_t *body, size_t len, uint64_t *ret_n,
                           uint32_t *ret_flags);
int xprt_ckpt_end_write(struct colo_buf *out, uint64_t n);
int xprt_ckpt_end_decode(const uint8_t *body, size_t len, uint64_t *ret_n);
int xprt_ack_write(struct colo_buf *out, uint64_t n, int32_t status);
int xprt_ack_decode(const uint8_t *body, size_t len, uint64_t *ret_n,
                    int32_t *ret_status);
/* Bodies only (for xprt_link_send): 16 bytes each. */
void xprt_ckpt_begin_encode(uint8_t out[16], uint64_t n, uint32_t flags);
void xprt_ckpt_end_encode(uint8_t out[16], uint64_t n);
void xprt_ack_encode(uint8_t out[16], uint64_t n, int32_t status);

/* ---- DISK_INFO: u32 disk, u32 flags (0), u64 size, u32 id_len,
 *                 u32 reserved, id (no NUL) -------------------------------
 * Opens a disk's full sync inside a FULL checkpoint: the receiver's image
 * of disk `disk` becomes all zeroes of `size` octets, then the
 * checkpoint's DISK_WRITEs fill it. */
#define XPRT_DISK_MAX        64u          /* disks per VM */
#define XPRT_DISK_ID_MAX     64u          /* id octets */
#define XPRT_DISK_WRITE_MAX  (4u << 20)   /* data octets per DISK_WRITE */
#define XPRT_DISK_ZEROES_MAX (1u << 30)   /* length of a ZEROES DISK_WRITE */
#define XPRT_DISK_SIZE_MAX   (1ull << 50) /* 1 PiB */
struct xprt_disk_info {
    uint32_t disk;
    uint32_t flags;
    uint64_t size;
    char id[XPRT_DISK_ID_MAX + 1]; /* NUL-terminated */
};
int xprt_disk_info_write(struct colo_buf *out, const struct xprt_disk_info *d);
int xprt_disk_info_decode(const uint8_t *body, size_t len,
                          struct xprt_disk_info *ret);

/* ---- DISK_WRITE: u32 disk, u32 flags (bit 0 ZEROES), u64 offset,
 *                  u32 length, u32 reserved, data (length octets; none
 *                  with ZEROES) -------------------------------------------
 * One guest write of the checkpoint's epoch (or a full-sync extent),
 * applied in stream order. Caps: disk < XPRT_DISK_MAX, data length
 * 1..XPRT_DISK_WRITE_MAX, ZEROES length 1..XPRT_DISK_ZEROES_MAX, offset +
 * length <= 2^63. */
#define XPRT_DISK_WRITE_ZEROES    (1u << 0)
#define XPRT_DISK_WRITE_HEAD_SIZE 24u
void xprt_disk_write_head_encode(uint8_t out[XPRT_DISK_WRITE_HEAD_SIZE],
                                 uint32_t disk, uint32_t flags, uint64_t offset,
                                 uint32_t length);
int xprt_disk_write_write(struct colo_buf *out, uint32_t disk, uint32_t flags,
                          uint64_t offset, const void *data, uint32_t length);
struct xprt_disk_write_view {
    uint32_t disk;
    uint32_t flags;
    uint64_t offset;
    uint32_t length;
    const uint8_t *data; /* NULL with ZEROES */
};
int xprt_disk_write_decode(const uint8_t *body, size_t len,
                           struct xprt_disk_write_view *ret);
/* ---- HANDOVER: u64 n, u32 step, u32 reserved. The end of a migrate:
 *      READY (S->P) the device state of n is loaded, the guest is paused
 *                   and has not touched its disks; S waits for GO
 *      GO    (P->S) the source has let go of the guest: run it
 *      S answers GO with ACK(n, 0) once the guest runs. ------------------- */
#define XPRT_HANDOVER_READY 1u
#define XPRT_HANDOVER_GO    2u
void xprt_handover_encode(uint8_t out[16], uint64_t n, uint32_t step);
int xprt_handover_decode(const uint8_t *body, size_t len, uint64_t *ret_n,
                         uint32_t *ret_step);

/* ---- HEARTBEAT: u64 sender's monotonic ns (informative) ------------------ */
/* ---- ERROR: i32 code (-COLO_E* / -errno), u32 text_len, text (no NUL) ---- */
int xprt_error_write(struct colo_buf *out, int32_t code, const char *text);
/* ret_text gets a NUL-terminated copy truncated to textsz - 1. */
int xprt_error_decode(const uint8_t *body, size_t len, int32_t *ret_code,
                      char *ret_text, size_t textsz);

/*
 * Generic check of a colo record body by type (used by readers and
 * verify-stream): the per-type decode with default caps. Unknown optional
 * colo types pass; unknown mandatory ones are -COLO_ESTREAM_UNSUPPORTED.
 */
int xprt_colo_rec_check(uint32_t type, const uint8_t *body, size_t len);

#endif
