/*
 * The VM host: the long-running colo process that owns one VM on this
 * host, in one of two roles, on one libevent loop.
 *
 *   primary role   the guest runs here (colo start, or after a receive /
 *                  takeover). Owns QEMU, the RAM-file mapping and, while a
 *                  job runs, the primary engine (migrate or protect).
 *   secondary role colo receive / colo standby: a listening socket and the
 *                  secondary engine; launches the standby QEMU from the
 *                  configuration that arrives in the stream; on a finished
 *                  migrate or a takeover it switches to the primary role.
 *
 * The control socket <state-dir>/<vm>.sock answers: status, stop, config,
 * migrate, protect, unprotect, failover, handover (see ctl.h and the
 * README). handover (primary role, protected): end the pairing, migrate
 * the VM to the same peer (no state lost: the guest stops only for the
 * final copy), and exit once it runs there.
 *
 * States (struct orch_host):
 *   Listening   secondary, no peer yet               listener
 *   Secondary   secondary engine running             engine, ctl
 *   Running     primary role, guest running          qemu, vm, mem, ctl
 *   Job         Running + a primary engine           + engine, job request
 *   Exiting     the loop is being left (rc set)
 * status reports host_state "awaiting_promotion" (--takeover cluster) or
 * "primary_lost" while the secondary engine is Lost (primary gone, a
 * committed checkpoint to resume, no takeover decided yet).
 *
 * orch_host_run_*() run the loop until the host exits and return the
 * process exit code (ORCH_EXIT_*).
 */
#ifndef COLO_ORCH_HOST_H
#define COLO_ORCH_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct orch_host_opts {
    const char *state_dir; /* NULL: default (see ctl.h) */
    /* Secondary role. */
    const char *listen_host;   /* NULL: 0.0.0.0 */
    uint16_t listen_port;      /* with listen_host; 0: ephemeral */
    const char *key_file;      /* shared key: TLS with a PSK derived from it */
    const char *tls_creds;     /* or x509 credentials (QEMU's layout) */
    bool insecure;             /* explicitly no TLS, no authentication */
    bool standby;              /* protect (standby) rather than receive */
    const char *witness;       /* host:port that must be reachable */
    const char *fence_cmd;     /* command that must exit 0 */
    unsigned fence_timeout_ms; /* --fence-timeout; 0: 10000 */
    /* --takeover cluster: never decide alone. On primary loss wait (status
     * host_state "awaiting_promotion") for 'colo failover' (the cluster
     * manager's promote, docs/cluster.md). */
    bool takeover_cluster;
    unsigned heartbeat_ms;
    unsigned timeout_ms;
    const char *accel; /* "kvm", "tcg" or NULL (config / auto) */
    /* Secondary: "ID=PATH", this host's image of replicated disk ID. */
    const char *const *disk_map;
    size_t n_disk_map;
};

#define ORCH_HOST_MAX_DISK_MAP 64

#define ORCH_DEFAULT_PORT 8790

/* colo start CONFIG */
int orch_host_run_start(const char *config_path,
                        const struct orch_host_opts *o);
/* colo restore FILE (a save file of a QEMU guest, see qsave.h) */
int orch_host_run_restore(const char *path, const struct orch_host_opts *o);
/* colo receive / colo standby */
int orch_host_run_secondary(const struct orch_host_opts *o);

#endif
