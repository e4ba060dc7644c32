/* Xen domain migration (xen_migrate.c): the source command and the
 * target's half, which host.c starts when a primary offers a Xen domain. */
#ifndef COLO_ORCH_XEN_MIGRATE_H
#define COLO_ORCH_XEN_MIGRATE_H

#include <stdint.h>

struct event_base;
struct xprt_link;
struct orch_xen_recv;

#include <stdbool.h>

int orch_cmd_xen_migrate(int argc, char **argv);
int orch_cmd_xen_protect(int argc, char **argv);
/* colo failover NAME: run the paused copy a standby left (no tie-breaker
 * agreed): unpause it, under its own name once that is free. */
int orch_cmd_xen_failover(int argc, char **argv);

struct orch_xen_recv_opts {
    bool standby;              /* colo standby (Remus) rather than receive */
    const char *fence_cmd;     /* tie-breaker for a failover: must exit 0 */
    unsigned fence_timeout_ms; /* its deadline; 0: 10000 */
    const char *witness;       /* ... or HOST:PORT must be reachable; neither:
                                * the domain stays paused (colo failover) */
};

/* rc 0: domain domid runs here (after a failover: the standby took over;
 * paused if no tie-breaker agreed). Called once, from the loop. */
typedef void orch_xen_recv_done(void *arg, int rc, const char *why,
                                uint32_t domid);
/* link consumed (also on failure). Synchronous errors only for out of
 * memory; everything else comes through done. */
int orch_xen_recv_start(struct event_base *base, struct xprt_link *link,
                        const struct orch_xen_recv_opts *o,
                        uint32_t hello_flags, const char *name,
                        const char *config, orch_xen_recv_done *done, void *arg,
                        struct orch_xen_recv **ret);
void orch_xen_recv_free(struct orch_xen_recv *r); /* NULL ok; no done */

#endif
