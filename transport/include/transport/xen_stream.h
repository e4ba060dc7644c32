/*
 * Xen's stream formats: libxl migration stream v2, the libxc stream it
 * carries, and xl's save-file header. Constants and field layouts follow
 * Xen's docs/specs/libxl-migration-stream.pandoc,
 * docs/specs/libxc-migration-stream.pandoc and tools/xl/xl_saverestore.c
 * (see docs/protocol.md for the byte layouts).
 *
 * - libxl header (16 bytes, big-endian): u64 ident "LibxlFmt", u32 version
 *   2, u32 options (bit 0 big-endian records, bit 1 legacy-converted, other
 *   bits reserved).
 * - libxc image header (24 bytes, big-endian): u64 marker ~0, u32 id "XENF",
 *   u32 version (2 or 3; libxenguest 4.17 writes 3), u16 options (bit 0
 *   endianness), u16 + u32 reserved.
 * - libxc domain header (16 bytes, records' order = little-endian): u32
 *   type, u16 page_shift, u16 reserved, u32 xen_major, u32 xen_minor.
 * - Records: record.h framing; the layers' type numbers below.
 */
#ifndef COLO_TRANSPORT_XEN_STREAM_H
#define COLO_TRANSPORT_XEN_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"

/* libxl v2 header */
#define XPRT_LIBXL_IDENT          0x4c6962786c466d74ull /* "LibxlFmt" */
#define XPRT_LIBXL_VERSION        2u
#define XPRT_LIBXL_OPT_BIG_ENDIAN (1u << 0)
#define XPRT_LIBXL_OPT_LEGACY     (1u << 1)
#define XPRT_LIBXL_HDR_SIZE       16u

/* libxl record types */
enum xprt_libxl_rec {
    XPRT_LIBXL_END = 0,
    XPRT_LIBXL_LIBXC_CONTEXT = 1,
    XPRT_LIBXL_EMULATOR_XENSTORE_DATA = 2,
    XPRT_LIBXL_EMULATOR_CONTEXT = 3,
    XPRT_LIBXL_CHECKPOINT_END = 4,
    XPRT_LIBXL_CHECKPOINT_STATE = 5,
};
#define XPRT_LIBXL_REC_KNOWN_MAX 5u

/* Emulator sub-header (EMULATOR_XENSTORE_DATA / EMULATOR_CONTEXT). */
#define XPRT_EMULATOR_UNKNOWN       0u
#define XPRT_EMULATOR_QEMU_TRAD     1u
#define XPRT_EMULATOR_QEMU_UPSTREAM 2u

/* CHECKPOINT_STATE body: u32 id. */
enum xprt_ckpt_state {
    XPRT_CKPT_NEW = 0,
    XPRT_CKPT_SVM_SUSPENDED = 1,
    XPRT_CKPT_SVM_READY = 2,
    XPRT_CKPT_SVM_RESUMED = 3,
};

/* libxc image header */
#define XPRT_LIBXC_MARKER      0xffffffffffffffffull
#define XPRT_LIBXC_IDENT       0x58454e46u /* "XENF" */
#define XPRT_LIBXC_VERSION     3u
#define XPRT_LIBXC_IHDR_SIZE   24u
#define XPRT_LIBXC_DHDR_SIZE   16u
#define XPRT_LIBXC_DOM_X86_PV  1u
#define XPRT_LIBXC_DOM_X86_HVM 2u
#define XPRT_LIBXC_DOM_X86_PVH 3u
#define XPRT_LIBXC_DOM_ARM     4u

/* libxc record types (4.17) */
enum xprt_libxc_rec {
    XPRT_LIBXC_END = 0x00,
    XPRT_LIBXC_PAGE_DATA = 0x01,
    XPRT_LIBXC_X86_PV_INFO = 0x02,
    XPRT_LIBXC_X86_PV_P2M_FRAMES = 0x03,
    XPRT_LIBXC_X86_PV_VCPU_BASIC = 0x04,
    XPRT_LIBXC_X86_PV_VCPU_EXTENDED = 0x05,
    XPRT_LIBXC_X86_PV_VCPU_XSAVE = 0x06,
    XPRT_LIBXC_SHARED_INFO = 0x07,
    XPRT_LIBXC_X86_TSC_INFO = 0x08,
    XPRT_LIBXC_HVM_CONTEXT = 0x09,
    XPRT_LIBXC_HVM_PARAMS = 0x0a,
    XPRT_LIBXC_TOOLSTACK = 0x0b,
    XPRT_LIBXC_X86_PV_VCPU_MSRS = 0x0c,
    XPRT_LIBXC_VERIFY = 0x0d,
    XPRT_LIBXC_CHECKPOINT = 0x0e,
    XPRT_LIBXC_CHECKPOINT_DIRTY_PFN_LIST = 0x0f,
    XPRT_LIBXC_STATIC_DATA_END = 0x10,
    XPRT_LIBXC_X86_CPUID_POLICY = 0x11,
    XPRT_LIBXC_X86_MSR_POLICY = 0x12,
};
#define XPRT_LIBXC_REC_KNOWN_MAX 0x12u

/* ---- headers: encode (always little-endian records) / decode ---------- */

