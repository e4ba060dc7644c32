/*
 * Test support: run a libevent loop until a condition holds or a deadline
 * passes. Never sleeps: the deadline is a timer on the same base, and the
 * loop wakes for it or for the events that change the condition.
 */
#ifndef COLO_TESTS_TLOOP_H
#define COLO_TESTS_TLOOP_H

#include <stdbool.h>

#include <event2/event.h>

/* Run base until cond(arg) holds or ms milliseconds pass; returns
 * cond(arg) (false: the deadline passed first). */
bool tloop_until(struct event_base *base, bool (*cond)(void *), void *arg,
                 unsigned ms);
/* The same for cond() without an argument. */
bool tloop_until_fn(struct event_base *base, bool (*cond)(void), unsigned ms);
/* ... until *flag (bool, or a nonzero int), or *counter >= want. */
bool tloop_until_flag(struct event_base *base, const bool *flag, unsigned ms);
bool tloop_until_int(struct event_base *base, const int *flag, unsigned ms);
bool tloop_until_count(struct event_base *base, const int *counter, int want,
                       unsigned ms);

#endif
