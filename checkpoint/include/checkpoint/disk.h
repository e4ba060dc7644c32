/*
 * Disk replication by epoch (docs/protocol.md "Disk replication").
 *
 * Primary: a write tee. Each replicated disk of the QEMU VM is a `quorum`
 * drive (vote-threshold=1, read-pattern=fifo, children.0 = the local raw
 * image). ckpt_disk_tee_attach() gives it a second child, an `nbd` node
 * connected to colo's own NBD server (transport/nbd.h) on a unix socket, so
 * every guest write also reaches colo. colo keeps the writes of the current
 * epoch in memory; when QMP `stop` has returned, every write of the epoch
 * has completed on every child (QEMU drains), so ckpt_disk_tee_cut() at
 * that moment seals exactly the writes of checkpoint n. They travel with n
 * as DISK_WRITE records and are released on ACK(n).
 *
 * Full sync (first checkpoint to a new secondary): the tee is attached
 * while the guest is stopped (point in time T), then the image files are
 * read (holes and all-zero chunks skipped) while the guest runs; every
 * write after T is in the tee and is applied after the copy, so the
 * secondary's image equals the primary's at the first checkpoint's stop.
 *
 * Secondary: a stage. DISK_INFO (full checkpoint) zeroes the secondary's
 * own image (its size must equal the primary's); DISK_WRITEs of a
 * checkpoint are kept in memory until CHECKPOINT_END(n) has arrived, then
 * applied in order and fdatasync()ed before ACK(n). Before the first commit
 * there is no image to protect: writes go straight to the image (as RAM
 * pages do).
 *
 * Images are raw files on both sides; each host uses its own paths.
 *
 * Tee states: Detached (no QEMU child; writes cannot arrive) -> Attaching
 *   (QMP blockdev-add + x-blockdev-change in flight) -> Attached (writes
 *   collected into the open epoch) -> Detached (ckpt_disk_tee_detach: the
 *   NBD connections are closed at once, so QEMU's child fails and quorum
 *   goes on with the local image without pausing guest I/O; the QMP
 *   x-blockdev-change + blockdev-del follow in the background).
 */
#ifndef COLO_CHECKPOINT_DISK_H
#define COLO_CHECKPOINT_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/colo_rec.h"

struct event_base;
struct qmp_client;

struct ckpt_disk_cfg {
    const char *id;   /* the quorum drive's id in QEMU (and the NBD export) */
    const char *path; /* this host's raw image */
};

/* Soft cap: above this many bytes in the open epoch, the tee asks for a
 * checkpoint (full_cb). Hard cap: above it, colo stops reading the tee
 * sockets (guest writes wait) until the epoch is cut. */
#define CKPT_DISK_EPOCH_SOFT (32u << 20)
#define CKPT_DISK_EPOCH_HARD (256u << 20)
/* Secondary: staged bytes of one checkpoint. */
#define CKPT_DISK_STAGE_MAX (1024u << 20)
/* Full sync: bytes read per DISK_WRITE. */
#define CKPT_DISK_SYNC_CHUNK (1u << 20)

struct ckpt_disk_tee;

/* One write of a sealed epoch (data NULL for ZEROES). */
struct ckpt_disk_wr {
    uint32_t disk;
    uint32_t flags; /* XPRT_DISK_WRITE_ZEROES */
    uint64_t offset;
    uint32_t length;
    const uint8_t *data;
};

typedef void ckpt_disk_done_fn(void *arg, int rc);
typedef void ckpt_disk_full_fn(void *arg);

/* Opens every image read-only (for the full sync), listens on
 * sock_dir/colo-tee-<pid>-<seq>.sock. full_cb (may be NULL) runs from the
 * loop when the open epoch passes CKPT_DISK_EPOCH_SOFT. */
int ckpt_disk_tee_new(struct event_base *base, const struct ckpt_disk_cfg *d,
                      size_t n, const char *sock_dir,
                      ckpt_disk_full_fn *full_cb, void *arg,
                      struct ckpt_disk_tee **ret);
void ckpt_disk_tee_free(struct ckpt_disk_tee *t); /* accepts NULL */
size_t ckpt_disk_tee_count(const struct ckpt_disk_tee *t);
int ckpt_disk_tee_info(const struct ckpt_disk_tee *t, size_t i,
                       struct xprt_disk_info *ret);

