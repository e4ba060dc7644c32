/*
 * Records and the stream reader.
 *
 * Every byte colo sends between hosts or writes to a save file is a
 * sequence of records, framed as in Xen's migration streams:
 *
 *     u32 type | u32 body_length | body | zero padding to a multiple of 8
 *
 * Record headers are little-endian (libxl/libxc options bit 0 = 0, the only
 * order colo writes or accepts). Stream headers (libxl "LibxlFmt", libxc
 * "XENF", colo "ColoStrm") are big-endian as their specs say; the xl save
 * header is in the saving host's order (see xen_stream.h).
 *
 * Writing: xprt_rec_write*() emit one whole record (header, body, padding)
 * into an evbuffer, a colo_buf or a blocking fd.
 *
 * Reading: struct xprt_reader is an incremental ("push") parser. Bytes go in
 * in any split, down to one byte at a time; complete items come out one at a
 * time. An item is a stream header or a record. The reader knows the stream
 * formats and, for libxl streams, which layer (libxl or libxc) owns the next
 * record; see enum xprt_format.
 *
 *     struct xprt_reader r;
 *     xprt_reader_init(&r, XPRT_FMT_LIBXL, 0);
 *     while (len > 0) {
 *         struct xprt_item it;
 *         ssize_t n = xprt_reader_push(&r, data, len, &it);
 *         if (n < 0) -> error; xprt_reader_why(&r) says where and why
 *         data += n; len -= n;
 *         if (it.kind != XPRT_ITEM_NONE) handle(&it);  // valid until the
 *     }                                                // next push
 *     at EOF: rc = xprt_reader_eof(&r);  // -COLO_ESTREAM_TRUNCATED mid-item
 *
 * The reader never copies an item that arrives whole in one push (the body
 * points into the caller's bytes); a split item is gathered in a private
 * buffer capped by max_record.
 */
#ifndef COLO_TRANSPORT_RECORD_H
#define COLO_TRANSPORT_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "common/buf.h"

struct evbuffer;

#define XPRT_REC_HDR_SIZE 8u
#define XPRT_REC_ALIGN    8u
/* libxc's cap on a record (MAX_RECORD_SIZE in xc_sr_common.h). */
#define XPRT_REC_MAX_DEFAULT (128u << 20)
/* Bit 31 of a type: optional record (a reader may skip it), per the specs. */
#define XPRT_REC_OPTIONAL 0x80000000u

/* Body length rounded up to the 8-octet boundary. */
static inline uint64_t xprt_rec_padded_len(uint32_t len)
{
    return ((uint64_t)len + 7u) & ~(uint64_t)7u;
}

/* Header of a record in wire form (8 bytes, little-endian). */
void xprt_rec_hdr_encode(uint8_t out[XPRT_REC_HDR_SIZE], uint32_t type,
                         uint32_t len);

/*
 * Write one whole record. The body is the concatenation of iov[0..n-1]
 * (n may be 0 for an empty body). Fails with -COLO_ESTREAM_TOO_BIG if the
 * body exceeds UINT32_MAX or XPRT_REC_MAX_DEFAULT (writers keep to the same
 * cap readers apply), -ENOMEM if the evbuffer cannot grow; the fd variant
 * writes with colo_write_all() (blocking fd) and returns -errno.
 * Nothing is appended to an evbuffer / colo_buf when the call fails.
 */
int xprt_rec_writev_evbuf(struct evbuffer *out, uint32_t type,
                          const struct iovec *iov, int n);
int xprt_rec_write_evbuf(struct evbuffer *out, uint32_t type, const void *body,
                         size_t len);
int xprt_rec_writev_buf(struct colo_buf *out, uint32_t type,
                        const struct iovec *iov, int n);
int xprt_rec_write_buf(struct colo_buf *out, uint32_t type, const void *body,
                       size_t len);
int xprt_rec_writev_fd(int fd, uint32_t type, const struct iovec *iov, int n);
int xprt_rec_write_fd(int fd, uint32_t type, const void *body, size_t len);

/* ---------------------------------------------------------------------- */
/* The reader                                                               */

