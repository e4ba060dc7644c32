/*
 * Output commit for a protected QEMU VM (Remus mode): the guest's network
 * output leaves only after the checkpoint that contains its cause is
 * committed (docs/output.md).
 *
 * Epoch k is the guest's output between the pause of checkpoint k and the
 * pause of checkpoint k + 1. Output from before the first checkpoint is
 * never held (there is no secondary yet to disagree with it). Each epoch of
 * each netdev is one QEMU `filter-buffer` (queue=rx: what the guest sends;
 * interval 2^32-1, so it never flushes by itself), nearest the guest behind
 * a `filter-dump` that writes one 17-byte pcap record per packet into a
 * file of the epoch: colo counts held packets from its size and the
 * release delay of each packet from its timestamp.
 *
 *   ckpt_outbuf_epoch(o, k)   guest paused for checkpoint k, its state
 *                             captured: queues (on the VM's QMP client, so
 *                             before the engine's "cont") per netdev
 *                             object-add filter-dump od-k (at the tail),
 *                             object-add filter-buffer ob-k before od-k,
 *                             object-del od-(k-1)
 *   ckpt_outbuf_commit(o, k)  checkpoint k acked: object-del ob-j for every
 *                             held j < k, oldest first (a filter-buffer's
 *                             cleanup releases exactly its packets, in
 *                             order). Never ob-k: epoch k is not yet in a
 *                             committed checkpoint.
 *   ckpt_outbuf_release_all   protection ended (unprotect, secondary lost,
 *                             failed checkpoint): every held epoch, oldest
 *                             first, then the dump; nothing is held until
 *                             the next ckpt_outbuf_epoch().
 *
 * QMP commands go out in order on one connection and QEMU runs them in
 * order, so a release never overtakes the buffer of a later epoch. If QEMU
 * refuses an object-add, that epoch's output is not held: the error is
 * counted (stats.errors) and failed() is called once; the owner ends
 * protection (and releases everything).
 *
 * One filter-buffer holds at most 10,000 packets and silently drops the
 * rest (QEMU's net queue limit). A timer (every 10 ms while an epoch is
 * open) reads the current epoch's packet count and calls want_checkpoint()
 * once it reaches early_at (default 5000), so the engine checkpoints early;
 * packets over the cap are counted in stats.dropped.
 */
#ifndef COLO_CHECKPOINT_OUTBUF_H
#define COLO_CHECKPOINT_OUTBUF_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct qmp_client;
struct ckpt_outbuf;

#define CKPT_OUTBUF_QEMU_CAP 10000 /* QEMU's per-queue packet limit */

struct ckpt_outbuf_opts {
    const char *dir; /* where the per-epoch pcap files go (the VM's dir) */
    const char *const *netdevs; /* netdev ids */
    size_t n_netdevs;
    unsigned early_at;       /* packets in the open epoch; 0: 5000 */
    unsigned qmp_timeout_ms; /* 0: 5000 */
    /* The open epoch reached early_at packets (once per epoch). */
    void (*want_checkpoint)(void *arg);
    /* QEMU refused or failed a filter command: output is no longer held
     * as promised (once; rc < 0). May free o only via release_all+free
     * after returning to the loop (it is called from a QMP callback). */
    void (*failed)(void *arg, int rc);
    void *arg;
};

struct ckpt_outbuf_stats {
    uint64_t held;        /* packets held now (all open epochs) */
    unsigned epochs_held; /* epochs with a buffer in QEMU */
    uint64_t released;    /* packets released in total */
    uint64_t dropped;     /* over QEMU's cap, estimated from the dump */
    uint64_t early;       /* want_checkpoint() calls */
    uint64_t errors;      /* QMP commands QEMU refused or that failed */
    uint64_t delay_p50_us, delay_p99_us; /* hold time of the last
                                            CKPT_STATS_WINDOW packets */
    uint64_t delay_max_us;
};

/* c is borrowed (the VM's QMP client) and must outlive o. */
int ckpt_outbuf_new(struct event_base *base, struct qmp_client *c,
                    const struct ckpt_outbuf_opts *opts,
                    struct ckpt_outbuf **ret);
int ckpt_outbuf_epoch(struct ckpt_outbuf *o, uint64_t k);
void ckpt_outbuf_commit(struct ckpt_outbuf *o, uint64_t k);
void ckpt_outbuf_release_all(struct ckpt_outbuf *o);
void ckpt_outbuf_get_stats(const struct ckpt_outbuf *o,
                           struct ckpt_outbuf_stats *ret);
/* Frees o without touching QEMU (release_all first if QEMU lives on);
 * removes the pcap files. Accepts NULL. */
void ckpt_outbuf_free(struct ckpt_outbuf *o);

#endif
