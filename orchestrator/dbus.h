/*
 * orchestrator/dbus: a VM's helper processes whose state QEMU's
 * dbus-vmstate object carries in the device state (docs/dbus.md).
 *
 * Per VM: one private dbus-daemon (a config colo writes, the socket
 * <state_dir>/dbus.sock), the helpers of the VM config's "helpers" array
 *   [{"id": "slirp", "command": ["/usr/bin/helper", "--id", "slirp"]}, ...]
 * started with DBUS_SESSION_BUS_ADDRESS set to the bus, and QEMU arguments
 *   -object dbus-vmstate,id=colo-dbus,addr=<address>,id-list=a,b
 * that make QEMU save each helper's state (org.qemu.VMState1.Save) into
 * xen-save-devices-state and load it (Load) in the device-state load.
 *
 * What QEMU 7.2 does NOT catch (measured, docs/dbus.md): a helper whose
 * Save reply is over 1 MiB or comes after D-Bus's 25 s default timeout is
 * left out of the blob while xen-save-devices-state still succeeds (only
 * QEMU's stderr says "Too large vmstate data to save" / "Failed to Save:
 * Timeout was reached"); a helper that hangs blocks QEMU's monitor 25 s.
 * A missing Id fails the save with the generic "An IO error has occurred".
 * So colo checks for itself:
 *   orch_dbus_check()       every Id owns org.qemu.VMState1 on the bus
 *                           (ListQueuedOwners + the Id property of each
 *                           owner, as QEMU does); with ORCH_DBUS_CHECK_SAVE
 *                           each helper's Save also answers within the
 *                           deadline and within ORCH_DBUS_STATE_MAX.
 *   orch_dbus_check_blob()  a device-state blob holds every Id's state.
 *   orch_dbus_compare()     the peer's config lists the same Ids.
 * Every failure names the helper (err->helper, err->text).
 *
 * Blocking, bounded: orch_dbus_start() and orch_dbus_check() wait for
 * child processes (dbus-daemon, the helpers, dbus-send for queries) with
 * a deadline given by the caller; nothing else blocks. Meant for VM start
 * and for the moment before protect/migrate, not for every checkpoint
 * (orch_dbus_check_blob() is pure and cheap: use that per checkpoint).
 * orch_dbus_check_start() runs the check off the loop (a child process).
 *
 * Lifecycle:
 *   orch_dbus_start():  -> RUNNING (bus up, every helper's Id on the bus)
 *                       on error nothing is left running, *ret NULL.
 *                       A config without helpers gives an object with no
 *                       bus and no QEMU args (orch_dbus_active() false).
 *   orch_dbus_free():   RUNNING -> freed: SIGTERM then SIGKILL the
 *                       helpers and the bus (bounded), reap them, remove
 *                       dbus.conf and dbus.sock. Accepts NULL.
 * Children get PR_SET_PDEATHSIG SIGKILL: they die with colo.
 *
 * Errors: -COLO_ECONFIG (bad "helpers"), -ENOENT (an Id is not on the bus
 * / not in the blob / not on the peer), -ETIMEDOUT (start or Save too
 * slow), -EMSGSIZE (Save over ORCH_DBUS_STATE_MAX), -COLO_EHELPER (a
 * helper or dbus-daemon exited or failed), -errno. The library never logs
 * errors: the caller logs err->text once.
 */
#ifndef COLO_ORCH_DBUS_H
#define COLO_ORCH_DBUS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define ORCH_DBUS_STATE_MAX   (1024u * 1024) /* QEMU's per-helper limit */
#define ORCH_DBUS_MAX_HELPERS 32
#define ORCH_DBUS_ID_MAX      64 /* [A-Za-z0-9_.-], no commas */
#define ORCH_DBUS_MAX_ARGS    64 /* command entries per helper */
/* The QOM id of the dbus-vmstate object colo adds. */
#define ORCH_DBUS_OBJECT_ID "colo-dbus"

struct orch_dbus;

struct orch_dbus_error {
    char helper[ORCH_DBUS_ID_MAX + 1]; /* the helper at fault, or "" */
    char text[768];                    /* ready to log */
};

/*
 * Start the bus and the helpers (helpers: the config's "helpers" array,
 * borrowed; NULL or [] for none) and wait until every Id owns
 * org.qemu.VMState1, at most timeout_ms (0: 10000). state_dir: an
 * existing private directory of the VM (the socket path must fit in
 * sun_path). Blocking, bounded.
 */
