/*
 * Test support: boot the test guest (tests/guest) under a real QEMU.
 *
 *   struct tguest_opts o = tguest_opts_default();
 *   o.ram_mb = 64;
 *   struct tguest *g;
 *   cr_assert_eq(tguest_start(&o, &g), 0);
 *   cr_assert(tguest_wait_counter_above(g, 1000, 10000) == 0);
 *   tguest_free(g);            // kills QEMU, removes the temp dir
 *
 * QEMU runs with -nodefaults -vga none, guest RAM in a memory-backend-file
 * (share=on) under a per-guest temp dir ($TMPDIR, else /dev/shm, else
 * /tmp), KVM when /dev/kvm opens, TCG otherwise, and the qboot firmware
 * when installed (fast boot; opts.seabios keeps QEMU's default). COM1 goes to a
 * file in the temp dir. The QMP monitor listens on a unix socket in the temp
 * dir (tguest->qmp_path); QEMU got the listening fd pre-opened, so the path is
 * connectable as soon as tguest_start() returns.
 *
 * Every QEMU started here is killed at the latest at process exit (an
 * atexit handler and a PR_SET_PDEATHSIG in the child), even when a test
 * fails half-way. PDEATHSIG fires when the *thread* that started QEMU
 * exits: start guests from a thread that outlives them (e.g. main).
 */
#ifndef COLO_TEST_TGUEST_H
#define COLO_TEST_TGUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "guest_abi.h"

struct tguest_opts {
    size_t ram_mb;           /* default 64 */
    bool paused;             /* -S: start paused (prelaunch) */
    bool incoming_defer;     /* -incoming defer + the device-state loader
                                options (send-configuration=off,
                                suppress-vmdesc=on) */
    bool no_kernel;          /* no -kernel (a secondary waiting for state) */
    const char *ram_path;    /* use this RAM file instead of a fresh one */
    size_t dirty_mb;         /* > 0: dirty mode, rewrite this many MiB */
    unsigned dirty_rate_mbs; /* dirty mode: MiB/s target, 0 = flat out */
    const char *const *extra_args; /* NULL-terminated extra QEMU args */
    bool force_tcg;                /* TCG even when /dev/kvm opens */
    bool seabios; /* QEMU's default firmware instead of qboot */
    /* fds QEMU inherits at the same numbers (e.g. for -add-fd or a
     * chardev fd= in extra_args); no other fd above 2 is inherited. */
    const int *pass_fds;
    size_t n_pass_fds;
};

struct tguest {
    pid_t pid;     /* QEMU, or -1 once reaped */
    char dir[256]; /* per-guest temp dir */
    char ram_path[300];
    char serial_path[300];
    char qmp_path[300];
    uint8_t *ram; /* the RAM file, mapped shared */
    size_t ram_size;
    bool kvm;
};

struct tguest_opts tguest_opts_default(void);
/* Path of the built guest kernel (tests/guest/colo-test-guest.elf). */
const char *tguest_kernel_path(void);
/* True when /dev/kvm can be opened read-write. */
bool tguest_kvm_usable(void);
/* The QEMU argv tguest_start() would run (for tests that launch QEMU
 * themselves, e.g. through qmp_launch). NULL-terminated, free with
 * tguest_argv_free(). qmp_fd >= 0 adds the pre-opened QMP chardev. */
char **tguest_build_argv(const struct tguest_opts *o, const struct tguest *g,
                         int qmp_fd);
void tguest_argv_free(char **argv);
/* Create the temp dir, create+size the RAM file (or open opts.ram_path)
 * and map it, without starting QEMU. A caller that launches QEMU itself
 * may store its pid in g->pid: tguest_kill/free then kill it too. Only
 * guests from tguest_prepare/start may be passed to tguest_free. */
int tguest_prepare(const struct tguest_opts *o, struct tguest **ret);

/* Start QEMU for a prepared (or killed) guest: returns once QEMU sent its
 * QMP greeting (setup done; the QMP path then accepts the next client). If
 * QEMU exits first, fails with -COLO_EQEMU_DIED and prints QEMU's stderr.
 * A relaunch reuses the RAM file and appends to the serial log. */
int tguest_launch(struct tguest *g, const struct tguest_opts *o);

/* tguest_prepare() + tguest_launch(). */
int tguest_start(const struct tguest_opts *o, struct tguest **ret);
uint32_t tguest_counter(const struct tguest *g);
uint32_t tguest_magic(const struct tguest *g);
/* TGUEST_MODE_OFF (0 counter, 1 dirty) and TGUEST_PASSES_OFF. */
uint32_t tguest_mode(const struct tguest *g);
uint32_t tguest_passes(const struct tguest *g);
/* Wait (bounded) until the counter exceeds v; 0 or -ETIMEDOUT
 * (-COLO_EQEMU_DIED early when our QEMU child exited). */
int tguest_wait_counter_above(const struct tguest *g, uint32_t v,
                              int timeout_ms);
/* Dirty mode: wait (bounded) until TGUEST_PASSES_OFF exceeds v; same
 * returns as tguest_wait_counter_above(). */
int tguest_wait_passes_above(const struct tguest *g, uint32_t v,
                             int timeout_ms);
/* Wait (bounded) until the serial log contains s; 0 or -ETIMEDOUT
 * (-COLO_EQEMU_DIED early when our QEMU child exited). */
int tguest_wait_serial(const struct tguest *g, const char *s, int timeout_ms);
/* Wait (bounded) until at least n complete lines of the serial log start
 * with prefix (e.g. 3 "tick " lines); 0, -ETIMEDOUT or -COLO_EQEMU_DIED. */
int tguest_wait_serial_lines(const struct tguest *g, const char *prefix, int n,
                             int timeout_ms);
/* Read the whole serial log (malloc'd, NUL-terminated). */
char *tguest_serial(const struct tguest *g);
/* A tiny blocking QMP exchange for tests (the real client is qmp/):
 * connect to g->qmp_path, negotiate, send cmd (one JSON object, e.g.
 * "{\"execute\":\"stop\"}"), skip events, and wait for the reply, all
 * within timeout_ms. 0 on a "return", -COLO_EQMP_GENERIC on an "error"
 * reply (printed to stderr), -ETIMEDOUT, -COLO_EQMP_DISCONNECTED, or
 * -COLO_EQMP_PROTOCOL for a line over 64 KiB. The monitor takes one client
 * at a time: do not call it while another client is connected. */
int tguest_qmp(const struct tguest *g, const char *cmd, int timeout_ms);
/* SIGKILL QEMU and reap it (if it is our child). Idempotent. */
void tguest_kill(struct tguest *g);
/* Kill, unmap, remove the temp dir. Accepts NULL. */
void tguest_free(struct tguest *g);

#endif
