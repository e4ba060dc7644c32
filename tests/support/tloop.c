/* Loop-driven waits with a deadline (tloop.h). */
#include "tloop.h"

#include <stdlib.h>

#include "common/timeutil.h"

static void expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

bool tloop_until(struct event_base *base, bool (*cond)(void *), void *arg,
                 unsigned ms)
{
    struct timeval tv = colo_ms_to_tv(ms);
    bool timed_out = false;
    struct event *t = evtimer_new(base, expired, &timed_out);

    if (!t)
        abort(); /* out of memory in a test */
    evtimer_add(t, &tv);
    while (!cond(arg) && !timed_out)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return cond(arg);
}

struct fn {
    bool (*cond)(void);
};

static bool call_fn(void *arg)
{
    return ((struct fn *)arg)->cond();
}

bool tloop_until_fn(struct event_base *base, bool (*cond)(void), unsigned ms)
{
    struct fn f = {cond};

    return tloop_until(base, call_fn, &f, ms);
}

static bool flag_set(void *arg)
{
    return *(const bool *)arg;
}

bool tloop_until_flag(struct event_base *base, const bool *flag, unsigned ms)
{
    return tloop_until(base, flag_set, (void *)flag, ms);
}

static bool int_set(void *arg)
{
    return *(const int *)arg != 0;
}

bool tloop_until_int(struct event_base *base, const int *flag, unsigned ms)
{
    return tloop_until(base, int_set, (void *)flag, ms);
}

struct count {
    const int *counter;
    int want;
};

static bool count_reached(void *arg)
{
    struct count *c = arg;

    return *c->counter >= c->want;
}

bool tloop_until_count(struct event_base *base, const int *counter, int want,
                       unsigned ms)
{
    struct count c = {counter, want};

    return tloop_until(base, count_reached, &c, ms);
}
