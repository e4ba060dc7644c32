#include "common/timeutil.h"

#include <time.h>

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t colo_now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

uint64_t colo_now_realtime_ns(void)
{
    return clock_ns(CLOCK_REALTIME);
}

struct timeval colo_ms_to_tv(uint64_t ms)
{
    struct timeval tv = {
        .tv_sec = (time_t)(ms / 1000),
        .tv_usec = (suseconds_t)((ms % 1000) * 1000),
    };
    return tv;
}