/* Attach (guest stopped): for each disk blockdev-add an nbd node and
 * x-blockdev-change it into the quorum; waits until QEMU's client has
 * connected (handshake done). cb exactly once (not from inside), unless
 * the tee is freed first. Everything collected before is dropped. */
int ckpt_disk_tee_attach(struct ckpt_disk_tee *t, struct qmp_client *q,
                         ckpt_disk_done_fn *cb, void *arg);
/* Detach now (see top); q may be NULL (QEMU gone). Drops every epoch. An
 * attach in progress ends: its cb gets -ECANCELED from the loop. */
void ckpt_disk_tee_detach(struct ckpt_disk_tee *t, struct qmp_client *q);
/* The attach callback will not be called (its owner goes away). */
void ckpt_disk_tee_abandon(struct ckpt_disk_tee *t);
bool ckpt_disk_tee_attached(const struct ckpt_disk_tee *t);

/* Seal the open epoch (call when `stop` has returned): 0, or -EBUSY if
 * the previous sealed epoch was not released. The sealed writes stay until
 * ckpt_disk_tee_release(). Reading resumes if it was throttled. */
int ckpt_disk_tee_cut(struct ckpt_disk_tee *t);
size_t ckpt_disk_tee_sealed_count(const struct ckpt_disk_tee *t);
void ckpt_disk_tee_sealed(const struct ckpt_disk_tee *t, size_t i,
                          struct ckpt_disk_wr *ret);
void ckpt_disk_tee_release(struct ckpt_disk_tee *t);
/* Test hook: from now on the last write of each sealed epoch is handed out
 * with an offset at the end of its disk (a record the secondary must
 * refuse: a corrupt disk record). */
void ckpt_disk_tee_test_corrupt(struct ckpt_disk_tee *t);
/* Reading resumes (hard cap) — call before stopping the guest. */
void ckpt_disk_tee_unthrottle(struct ckpt_disk_tee *t);
/* Bytes and writes collected (open epoch), for stats and tests. */
uint64_t ckpt_disk_tee_open_bytes(const struct ckpt_disk_tee *t);
uint64_t ckpt_disk_tee_total_writes(const struct ckpt_disk_tee *t);

/* Full sync cursor: restart at disk 0 offset 0. */
void ckpt_disk_tee_sync_reset(struct ckpt_disk_tee *t);
/* The next non-zero extent (<= CKPT_DISK_SYNC_CHUNK) into buf: returns 1
 * with *ret filled (data = buf), 0 when every disk is done, < 0 on a read
 * error. */
int ckpt_disk_tee_sync_next(struct ckpt_disk_tee *t, uint8_t *buf,
                            struct ckpt_disk_wr *ret);
/* Progress: bytes of the images passed so far / their total. */
void ckpt_disk_tee_sync_progress(const struct ckpt_disk_tee *t, uint64_t *done,
                                 uint64_t *total);

/* ---- secondary --------------------------------------------------------- */
struct ckpt_disk_stage;

/* Opens every image read-write (it must exist). */
int ckpt_disk_stage_new(const struct ckpt_disk_cfg *d, size_t n,
                        struct ckpt_disk_stage **ret);
void ckpt_disk_stage_free(struct ckpt_disk_stage *s); /* accepts NULL */
/* DISK_INFO: the id must name a configured disk at that index and the
 * sizes must agree; then the image is zeroed. why (may be NULL) gets a
 * message on error. */
int ckpt_disk_stage_info(struct ckpt_disk_stage *s,
                         const struct xprt_disk_info *d, char *why,
                         size_t whysz);
/* DISK_WRITE: direct = write into the image now (nothing committed yet),
 * else staged (copied) until commit. The disk must have had its
 * DISK_INFO on this link. */
int ckpt_disk_stage_write(struct ckpt_disk_stage *s,
                          const struct xprt_disk_write_view *w, bool direct);
/* Apply the staged writes in order, then fdatasync every image. */
int ckpt_disk_stage_commit(struct ckpt_disk_stage *s);
/* Drop the staged writes (half-received checkpoint). */
void ckpt_disk_stage_drop(struct ckpt_disk_stage *s);
/* A new primary: every disk needs a DISK_INFO again. */
void ckpt_disk_stage_reset(struct ckpt_disk_stage *s);
uint64_t ckpt_disk_stage_staged_bytes(const struct ckpt_disk_stage *s);

#endif
