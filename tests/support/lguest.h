/*
 * Test support: the Linux test guest (tests/linux/README.md) as a colo VM.
 *
 *   char why[256];
 *   if (!lguest_available(why, sizeof(why)))
 *       cr_skip_test("%s", why);
 *   struct lguest_cfg c = lguest_cfg_default();
 *   c.name = "lx"; c.wire_path = ...; c.disk_path = ...;
 *   lguest_write_config("/tmp/.../vm.json", &c);   // then: colo start
 *
 * The guest reads its behaviour from the kernel command line (cw.*
 * parameters, tests/linux/workload.c); lguest_cfg.cmdline adds to it.
 */
#ifndef COLO_TESTS_LGUEST_H
#define COLO_TESTS_LGUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lguest_cfg {
    const char *name;       /* VM name (required) */
    size_t ram_mb;          /* default 128 */
    const char *cmdline;    /* more kernel parameters (cw.interval=..., ...) */
    const char *disk_path;  /* raw disk image, created (sized) if missing;
                               NULL: no disk */
    size_t disk_mb;         /* default 4 */
    const char *wire_path;  /* the netpeer's socket; NULL: no NIC */
    const char *accel;      /* NULL: lguest_accel() */
    const char *extra_json; /* more top-level members, or NULL */
};

struct lguest_cfg lguest_cfg_default(void);
/* Paths of the built guest (COLO_BINARY_DIR/tests/linux/...). */
const char *lguest_kernel(void);
const char *lguest_initrd(void);
/* True when the guest was built; otherwise why (from build-guest's SKIP). */
bool lguest_available(char *why, size_t whysz);
/* "kvm" when /dev/kvm opens and the CPU has VMX or SVM (a KVM that runs
 * kernel code natively), else "tcg". COLO_LINUX_ACCEL overrides. */
const char *lguest_accel(void);
/* Write the colo VM configuration; 0 or -errno. */
int lguest_write_config(const char *path, const struct lguest_cfg *c);
/* The highest counter value recorded in the guest's disk image (the ring of
 * "count N" sectors, tests/linux/workload.c); 0 when none. -errno when the
 * image cannot be read. */
int lguest_disk_max(const char *disk_path, uint32_t *max);
/* The highest "count N" line in a serial log file; 0 when none. */
uint32_t lguest_serial_max(const char *serial_path);

#endif