void xprt_libxl_hdr_encode(uint8_t out[XPRT_LIBXL_HDR_SIZE]);
/* Checks ident, version, reserved bits; a big-endian stream is
 * -COLO_ESTREAM_UNSUPPORTED. *ret_options may be NULL. */
int xprt_libxl_hdr_check(const uint8_t in[XPRT_LIBXL_HDR_SIZE],
                         uint32_t *ret_options);

void xprt_libxc_ihdr_encode(uint8_t out[XPRT_LIBXC_IHDR_SIZE],
                            uint32_t version);
int xprt_libxc_ihdr_check(const uint8_t in[XPRT_LIBXC_IHDR_SIZE],
                          uint32_t *ret_version);

struct xprt_libxc_dhdr {
    uint32_t type;       /* XPRT_LIBXC_DOM_* */
    uint16_t page_shift; /* 12 on x86 */
    uint32_t xen_major;
    uint32_t xen_minor;
};
void xprt_libxc_dhdr_encode(uint8_t out[XPRT_LIBXC_DHDR_SIZE],
                            const struct xprt_libxc_dhdr *d);
int xprt_libxc_dhdr_decode(const uint8_t in[XPRT_LIBXC_DHDR_SIZE],
                           struct xprt_libxc_dhdr *ret);

/* ---- libxl record bodies ------------------------------------------------ */

/* EMULATOR_* records: u32 emulator_id, u32 index, then data. */
int xprt_emulator_hdr_decode(const uint8_t *body, size_t len, uint32_t *ret_id,
                             uint32_t *ret_index);
void xprt_emulator_hdr_encode(uint8_t out[8], uint32_t id, uint32_t index);
/* CHECKPOINT_STATE: exactly u32 id (longer bodies are corrupt). */
void xprt_ckpt_state_encode(uint8_t out[4], uint32_t id);
int xprt_ckpt_state_decode(const uint8_t *body, size_t len, uint32_t *ret_id);

/*
 * A minimal valid libxc stream segment: image header (v3), domain header
 * (x86 HVM, page shift 12, Xen 4.17) and END. Useful for plain streams
 * written without a hypervisor (tests, QEMU-only save files that still want
 * a libxl-valid shape). Appends XPRT_LIBXC_MIN_STREAM_SIZE bytes.
 */
#define XPRT_LIBXC_MIN_STREAM_SIZE (24u + 16u + 8u)
int xprt_libxc_min_stream(struct colo_buf *out);

/* ---- xl save-file header ----------------------------------------------- */

/*
 * 32-byte magic "Xen saved domain, xl format\n \0 \r", then in the saving
 * host's byte order: u32 byteorder marker 0x01020304, u32 mandatory_flags,
 * u32 optional_flags, u32 optional_data_len, then optional_data_len bytes.
 * With mandatory flag JSON the optional data starts with u32 config_len and
 * config_len bytes of JSON (xl includes a trailing NUL in config_len).
 * colo writes native little-endian, reads either order.
 */
#define XPRT_XL_MAGIC              "Xen saved domain, xl format\n \0 \r"
#define XPRT_XL_MAGIC_SIZE         32u
#define XPRT_XL_FIXED_SIZE         48u
#define XPRT_XL_BYTEORDER          0x01020304u
#define XPRT_XL_MANDATORY_JSON     (1u << 0)
#define XPRT_XL_MANDATORY_STREAMV2 (1u << 1)
#define XPRT_XL_MANDATORY_KNOWN \
    (XPRT_XL_MANDATORY_JSON | XPRT_XL_MANDATORY_STREAMV2)
/* Default cap on optional data (the config JSON) a reader accepts. */
#define XPRT_XL_OPT_MAX_DEFAULT (4u << 20)

struct xprt_xl_hdr {
    uint32_t mandatory_flags;
    uint32_t optional_flags;
    uint32_t optional_data_len;
    bool swapped;       /* written in the other byte order */
    const char *config; /* borrowed: into the parsed bytes; NULL if none */
    size_t config_len;  /* bytes of JSON, without a trailing NUL */
};

/*
 * Append an xl header with STREAMv2 set and, if json != NULL, the JSON
 * config (json_len bytes, a NUL is added as xl does) to out.
 * -COLO_ESTREAM_TOO_BIG if the JSON exceeds XPRT_XL_OPT_MAX_DEFAULT.
 */
int xprt_xl_hdr_write(struct colo_buf *out, const char *json, size_t json_len);

/*
 * Parse an xl header at the start of p[0..len). Returns the header's total
 * size (> 0) when complete, 0 when more bytes are needed, or a negative
 * error: -COLO_ESTREAM_CORRUPT (magic, byte-order marker, config length
 * inconsistent with optional data), -COLO_ESTREAM_TOO_BIG (optional data
 * over max_opt; 0 = default), -COLO_ESTREAM_UNSUPPORTED (unknown mandatory
 * flag, or no STREAMv2: a legacy libxc-only save file).
 * ret->config points into p.
 */
ssize_t xprt_xl_hdr_parse(const uint8_t *p, size_t len, uint32_t max_opt,
                          struct xprt_xl_hdr *ret);

#endif
