/*
 * The test guest's fixed layout, shared by the guest (guest.S, through the
 * preprocessor) and by the host-side test code that reads its RAM file.
 *
 * All addresses are guest-physical; with a memory-backend-file as the only
 * RAM block, guest-physical address A is at offset A of the RAM file (for
 * A below the PCI hole, i.e. for RAM sizes up to 2 GiB on the pc machine).
 */
#ifndef COLO_TEST_GUEST_ABI_H
#define COLO_TEST_GUEST_ABI_H

#define TGUEST_STATUS_GPA  0x00200000 /* the status page (4 KiB) */
#define TGUEST_MAGIC_OFF   0x0        /* u32: TGUEST_MAGIC once running */
#define TGUEST_COUNTER_OFF 0x4        /* u32: incremented continuously */
#define TGUEST_MODE_OFF    0x8        /* u32: 0 counter, 1 dirty */
#define TGUEST_PASSES_OFF  0xc        /* u32: dirty mode: passes done */
#define TGUEST_MAGIC       0x4f4c4f43 /* "COLO" little endian */

#define TGUEST_DIRTY_GPA 0x00400000 /* dirty mode rewrites from here up */

/* Dirty mode: pass p (1, 2, ...) writes the u32 at guest-physical address
 * a as (a ^ (p * TGUEST_DIRTY_KEY_MUL)) | 1 (mod 2^32): never zero, and
 * different from the previous pass in every u32. */
#define TGUEST_DIRTY_KEY_MUL 0x9e3779b9
/* The serial "tick <8 hex digits of the counter>" period, real time. */
#define TGUEST_TICK_MS 250

#endif
