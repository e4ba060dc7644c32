/*
 * Small asynchronous helpers for jobs: a TCP connect with a deadline (for
 * migrate/protect targets and the witness), and a child command whose exit
 * status is reported through the loop (the fence command).
 */
#ifndef COLO_ORCH_NETUTIL_H
#define COLO_ORCH_NETUTIL_H

#include <stdint.h>

struct event_base;
struct orch_connect;
struct orch_child;

/* "host", "host:port", "[v6]:port", "v6"; port defaults to def_port.
 * Port 0 is returned as given (the caller decides what it means).
 * *ret_host is malloc'd. -EINVAL on a malformed string. */
int orch_parse_hostport(const char *s, uint16_t def_port, char **ret_host,
                        uint16_t *ret_port);

/* cb: fd >= 0 a connected, blocking-mode, CLOEXEC TCP socket (consumed by
 * the callee), or rc < 0 (-ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH...).
 * Called exactly once from the loop unless cancelled first. Host names
 * other than numeric ones and "localhost" are resolved with a blocking
 * getaddrinfo() at start. */
typedef void orch_connect_fn(void *arg, int fd_or_rc);
int orch_connect_start(struct event_base *base, const char *host, uint16_t port,
                       unsigned timeout_ms, orch_connect_fn *cb, void *arg,
                       struct orch_connect **ret);
void orch_connect_cancel(struct orch_connect *c); /* NULL ok, no cb */

/* Run `/bin/sh -c cmd`; cb(exit status as from waitpid, or rc < 0 on
 * timeout, after which the child is killed). Exactly once unless
 * cancelled (the child is then killed and reaped). */
typedef void orch_child_fn(void *arg, int status_or_rc);
int orch_child_start(struct event_base *base, const char *cmd,
                     unsigned timeout_ms, orch_child_fn *cb, void *arg,
                     struct orch_child **ret);
void orch_child_cancel(struct orch_child *c); /* NULL ok, no cb */

/* Watch a process (pidfd): cb once when it has exited. The watcher does
 * not reap (the owner of the process does). */
struct orch_pidwatch;
typedef void orch_pidwatch_fn(void *arg);
int orch_pidwatch_start(struct event_base *base, int pid, orch_pidwatch_fn *cb,
                        void *arg, struct orch_pidwatch **ret);
void orch_pidwatch_free(struct orch_pidwatch *w); /* NULL ok */

#endif
