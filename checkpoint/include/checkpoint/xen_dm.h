/*
 * An HVM domain's device model: QEMU (Debian's qemu-system-xen) serving
 * the domain, driven through QMP the way libxl drives it
 * (tools/libs/light/libxl_dm.c, libxl_qmp.c, libxl_dom_suspend.c).
 *
 * Its QMP socket is where libxl puts it, /var/run/xen/qmp-libxl-<domid>,
 * so xl and colo can both reach a device model either of them started
 * (one client at a time: QEMU serves one).
 *
 * Save side: the state is taken by qmp/devstate (stop, then
 * xen-save-devices-state into a memfd) on the job's own client; these are
 * the blocking odds and ends the synchronous paths need (resume = `cont`
 * before the domain's vcpus run again).
 *
 * Restore side, ckpt_xen_dm_start (asynchronous, on the loop):
 *   STARTING  QEMU launched detached (its output appended to
 *             /var/log/xen/qemu-dm-<name>.log, a session of its own) with
 *             -incoming defer; up when QMP answers (qmp/launch)
 *   LOADING   the EMULATOR_CONTEXT blob loaded with migrate-incoming
 *             (qmp/devstate's incoming loader), then `cont`
 *   done      its pid recorded in xenstore (image/device-model-pid), QEMU
 *             released to run on without colo; cb(0)
 *   Any failure: QEMU killed, cb(rc < 0, why). cb fires exactly once,
 *   from the loop; ckpt_xen_dm_start_free() before it cancels silently
 *   (and kills a QEMU not yet released).
 */
#ifndef COLO_CHECKPOINT_XEN_DM_H
#define COLO_CHECKPOINT_XEN_DM_H

#include <stddef.h>
#include <jansson.h>
#include <stdint.h>

#include "checkpoint/xen_dom.h"

struct event_base;
struct ckpt_xen_dm_start;

/* "/var/run/xen/qmp-libxl-<domid>" into buf. */
void ckpt_xen_dm_qmp_path(uint32_t domid, char *buf, size_t sz);

/* The device model binary: $COLO_XEN_DM if set, else libxl's default
 * (/usr/libexec/xen-qemu-system-i386 on Debian, then
 * /usr/lib/xen/bin/qemu-system-i386). Never NULL. */
const char *ckpt_xen_dm_binary(void);

/*
 * QEMU's argv for the device model of domid, as
 * libxl__build_device_model_args_new builds it for the subset colo
 * supports (no disks, nics, display; see ckpt_xen_newdom_from_json),
 * with the QMP -chardev/-mon left to qmp/launch and the incoming-load
 * arguments of qmp_secondary_args() appended. NULL-terminated; free with
 * ckpt_xen_dm_argv_free(). -ENOMEM only.
 */
int ckpt_xen_dm_argv(const struct ckpt_xen_newdom *nd, uint32_t domid,
                     const char *binary, char ***ret);
void ckpt_xen_dm_argv_free(char **argv); /* NULL ok */

/*
 * One QMP command to domid's device model, blocking (a private loop, the
 * QMP client of qmp/qmp.h) with a deadline. Used where libxl is
 * synchronous too: `cont` in a resume. args is consumed (may be NULL).
 * -ENOENT: no device model socket; other errors with text in why.
 */
int ckpt_xen_dm_call(uint32_t domid, const char *cmd, json_t *args,
                     int timeout_ms, char *why, size_t whysz);

typedef void ckpt_xen_dm_started(int rc, const char *why, void *opaque);

/* state/len: the EMULATOR_CONTEXT payload (copied). nd->name names the
 * log. d is used for the xenstore record; it must outlive the start. */
int ckpt_xen_dm_start(struct event_base *base, struct ckpt_xen_dom *d,
                      uint32_t domid, const struct ckpt_xen_newdom *nd,
                      const uint8_t *state, size_t len, ckpt_xen_dm_started *cb,
                      void *opaque, struct ckpt_xen_dm_start **ret);
void ckpt_xen_dm_start_free(struct ckpt_xen_dm_start *s); /* NULL ok */

#endif
