/* Time: monotonic for every deadline and measurement. */
#ifndef COLO_COMMON_TIMEUTIL_H
#define COLO_COMMON_TIMEUTIL_H

#include <stdint.h>
#include <sys/time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t colo_now_ns(void);
/* CLOCK_REALTIME in nanoseconds: only for timestamps shown to people. */
uint64_t colo_now_realtime_ns(void);
/* Milliseconds as a struct timeval, for libevent timers. */
struct timeval colo_ms_to_tv(uint64_t ms);

#endif