/*
 * What the reader expects at the start of the stream and how it follows
 * layers.
 *
 * XPRT_FMT_RECORDS      bare records, any type (link traffic). No header.
 * XPRT_FMT_BACKCHANNEL  the COLO back channel S->P: no header; libxl
 *                       CHECKPOINT_STATE (5) and libxc
 *                       CHECKPOINT_DIRTY_PFN_LIST (0xF) records, tagged with
 *                       their layer; any other mandatory type is an error.
 * XPRT_FMT_LIBXL        libxl v2 header, libxl records; at LIBXC_CONTEXT the
 *                       libxc image + domain headers and libxc records
 *                       follow, until libxc END (back to libxl for good) or
 *                       libxc CHECKPOINT (back to libxl until libxl
 *                       CHECKPOINT_END, then libxc records again, without
 *                       new headers). Ends at libxl END.
 * XPRT_FMT_LIBXC        a bare libxc stream (image + domain header, records
 *                       up to END), as libxenguest writes it.
 * XPRT_FMT_XL           xl save header (with its optional data), then a
 *                       libxl v2 stream (mandatory flag STREAMv2 required).
 * XPRT_FMT_COLO         colo stream header "ColoStrm", colo records
 *                       (colo_rec.h) and END (0). Ends at END.
 * XPRT_FMT_AUTO         decide from the first 8 bytes between XL, LIBXL,
 *                       LIBXC and COLO (for `colo verify-stream`).
 */
enum xprt_format {
    XPRT_FMT_RECORDS = 0,
    XPRT_FMT_BACKCHANNEL,
    XPRT_FMT_LIBXL,
    XPRT_FMT_LIBXC,
    XPRT_FMT_XL,
    XPRT_FMT_COLO,
    XPRT_FMT_AUTO,
};

/* Which layer an item belongs to. */
enum xprt_layer {
    XPRT_LAYER_NONE = 0, /* bare records (XPRT_FMT_RECORDS) */
    XPRT_LAYER_XL,       /* the xl save header */
    XPRT_LAYER_LIBXL,    /* libxl v2 header / records */
    XPRT_LAYER_LIBXC,    /* libxc image/domain header / records */
    XPRT_LAYER_COLO,     /* colo stream header / records */
};

enum xprt_item_kind {
    XPRT_ITEM_NONE = 0, /* nothing complete yet */
    XPRT_ITEM_HEADER,   /* a stream header; type = enum xprt_hdr_kind */
    XPRT_ITEM_RECORD,   /* a record */
};

enum xprt_hdr_kind {
    XPRT_HDR_XL = 1,       /* xl save header + optional data */
    XPRT_HDR_LIBXL,        /* 16 bytes */
    XPRT_HDR_LIBXC_IMAGE,  /* 24 bytes */
    XPRT_HDR_LIBXC_DOMAIN, /* 16 bytes */
    XPRT_HDR_COLO,         /* 16 bytes */
};

/*
 * One complete item. For a record, body/length are the record body without
 * padding (already checked to be zero). For a header, body/length are the
 * raw header bytes (already validated) and type is an enum xprt_hdr_kind.
 * body is borrowed: valid until the next xprt_reader_push/eof/dispose.
 */
struct xprt_item {
    enum xprt_item_kind kind;
    enum xprt_layer layer;
    uint32_t type;
    uint32_t length;
    const uint8_t *body;
    uint64_t offset; /* stream offset of the item's first byte */
    uint64_t index;  /* 0-based count of records (headers not counted) */
};

/* Reader state; treat the fields as private (it is public so it can live on
 * the stack or inside another object). */
struct xprt_reader {
    enum xprt_format fmt;
    enum xprt_format fmt_cur; /* resolved format (AUTO decided) */
    uint32_t max_record;      /* cap on a body length (and xl opt data) */
    int state;                /* internal: what the next item is */
    int libxc_state;          /* internal: libxc segment tracking */
    bool ended;               /* the stream's END record was seen */
    bool checkpointed;        /* a libxc CHECKPOINT was seen */
    uint64_t offset;          /* bytes consumed so far */
    uint64_t index;           /* records completed so far */
    uint64_t item_offset;     /* where the item being gathered starts */
    uint32_t need;            /* bytes the current item needs in total */
    uint32_t cur_type;        /* 1: a gathered item was handed out */
    uint32_t cur_len;         /* reserved */
    struct colo_buf gather;   /* partial item */
    int err;                  /* sticky error (0: none) */
    char why[200];            /* human explanation of err */
};

