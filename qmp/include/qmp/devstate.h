/*
 * qmp/devstate: save QEMU's device state to a blob, load a blob.
 *
 * Save (the primary, every checkpoint):
 *   query-status; `stop` if running (unless QMP_SAVE_NO_STOP);
 *   a memfd re-opened O_WRONLY through /proc/self/fd/N is passed with
 *   add-fd (-> /dev/fdset/K); xen-save-devices-state {filename:
 *   "/dev/fdset/K", live:false}; the blob is read back from the memfd;
 *   `cont` if QMP_SAVE_RESUME and the VM was running before.
 *   QEMU closes fds removed with remove-fd only while the VM runs, so a
 *   per-save fdset would pile up fds (and memfd memory) in a VM kept
 *   paused. Instead one saver (struct qmp_saver) keeps ONE memfd and ONE
 *   fdset for its life: the write-only file description is shared with
 *   QEMU, so colo rewinds it (lseek 0) before each save and reads back
 *   exactly the bytes QEMU wrote. remove-fd runs in qmp_saver_free() (QEMU
 *   closes it when the VM next runs or the monitor disconnects).
 *   The blob starts with "QEVM".
 *
 * Load (the secondary), loader chosen per QEMU:
 *   QMP_LOADER_INCOMING  the QEMU is in status "inmigrate" (started with
 *       qmp_secondary_args(): -S -incoming defer -global
 *       migration.send-configuration=off -machine suppress-vmdesc=on): the
 *       blob goes through a pipe, `getfd` names it, `migrate-incoming
 *       {uri:"fd:NAME"}` loads it, completion is awaited (MIGRATION event /
 *       query-migrate status completed or failed), then `cont` unless
 *       QMP_LOAD_PAUSED. Works once per QEMU process. The capability
 *       late-block-activate is set: the disk images (opened inactive, no
 *       locks, since QEMU started "inmigrate") are activated by `cont`,
 *       not at the end of the load, so a QMP_LOAD_PAUSED load never takes
 *       an image's write lock.
 *   QMP_LOADER_XEN  xen-load-devices-state {filename:/dev/fdset/K} with a
 *       read-only memfd. It aborts Debian's QEMU 7.2 on non-Xen machines
 *       (yank.c assertion), so it is used only when the caller says the
 *       QEMU is a Xen device model (QMP_LOAD_XEN_DM) and the command is
 *       offered.
 *   The chosen loader and the reason are logged at info level.
 *   Fault point COLO_FAULT_DEVICE_LOAD (common/fault.h) fails the
 *   incoming load just before migrate-incoming with
 *   -COLO_EFAULT_INJECTED (or exits, with COLO_FAULT_ACTION=exit).
 *   A QEMU that dies during a load fails the load with the connection error
 *   (-COLO_EQMP_DISCONNECTED); with qmp/launch the exit_cb reports the exit.
 *
 * Callbacks fire exactly once, from the loop, never from inside the start
 * function; freeing the client (or the saver) before cancels silently.
 */
#ifndef COLO_QMP_DEVSTATE_H
#define COLO_QMP_DEVSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "qmp/qmp.h"

/* Cap on a device-state blob read back from QEMU. */
#define QMP_DEVSTATE_MAX (256u * 1024 * 1024)

enum qmp_save_flags {
    QMP_SAVE_NO_STOP = 1 << 0, /* caller already stopped the VM */
    QMP_SAVE_RESUME = 1 << 1,  /* cont afterwards if it was running */
    /* live:true: on a VM that was already stopped, QEMU 7.2 inactivates
     * its block devices after the save (bdrv_inactivate_all: the image
     * locks are dropped for the migration target); `cont` takes them
     * back. Only with QMP_SAVE_NO_STOP or a stopped VM. */
    QMP_SAVE_RELEASE_DISKS = 1 << 2,
};

enum qmp_load_flags {
    QMP_LOAD_PAUSED = 1 << 0, /* leave the VM paused after loading */
    QMP_LOAD_XEN_DM = 1 << 1, /* QEMU is a Xen device model */
};

enum qmp_loader {
    QMP_LOADER_NONE = 0,
    QMP_LOADER_INCOMING,
    QMP_LOADER_XEN,
};

/*
 * blob: malloc'd, owned by the callee (free() it) when rc == 0, else NULL.
 * was_running: the VM's state before the save.
 */
typedef void (*qmp_save_cb)(struct qmp_client *c, int rc, uint8_t *blob,
                            size_t len, bool was_running, void *arg);
typedef void (*qmp_load_cb)(struct qmp_client *c, int rc,
                            enum qmp_loader loader, void *arg);

struct qmp_saver;

/*
 * A saver bound to one client: holds the memfd and fdset across saves.
 *   qmp_saver_new():  -> IDLE (nothing passed to QEMU yet)
 *   qmp_saver_save(): IDLE -> SAVING (error: IDLE, no callback; -EBUSY if
 *                     a save is running)
 *   done (loop):      SAVING -> IDLE, cb exactly once
 *   qmp_saver_free(): any -> freed; a running save's callback does not
 *                     fire; remove-fd sent if the client is connected.
 * Free the saver before its client.
 */
int qmp_saver_new(struct qmp_client *c, struct qmp_saver **ret);
void qmp_saver_free(struct qmp_saver *s);
int qmp_saver_save(struct qmp_saver *s, unsigned flags, qmp_save_cb cb,
                   void *arg);

/* One-shot save: a saver made and freed around one save. */
int qmp_devstate_save(struct qmp_client *c, unsigned flags, qmp_save_cb cb,
                      void *arg);

/* Load blob (borrowed: copied at once) into the QEMU behind c. */
int qmp_devstate_load(struct qmp_client *c, const uint8_t *blob, size_t len,
                      unsigned flags, qmp_load_cb cb, void *arg);

const char *qmp_loader_name(enum qmp_loader l);

#endif
