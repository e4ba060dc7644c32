/*
 * Stream verification: the reader (record.h) plus the rules a well-formed
 * stream follows beyond framing, for `colo verify-stream` and tests.
 *
 * Checks, in addition to headers, lengths, padding and layer tracking:
 *   colo streams  HELLO is the first record; CHECKPOINT_BEGIN(n) and
 *                 CHECKPOINT_END(n) alternate with equal n, and each
 *                 BEGIN is the previous one + 1; RAM_PAGES and
 *                 DEVICE_STATE only inside a checkpoint; RAM_PAGES page
 *                 size equals HELLO's; every body decodes (codecs' caps);
 *                 END only outside a checkpoint; DISK_INFO only inside a
 *                 FULL checkpoint; DISK_WRITE only inside a checkpoint,
 *                 for a disk announced by a DISK_INFO, within its size.
 *   libxl streams emulator records carry a known emulator id; libxc
 *                 CHECKPOINT and libxl CHECKPOINT_END pair up (the reader
 *                 enforces the order); PAGE_DATA count/pfn/length agree.
 * On failure, why says where (byte offset, record index and type) and why.
 */
#ifndef COLO_TRANSPORT_VERIFY_H
#define COLO_TRANSPORT_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/record.h"

struct xprt_verify_summary {
    enum xprt_format fmt; /* resolved */
    uint64_t bytes;
    uint64_t records;
    uint64_t records_libxl, records_libxc, records_colo;
    uint64_t checkpoints; /* completed (colo END(n) / libxl CKPT_END) */
    uint64_t first_ckpt, last_ckpt; /* colo numbering, if checkpoints */
    uint64_t pages;                 /* RAM_PAGES / PAGE_DATA pages */
    uint64_t devstate_bytes;        /* DEVICE_STATE / EMULATOR_CONTEXT bodies */
    uint64_t config_bytes;          /* xl JSON / VM_CONFIG */
    uint64_t disk_writes;           /* DISK_WRITE records */
    uint64_t disk_bytes;            /* their data octets */
    uint32_t page_size;             /* colo HELLO */
    char vm_name[256];              /* colo HELLO */
};

struct xprt_verifier {
    struct xprt_reader rd;
    struct xprt_verify_summary sum;
    bool seen_hello;
    bool in_ckpt;
    bool have_ckpt;
    bool open_full; /* the open checkpoint is FULL */
    uint64_t open_n;
    uint64_t disk_size[64]; /* DISK_INFO sizes (+1; 0: not announced) */
    int err;
    char why[320];
};

void xprt_verifier_init(struct xprt_verifier *v, enum xprt_format fmt,
                        uint32_t max_record);
void xprt_verifier_dispose(struct xprt_verifier *v);
/* Consume all of data (any split). 0 or a sticky negative error. */
int xprt_verifier_push(struct xprt_verifier *v, const void *data, size_t len);
/* End of input: 0 if the stream was complete and valid. */
int xprt_verifier_finish(struct xprt_verifier *v);
const char *xprt_verifier_why(const struct xprt_verifier *v);

#endif
