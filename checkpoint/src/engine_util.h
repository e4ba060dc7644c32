/* Private helpers shared by the two engines. */
#ifndef COLO_CHECKPOINT_ENGINE_UTIL_H
#define COLO_CHECKPOINT_ENGINE_UTIL_H

#include "checkpoint/ckpt.h"

#include <stdint.h>

struct xprt_link_cfg;

/* A ring of the last CKPT_STATS_WINDOW pause times. */
struct ckpt_window {
    uint64_t v[CKPT_STATS_WINDOW];
    uint64_t n; /* values added in total */
};

void ckpt_window_add(struct ckpt_window *w, uint64_t v);
/* Percentile p (0..100) of the values in the window, 0 if empty. */
uint64_t ckpt_window_pct(const struct ckpt_window *w, unsigned p);

/* TCP_NODELAY on a socket (no-op for other fds): the small END and ACK
 * records must not wait for Nagle + delayed ACK (~40 ms each). */
void ckpt_tcp_nodelay(int fd);

/* Link configuration from the engine's link options. */
void ckpt_link_cfg(const struct ckpt_link_opts *o, const char *name,
                   struct xprt_link_cfg *cfg);
/* The same with the lenient setup timeout (see ckpt.c), and the switch to
 * the configured heartbeat once the first checkpoint is through. */
#define CKPT_SETUP_TIMEOUT_MS 30000u
struct xprt_link;
void ckpt_link_cfg_setup(const struct ckpt_link_opts *o, const char *name,
                         struct xprt_link_cfg *cfg);
void ckpt_link_steady(struct xprt_link *l, const struct ckpt_link_opts *o);

#endif