/*
 * max_record: cap on any record body length a peer controls; 0 means
 * XPRT_REC_MAX_DEFAULT. A length exactly at the cap is accepted; one byte
 * over fails with -COLO_ESTREAM_TOO_BIG before any body byte is buffered.
 */
void xprt_reader_init(struct xprt_reader *r, enum xprt_format fmt,
                      uint32_t max_record);
void xprt_reader_dispose(struct xprt_reader *r); /* idempotent */

/*
 * Feed bytes. Consumes at most up to the end of one item and returns the
 * number of bytes consumed (>= 0; may be less than len when an item
 * completed: call again with the rest). Sets *ret_item (kind NONE when no
 * item completed). Errors are sticky (every later call returns the same
 * code): -COLO_ESTREAM_CORRUPT (bad magic, padding, layer order, data after
 * END), -COLO_ESTREAM_TOO_BIG (length over the cap),
 * -COLO_ESTREAM_UNSUPPORTED (version, endianness, unknown mandatory record
 * type in a typed format, unknown xl mandatory flag).
 */
ssize_t xprt_reader_push(struct xprt_reader *r, const void *data, size_t len,
                         struct xprt_item *ret_item);

/*
 * The input ended. Returns 0 if the reader is between items (for formats
 * with an END record, only after END: otherwise -COLO_ESTREAM_TRUNCATED
 * "stream ended without END"), -COLO_ESTREAM_TRUNCATED if an item was cut
 * short (why says "EOF in record header/body at offset X").
 */
int xprt_reader_eof(struct xprt_reader *r);

/*
 * Bytes needed to complete the next item, given the bytes peeked from the
 * front of the unconsumed input (peek may be shorter than the item). Returns
 * > 0: the item's total size if peek holds enough to know it, otherwise the
 * number of bytes needed to find out (always > peek_len). Returns a negative
 * error if the peeked header is already invalid (e.g. length over the cap).
 * Lets a caller read exactly one item at a time (no over-read) or wait until
 * a whole item is buffered. Only valid when no partial item is gathered.
 */
ssize_t xprt_reader_next_size(const struct xprt_reader *r, const void *peek,
                              size_t peek_len);

/* Switch format between items (e.g. a link that starts carrying a libxl
 * stream). Fails with -EBUSY while an item is half gathered. */
int xprt_reader_set_format(struct xprt_reader *r, enum xprt_format fmt);

/*
 * libxl streams: the libxc segment that started at LIBXC_CONTEXT (or
 * resumed after CHECKPOINT_END) was read by someone else (libxenguest in a
 * restore helper, on the lent fd) up to and including its END record
 * (at_checkpoint false: libxl owns the rest of the stream) or its
 * CHECKPOINT record (at_checkpoint true: libxl owns until CHECKPOINT_END).
 * -EINVAL unless libxc owns the next item (headers included).
 */
int xprt_reader_libxc_consumed(struct xprt_reader *r, bool at_checkpoint);

/* Sticky error and a one-line "at offset X, record #i type T: reason". */
int xprt_reader_error(const struct xprt_reader *r);
const char *xprt_reader_why(const struct xprt_reader *r);
/* The layer that owns the next item (for diagnostics and tests). */
enum xprt_layer xprt_reader_next_layer(const struct xprt_reader *r);

/* Names for diagnostics ("LIBXC_CONTEXT", "PAGE_DATA", "RAM_PAGES"...);
 * never NULL ("unknown"). */
const char *xprt_rec_type_name(enum xprt_layer layer, uint32_t type);
const char *xprt_layer_name(enum xprt_layer layer);
const char *xprt_format_name(enum xprt_format fmt);

#endif
