/*
 * Test support for networks the tests create themselves: two network
 * namespaces joined by a veth pair, and connected TCP pairs on loopback.
 *
 *   struct tnet n;
 *   char why[160];
 *   if (tnet_setup(&n, "nt", 197, why, sizeof(why)) < 0)
 *       cr_skip_test("%s", why);
 *   ... "ip netns exec" n.ns_a / n.ns_b, peers at n.addr_a / n.addr_b ...
 *   tnet_del(&n);
 *
 * Names carry the test's pid and a tag per test program, so programs run in
 * parallel: namespaces colo-<tag>-<pid>-a/-b, interfaces c<tag[0]>a<pid>,
 * addresses 10.<net>.<pid % 250 + 1>.1 and .2 (/30). Namespaces of the same
 * tag whose pid is gone (a killed earlier run) are removed on setup.
 */
#ifndef COLO_TESTS_TNET_H
#define COLO_TESTS_TNET_H

#include <stdbool.h>
#include <stddef.h>

struct tnet {
    char ns_a[40], ns_b[40];
    char if_a[16], if_b[16];
    char addr_a[32], addr_b[32];
    int subnet; /* pid % 250 + 1: the third byte of the addresses */
    bool have;  /* namespaces exist: tnet_del() removes them */
};

/* Run a shell command quietly (output to /dev/null); its exit code, -1
 * when it did not exit. */
int tnet_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same, with stdout+stderr captured into out (NUL-terminated). */
int tnet_sh_out(char *out, size_t outsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Create the two namespaces with the veth pair up, addresses set, lo up.
 * 0, or -1 with the reason in why (not root, `ip netns add` failed, the
 * veth/address setup failed); nothing is left behind on failure. */
int tnet_setup(struct tnet *n, const char *tag, int net, char *why,
               size_t whysz);
/* Remove the namespaces (and with them the veth pair). Idempotent. */
void tnet_del(struct tnet *n);

/* A connected TCP pair over 127.0.0.1: *a connected, *b accepted (both
 * CLOEXEC). 0, or -errno with nothing left open. */
int tnet_tcp_pair(int *a, int *b);

#endif
