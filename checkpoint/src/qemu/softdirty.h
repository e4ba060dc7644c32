/*
 * Soft-dirty tracking of another process's mapping of a file (internal to
 * the QEMU memory backend, memory.c).
 *
 * Linux keeps a "soft-dirty" bit per page table entry (CONFIG_MEM_SOFT_DIRTY,
 * Documentation/admin-guide/mm/soft-dirty.rst): writing "4" to
 * /proc/PID/clear_refs clears it for every page of PID and write-protects
 * them; the next write to a page (by a thread of PID, or by KVM through
 * PID's page tables) sets it again; bit 55 of the page's 64-bit entry in
 * /proc/PID/pagemap reads it. Here PID is QEMU and the pages are its
 * mapping of the guest's RAM file, found in /proc/PID/maps by the file's
 * device and inode.
 *
 * A kernel built without soft-dirty accepts the "4" and never sets the
 * bit (no error anywhere), so ckpt_sd_probe() checks it in a child
 * process: a page written after the clear must read soft-dirty, and one
 * not written since must not.
 *
 * Not thread-safe; one owner.
 */
#ifndef COLO_CHECKPOINT_SOFTDIRTY_H
#define COLO_CHECKPOINT_SOFTDIRTY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ckpt_sd;

/* 1: soft-dirty works on this kernel; 0: it does not (why says so);
 * < 0: the probe itself failed (why says so). */
int ckpt_sd_probe(char *why, size_t why_len);

/*
 * Track pid's mappings of the file (dev, ino) of size bytes. Opens
 * /proc/pid/{clear_refs,pagemap} (needs the rights to ptrace pid: the
 * same user, or root) and reads /proc/pid/maps. 0, or < 0 with why set
 * (-ENOENT: pid does not map the file).
 */
int ckpt_sd_open(pid_t pid, dev_t dev, ino_t ino, size_t size,
                 struct ckpt_sd **ret, char *why, size_t why_len);

/* Clear the soft-dirty bits of every page of the process. */
int ckpt_sd_clear(struct ckpt_sd *sd);

/* Set bit pfn of dirty (npages bits, the caller zeroes it) for each page of
 * the file that reads soft-dirty in any of the process's mappings of it.
 * Returns the number of pages marked (a page in two mappings: once per
 * mapping), or < 0. */
int64_t ckpt_sd_read(struct ckpt_sd *sd, uint64_t *dirty);

void ckpt_sd_free(struct ckpt_sd *sd); /* accepts NULL */

#endif
