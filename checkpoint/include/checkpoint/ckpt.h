/*
 * Types shared by the primary and the secondary engine: modes, events,
 * metrics, link options.
 *
 * Threading: everything runs on the caller's libevent event_base; nothing
 * blocks it. Every callback below is called from the loop, never from
 * inside the public function that caused it.
 */
#ifndef COLO_CHECKPOINT_CKPT_H
#define COLO_CHECKPOINT_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ckpt_role {
    CKPT_ROLE_PRIMARY = 0,
    CKPT_ROLE_SECONDARY,
};

enum ckpt_mode {
    CKPT_MODE_MIGRATE = 0, /* precopy rounds, stop-and-copy, done */
    CKPT_MODE_REMUS,       /* protect; secondary paused between ckpts */
    CKPT_MODE_COLO,        /* protect; secondary runs between ckpts */
};

const char *ckpt_mode_name(enum ckpt_mode m); /* "migrate", "remus".. */
int ckpt_mode_parse(const char *s, enum ckpt_mode *ret);
const char *ckpt_role_name(enum ckpt_role r); /* "primary", "secondary" */

/*
 * The link between the engines. The engine is given a connected TCP socket
 * and runs colo's record link (transport/) over it: TLS 1.3 with a PSK
 * derived from auth_key, or with x509 credentials from tls_creds; plain
 * (no TLS, no authentication) only when neither is given.
 */
struct ckpt_link_opts {
    const char *auth_key;  /* shared secret; NULL or "": see tls_creds */
    const char *tls_creds; /* x509 directory (QEMU's layout); NULL: none */
    unsigned heartbeat_ms; /* send a heartbeat this often (0: 200) */
    unsigned timeout_ms;   /* peer silent this long = gone (0: 1000) */
};

/*
 * Metrics, cheap to query at any time (also mid-checkpoint). Times are in
 * microseconds, counts since the engine was created.
 */
struct ckpt_stats {
    enum ckpt_role role;
    enum ckpt_mode mode;
    const char *state;      /* the engine state's name, static string */
    int64_t last_committed; /* last checkpoint acked (primary) or
                               committed (secondary); -1: none */
    uint64_t checkpoints;   /* checkpoints acked / committed */
    /* Primary: checkpoints started early on request
     * (ckpt_primary_checkpoint_now: output commit's packet cap, later COLO
     * divergence) rather than by the interval timer. */
    uint64_t forced_checkpoints;
    bool is_protected;     /* primary: paired, last ckpt acked */
    bool link_up;          /* a link to the peer exists and is alive */
    uint64_t link_idle_ms; /* time since the last byte from the peer */

    /* Pause = guest stopped (stop sent .. cont acknowledged), primary. */
    uint64_t pause_last_us;
    uint64_t pause_p50_us; /* over the last CKPT_STATS_WINDOW ckpts */
    uint64_t pause_p99_us;
    /* Where the last pause went. */
    uint64_t devstate_last_us; /* device-state save */
    uint64_t scan_last_us;     /* dirty scan */
    uint64_t copy_last_us;     /* copying dirty pages */
    const char *dirty_method;  /* primary: how dirty pages are found
                                  (ckpt_mem_dirty_method: "soft-dirty",
                                  "compare", ...); static; NULL else */

    uint64_t dirty_pages_last; /* pages in the last checkpoint / round */
    uint64_t dirty_pages_total;
    uint64_t devstate_bytes_last;
    uint64_t bytes_sent;
    uint64_t bytes_received;

    /* Migrate (primary and receiver). */
    uint32_t rounds;      /* precopy rounds including the final one */
    uint64_t total_us;    /* migrate: start .. ack of the final ckpt */
    uint64_t downtime_us; /* migrate: stop .. ack of the final ckpt */

    /* Disks (checkpoint/disk.h), primary. */
    uint64_t disk_sync_done;   /* full sync: image bytes passed */
    uint64_t disk_sync_total;  /* full sync: image bytes in all */
    uint64_t disk_sync_us;     /* last full sync's duration */
    uint64_t disk_writes_last; /* DISK_WRITE records of the last ckpt */
    uint64_t disk_bytes_last;  /* their data octets */
};

#define CKPT_STATS_WINDOW 1024

enum ckpt_event_type {
    CKPT_EV_PAIRED = 0,   /* HELLO exchanged with the peer */
    CKPT_EV_ROUND,        /* migrate: a precopy round was sent */
    CKPT_EV_CHECKPOINT,   /* checkpoint ev->ckpt acked / committed */
    CKPT_EV_UNPROTECTED,  /* primary: the secondary is gone (ev->rc) */
    CKPT_EV_PRIMARY_LOST, /* secondary: primary gone (ev->rc); asking
                             may_takeover / waiting for failover */
    CKPT_EV_TAKEOVER,     /* secondary: resuming the guest from
                             ev->ckpt */
};

const char *ckpt_event_name(enum ckpt_event_type t);

struct ckpt_event {
    enum ckpt_event_type type;
    int64_t ckpt; /* the checkpoint concerned, -1 if none */
    int rc;       /* the reason for UNPROTECTED / PRIMARY_LOST */
    const struct ckpt_stats *stats; /* a snapshot, valid in the call */
};

/* A cheap 64-bit digest (FNV-1a over 64-bit words) of a RAM image and a
 * device-state blob, as carried in ACK when verification is on. */
uint64_t ckpt_digest(const uint8_t *ram, size_t ram_len, const uint8_t *dev,
                     size_t dev_len);

#endif