int orch_dbus_start(const char *state_dir, const json_t *helpers,
                    uint32_t timeout_ms, struct orch_dbus **ret,
                    struct orch_dbus_error *err);
void orch_dbus_free(struct orch_dbus *d);

/* True when the VM has helpers (a bus runs). */
int orch_dbus_active(const struct orch_dbus *d);
/* The bus address ("unix:path=...,guid=..."), NULL when not active. */
const char *orch_dbus_address(const struct orch_dbus *d);
/* QEMU args to append (NULL-terminated, owned by d): {"-object",
 * "dbus-vmstate,id=colo-dbus,addr=<escaped>,id-list=a,b", NULL}, or {NULL}
 * when not active. */
const char *const *orch_dbus_qemu_args(const struct orch_dbus *d);
/* The helper Ids, in config order. */
size_t orch_dbus_id_count(const struct orch_dbus *d);
const char *orch_dbus_id(const struct orch_dbus *d, size_t i);

/*
 * Validate a "helpers" array and compare its Ids with this VM's (the
 * peer's copy of the config, or its Id list as a JSON array of helper
 * objects). 0 when the same set; -ENOENT naming the first Id one side
 * lacks; -COLO_ECONFIG when peer_helpers is malformed.
 */
int orch_dbus_compare(const struct orch_dbus *d, const json_t *peer_helpers,
                      struct orch_dbus_error *err);

enum orch_dbus_check_flags {
    /* Also call Save on each helper: answer within the deadline and at
     * most ORCH_DBUS_STATE_MAX bytes. Save must not change a helper's
     * state (QEMU may call it at any stop). */
    ORCH_DBUS_CHECK_SAVE = 1 << 0,
};

/* Check the helpers on the bus now (see above). timeout_ms: for the
 * whole check (0: 5000). Blocking, bounded. 0 when not active. */
int orch_dbus_check(struct orch_dbus *d, unsigned flags, uint32_t timeout_ms,
                    struct orch_dbus_error *err);

/*
 * The same check without blocking the loop: it runs in a child process
 * (like libxl's save helper); cb fires exactly once from the loop, never
 * from inside this call, with rc and err as orch_dbus_check() gives them
 * (err borrowed for the callback). A helper that exited meanwhile is
 * reported as -COLO_EHELPER. Synchronous errors (-EBUSY when a check runs,
 * -ENOMEM, fork failures) are returned and cb does not fire. When not
 * active, cb still fires from the loop with rc 0. orch_dbus_free() during
 * a check kills and reaps the child; cb does not fire. d may be freed
 * inside cb.
 */
struct event_base;
typedef void (*orch_dbus_check_cb)(struct orch_dbus *d, int rc,
                                   const struct orch_dbus_error *err,
                                   void *arg);
int orch_dbus_check_start(struct orch_dbus *d, struct event_base *base,
                          unsigned flags, uint32_t timeout_ms,
                          orch_dbus_check_cb cb, void *arg);

/*
 * orch_dbus_start() without waiting on the loop for the helpers: the bus
 * is started and the helpers spawned at once (a bounded wait of a few ms
 * for dbus-daemon's address, at most 5 s), then a child process waits for
 * the Ids. *ret is set on success (0); cb fires exactly once from the
 * loop (never from inside this call) with rc as orch_dbus_start() would
 * return; on rc 0 orch_dbus_qemu_args() is ready. On rc < 0 in cb, free
 * d (that stops the bus and the helpers). On a synchronous error nothing
 * runs, *ret is NULL and cb does not fire. Only one orch_dbus_check_start()
 * job at a time: a check during the start gets -EBUSY.
 */
int orch_dbus_start_async(struct event_base *base, const char *state_dir,
                          const json_t *helpers, uint32_t timeout_ms,
                          orch_dbus_check_cb cb, void *arg,
                          struct orch_dbus **ret, struct orch_dbus_error *err);

/* Check that a device-state blob (xen-save-devices-state output) holds a
 * state for every Id: -ENOENT naming the first Id missing (QEMU dropped
 * it: too slow or too large; orch_dbus_check(ORCH_DBUS_CHECK_SAVE) says
 * which), -COLO_ESTREAM_CORRUPT if the dbus-vmstate section is malformed
 * or absent. 0 when not active. */
int orch_dbus_check_blob(const struct orch_dbus *d, const uint8_t *blob,
                         size_t len, struct orch_dbus_error *err);

#endif
