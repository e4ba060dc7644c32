/*
 * Test support: the outside world of the Linux test guest (tests/linux), a
 * peer the test owns on QEMU's `-netdev stream` unix socket. It records
 * every Ethernet frame any QEMU sends it (the HA tests' oracle: what the
 * world saw, never colo's logs), answers ARP for its address, and speaks
 * just enough TCP (one connection at a time, a request line and a reply
 * line, retransmitting on a timer) to ask the guest's workload for its
 * counter.
 *
 * Wire format (QEMU 7.2 net/stream.c): each frame is a 4-byte big-endian
 * length and the Ethernet frame. The peer listens; every QEMU whose netdev
 * connects (a primary, a secondary after failover) is a client; frames the
 * peer sends go to every connected client.
 *
 * Addresses (the defaults of tests/linux/init and workload.c): the peer is
 * 10.0.2.2, MAC 52:54:00:00:00:02, UDP port 5555; the guest 10.0.2.15,
 * MAC 52:54:00:12:34:56, TCP port 7777.
 *
 * A thread of its own does the I/O; the calls below are thread-safe and
 * every wait is bounded.
 */
#ifndef COLO_TESTS_NETPEER_H
#define COLO_TESTS_NETPEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NETPEER_IP        "10.0.2.2"
#define NETPEER_MAC       "52:54:00:00:00:02"
#define NETPEER_UDP_PORT  5555
#define NETPEER_GUEST_IP  "10.0.2.15"
#define NETPEER_GUEST_MAC "52:54:00:12:34:56"
#define NETPEER_TCP_PORT  7777

struct netpeer;

/* Listen on path (removed first if it exists). */
int netpeer_start(const char *path, struct netpeer **ret);
/* Stop the thread, close everything. Accepts NULL. */
void netpeer_free(struct netpeer *np);

/* Counts so far. */
size_t netpeer_frames(struct netpeer *np);
unsigned netpeer_connections(struct netpeer *np); /* accepted so far */

/* The values N of the UDP datagrams "count N\n" received so far, in arrival
 * order (at most max); returns how many there are in all. */
size_t netpeer_udp_values(struct netpeer *np, uint32_t *out, size_t max);
/* The same with the connection each came on (1 = the first QEMU that
 * connected, 2 = the next, ...) and its arrival time (netpeer_now_ms). */
struct netpeer_udp {
    uint32_t v;
    unsigned conn;
    long long ms;
};
size_t netpeer_udp_get(struct netpeer *np, struct netpeer_udp *out, size_t max);
/* Wait (bounded) for a UDP "count N" with N > v; 0 (N in *got when got is
 * not NULL) or -ETIMEDOUT. */
int netpeer_wait_udp_above(struct netpeer *np, uint32_t v, int timeout_ms,
                           uint32_t *got);
/* Milliseconds since netpeer_start() of the first datagram with N > v,
 * or -1. */
long long netpeer_udp_first_ms(struct netpeer *np, uint32_t v);

/* One TCP exchange with the guest: connect to NETPEER_TCP_PORT, send line
 * (must end in '\n'), wait for a reply line, reset the connection. The
 * reply (NUL-terminated, newline kept) goes to reply. 0, -ETIMEDOUT, or
 * -ECONNREFUSED (the guest sent RST). */
int netpeer_tcp_request(struct netpeer *np, const char *line, char *reply,
                        size_t replysz, int timeout_ms);

/* Milliseconds since netpeer_start(). */
long long netpeer_now_ms(struct netpeer *np);

#endif
