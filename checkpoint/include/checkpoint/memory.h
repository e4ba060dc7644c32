/*
 * Memory backends: where a checkpoint's pages come from (primary) and where
 * they go (secondary). The engines (primary.h, secondary.h) only talk to
 * struct ckpt_memory through its ops; the one backend is QEMU's RAM file
 * (here). Xen guests do not use these engines: libxenguest moves their
 * memory (xen_job.h).
 *
 * Pages are 4 KiB (CKPT_PAGE_SIZE); a page is named by its pfn, the page
 * number inside guest RAM (pfn * 4096 is the guest-physical address for the
 * QEMU backend below the PCI hole).
 *
 * Primary side (the invariant that makes everything else simple):
 *   the backend keeps a "shadow" equal to what the peer has received so
 *   far. capture() compares guest RAM against the shadow and copies each
 *   page that differs ONCE into the shadow; the output set references that
 *   copy, so the bytes sent are exactly the shadow's. A page the guest
 *   writes while it is being copied (precopy while running) differs from
 *   the shadow again and is found by the next capture: nothing is lost,
 *   nothing torn reaches a committed image.
 *   The first capture (or one with CKPT_CAPTURE_FULL) sends every non-zero
 *   page and marks the set "full": pages not in a full set are zero.
 *   With soft-dirty tracking (ckpt_mem_qemu_track) there is no compare and
 *   no shadow: the kernel names the pages QEMU wrote since the last
 *   capture, and capture() copies them into the set (by value) while the
 *   guest is paused; the guest may run as soon as it returns.
 *
 * Secondary side:
 *   stage(n, pages) keeps pages of checkpoint n in a staging area (pfn ->
 *   data; a later copy of the same pfn in n replaces the earlier one);
 *   commit(n) applies them to the RAM image in one go, only once the
 *   engine has seen CHECKPOINT_END(n) whole; discard() drops a half-received
 *   checkpoint and leaves the committed image untouched.
 *   Before the first commit there is no committed image to protect, so
 *   stage() writes straight into RAM (no double memory for the full sync)
 *   and commit() of a full set zeroes every page that was not sent.
 *   COLO mode: revert() first puts back, from the committed shadow, the
 *   pages the secondary's own running guest dirtied since the last commit.
 *
 * Caps: a pfn >= page_count() is -COLO_ESTREAM_CORRUPT; a stage() call with
 * more than CKPT_MAX_PAGES_PER_RECORD pages is -COLO_ESTREAM_TOO_BIG. The
 * engine checks record sizes before it calls here, the backend checks again.
 */
#ifndef COLO_CHECKPOINT_MEMORY_H
#define COLO_CHECKPOINT_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CKPT_PAGE_SHIFT 12
#define CKPT_PAGE_SIZE  4096u
/* Cap on pages in one RAM_PAGES record (2 MiB of data). */
#define CKPT_MAX_PAGES_PER_RECORD 512u
/* Cap on guest RAM a peer may announce (VM_CONFIG / HELLO): 64 GiB. */
#define CKPT_MAX_RAM_BYTES (64ull << 30)

/*
 * A set of pages. Two forms:
 *   - by value: pfns[i] names the 4 KiB at data + i * CKPT_PAGE_SIZE
 *     (ckpt_pageset_add);
 *   - by reference (base != NULL): page i is at base + pfns[i] * 4 KiB.
 *     capture() of the QEMU backend fills this form pointing into its
 *     shadow: the pages are copied once, RAM -> shadow, inside the pause;
 *     the link copies them out while the guest runs. They stay valid until
 *     the next capture() or reset_shadow().
 * Use ckpt_pageset_page() to read either. Reuse a set across checkpoints
 * (ckpt_pageset_reset keeps the memory).
 */
struct ckpt_pageset {
    uint64_t *pfns;
    uint8_t *data;
    size_t count;
    size_t cap;
    bool full;           /* pages not in the set are zero */
    const uint8_t *base; /* by reference: see above; else NULL */
};

/* Page i of the set (either form). */
static inline const uint8_t *ckpt_pageset_page(const struct ckpt_pageset *ps,
                                               size_t i)
{
    return ps->base ? ps->base + (ps->pfns[i] << CKPT_PAGE_SHIFT)
                    : ps->data + i * (size_t)CKPT_PAGE_SIZE;
}

void ckpt_pageset_init(struct ckpt_pageset *ps);
void ckpt_pageset_reset(struct ckpt_pageset *ps);
void ckpt_pageset_dispose(struct ckpt_pageset *ps); /* idempotent */
/* Append one page (copies 4 KiB from src). */
int ckpt_pageset_add(struct ckpt_pageset *ps, uint64_t pfn, const void *src);

/* Where capture() spent its time (for metrics and the benchmark). */
struct ckpt_capture_stats {
    uint64_t scan_ns;     /* comparing RAM against the shadow */
    uint64_t copy_ns;     /* copying dirty pages out and into the shadow */
    uint64_t dirty_pages; /* pages put in the set */
    uint64_t zero_pages;  /* full capture: zero pages elided */
};

/* capture() flags */
#define CKPT_CAPTURE_FULL 0x1u /* ignore the shadow: every non-zero page */

struct ckpt_memory;

struct ckpt_memory_ops {
    const char *name;
    /* Number of 4 KiB pages of guest RAM. */
    uint64_t (*page_count)(struct ckpt_memory *m);

    /* Primary. Find the pages changed since the last capture, append them
     * to out (which is reset first), update the shadow. */
    int (*capture)(struct ckpt_memory *m, unsigned flags,
                   struct ckpt_pageset *out, struct ckpt_capture_stats *st);
    /* Primary. Forget the shadow: the next capture is full (a new peer). */
    void (*reset_shadow)(struct ckpt_memory *m);

