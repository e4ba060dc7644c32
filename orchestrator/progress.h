/*
 * The progress bar of `colo migrate` and of the initial (full) checkpoint
 * of `colo protect`, drawn on a terminal from the job's event lines:
 *
 *   [########--------]  412.0 MiB  98.5 MiB/s  ETA 0:06  dirty 12.3 MiB/s round
 * 2
 *
 * Events used: "paired" (round 1 / the full sync starts), "progress"
 * (every progress_ms, asked for by the client: bytes_sent, ram_bytes),
 * "round" (round N starts with dirty_pages_last pages), "checkpoint" (the
 * protect's first checkpoint is acked: the bar goes away).
 *
 * Rate: bytes sent per second between samples (smoothed). Dirty rate:
 * the pages of a new round over the previous round's duration. ETA: what
 * is left of the round / (rate - dirty rate); "--:--" while the guest
 * dirties memory faster than the link sends it (the migrate then stops
 * after --max-rounds) or before a rate is known.
 *
 * States: closed (nothing drawn) -> open (the bar line is on the terminal,
 * without its newline) -> closed again by orch_progress_end or, for
 * protect, by the first checkpoint.
 */
#ifndef COLO_ORCH_PROGRESS_H
#define COLO_ORCH_PROGRESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct orch_progress {
    FILE *out;
    bool protect; /* the bar covers the first checkpoint only */
    bool open;    /* a bar line is drawn, without its newline */
    bool done;    /* protect: first checkpoint acked, no more bar */
    int cols;     /* terminal width, 0: unknown (80) */

    uint64_t ram_bytes;
    uint64_t bytes_sent;
    unsigned round;
    uint64_t round_t0_ns, round_bytes0, round_total; /* this round */
    uint64_t sample_t_ns, sample_bytes;              /* the rate's last */
    double rate_bps;                                 /* 0: not yet known */
    double dirty_bps;                                /* 0: not yet known */
};

/* out: where the bar goes (a terminal); protect: see above. */
void orch_progress_init(struct orch_progress *pg, FILE *out, bool protect);
/* Feed one event line at time now_ns (CLOCK_MONOTONIC). Returns true if
 * the event was a progress event for the bar (drawn, nothing else to
 * print), false if the caller prints it as usual. */
bool orch_progress_event(struct orch_progress *pg, json_t *ev, uint64_t now_ns);
/* Finish the bar line (a newline) if one is open. */
void orch_progress_end(struct orch_progress *pg);
/* The bar's text (no \r), at most size-1 bytes. For tests. */
void orch_progress_format(const struct orch_progress *pg, uint64_t now_ns,
                          char *buf, size_t size);

#endif