    /* Secondary, optional (may be NULL). Checkpoint ckpt begins (full:
     * it carries all of RAM). Lets a backend prepare outside the pause. */
    int (*begin)(struct ckpt_memory *m, uint64_t ckpt, bool full);
    /* Secondary. Stage n pages of checkpoint ckpt (see above). */
    int (*stage)(struct ckpt_memory *m, uint64_t ckpt, const uint64_t *pfns,
                 const uint8_t *data, size_t n);
    /* Secondary. Apply everything staged for ckpt. full: the checkpoint
     * was a full set (zero every page it did not contain). */
    int (*commit)(struct ckpt_memory *m, uint64_t ckpt, bool full);
    /* Secondary. Drop what is staged; the committed image is untouched. */
    void (*discard)(struct ckpt_memory *m);
    /* Secondary, COLO mode. Restore pages that differ from the committed
     * image (the secondary's guest wrote them). Returns pages restored. */
    int (*revert)(struct ckpt_memory *m);

    void (*free)(struct ckpt_memory *m);
};

struct ckpt_memory {
    const struct ckpt_memory_ops *ops;
};

/* Convenience wrappers: ckpt_memory_free accepts NULL. */
void ckpt_memory_free(struct ckpt_memory *m);

/* ---- The QEMU backend: a memory-backend-file (share=on) RAM file ---- */

/* ckpt_mem_qemu_open() flags */
#define CKPT_MEM_PRIMARY   0x1u /* keep a shadow for capture() */
#define CKPT_MEM_SECONDARY 0x2u /* staging for stage()/commit() */
#define CKPT_MEM_COLO      0x4u /* secondary: keep a committed shadow */
#define CKPT_MEM_CREATE    0x8u /* create/size the file if missing */

/*
 * Map the RAM file at path (size bytes, a multiple of 4 KiB, at most
 * CKPT_MAX_RAM_BYTES) MAP_SHARED and pre-fault it. The file must already be
 * size bytes unless CKPT_MEM_CREATE is given. The fd is closed after
 * mapping. QEMU may be running on the file already.
 */
int ckpt_mem_qemu_open(const char *path, size_t size, unsigned flags,
                       struct ckpt_memory **ret);

/* Test hooks (QEMU backend only; NULL for another backend):
 * the live mapping, the primary's shadow (= what the peer has), and the
 * secondary's committed shadow (COLO mode). All ram_size bytes long. */
const uint8_t *ckpt_mem_qemu_ram(struct ckpt_memory *m);
const uint8_t *ckpt_mem_qemu_shadow(struct ckpt_memory *m);
size_t ckpt_mem_qemu_size(struct ckpt_memory *m);

/* Pages currently staged (secondary), for tests and metrics. */
size_t ckpt_mem_qemu_staged(struct ckpt_memory *m);

/*
 * Dirty tracking of the primary (QEMU backend).
 *
 * Default, "compare": capture() compares all of guest RAM against the
 * shadow (cost and memory follow the guest's size).
 *
 * "soft-dirty": the kernel's soft-dirty bits of QEMU's own mapping of the
 * RAM file (CONFIG_MEM_SOFT_DIRTY): capture() reads QEMU's
 * /proc/PID/pagemap for that mapping, clears the bits (clear_refs "4"),
 * and copies only the marked pages, into the set by value. The shadow is
 * dropped. Correct for everything that writes guest RAM through QEMU's
 * page tables: vCPUs under TCG and KVM, QEMU's device emulation, vhost in
 * QEMU's mm. colo locks the RAM file's pages in memory (mlock: a
 * reclaimed page would come back without its bit). A capture that is not
 * full needs the guest paused (ckpt_mem_capture_needs_pause): between
 * reading and clearing the bits a write would be lost.
 *
 * ckpt_mem_qemu_track(m, pid, flags, why, len): switch m (opened with
 * CKPT_MEM_PRIMARY) to soft-dirty for QEMU process pid. Returns 1 when in
 * use, 0 when not available (why says why: the kernel has no soft-dirty,
 * which a probe in a child process finds out, no rights on /proc/PID, pid
 * does not map the file, mlock refused; compare stays), < 0 on bad
 * arguments or no memory. The next capture is full.
 * flags: CKPT_TRACK_VERIFY keeps the shadow and checks every capture
 * against the compare scan (a page the scan finds that the bits missed
 * fails the capture with -COLO_EINTERNAL; tests, the nested proof);
 * CKPT_TRACK_COMPARE keeps the compare scan (returns 0).
 */
#define CKPT_TRACK_VERIFY  0x1u
#define CKPT_TRACK_COMPARE 0x2u
int ckpt_mem_qemu_track(struct ckpt_memory *m, pid_t pid, unsigned flags,
                        char *why, size_t why_len);
/* 1: this kernel has working soft-dirty bits (probed once per process in a
 * child); 0: not (why says why). */
int ckpt_mem_softdirty_available(char *why, size_t why_len);
/* "soft-dirty", "soft-dirty+verify", "compare" (QEMU backend primary),
 * "none" (NULL, secondary), or another backend's name. Static string. */
const char *ckpt_mem_dirty_method(struct ckpt_memory *m);
/* True when the next capture() must run with the guest paused (the
 * engine's migrate rounds stop the guest for it). */
bool ckpt_mem_capture_needs_pause(struct ckpt_memory *m);
/* Verify mode: pages the bits missed so far (0 otherwise). */
uint64_t ckpt_mem_qemu_missed(struct ckpt_memory *m);

#endif
