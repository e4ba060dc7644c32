/* Namespaces, veth pairs and TCP pairs for tests (tnet.h). */
#include "tnet.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int tnet_sh(const char *fmt, ...)
{
    char cmd[1400];
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    strncat(cmd, " >/dev/null 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int tnet_sh_out(char *out, size_t outsz, const char *fmt, ...)
{
    char cmd[1400];
    va_list ap;
    FILE *f;
    size_t n;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    f = popen(cmd, "r");
    if (!f) {
        out[0] = '\0';
        return -1;
    }
    n = fread(out, 1, outsz - 1, f);
    out[n] = '\0';
    st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Namespaces of this tag a killed earlier run left behind (pid gone). */
static void del_stale(const char *tag)
{
    DIR *d = opendir("/var/run/netns");
    struct dirent *de;
    char prefix[48];
    size_t plen;

    if (!d)
        return;
    plen = (size_t)snprintf(prefix, sizeof(prefix), "colo-%s-", tag);
    while ((de = readdir(d))) {
        char path[64], *end;
        long pid;

        if (strncmp(de->d_name, prefix, plen) != 0)
            continue;
        pid = strtol(de->d_name + plen, &end, 10);
        if (end == de->d_name + plen || *end != '-' || pid == getpid())
            continue;
        snprintf(path, sizeof(path), "/proc/%ld", pid);
        if (access(path, F_OK) != 0)
            tnet_sh("ip netns del %s", de->d_name);
    }
    closedir(d);
}

int tnet_setup(struct tnet *n, const char *tag, int net, char *why,
               size_t whysz)
{
    int pid = getpid();

    memset(n, 0, sizeof(*n));
    n->subnet = pid % 250 + 1;
    snprintf(n->ns_a, sizeof(n->ns_a), "colo-%s-%d-a", tag, pid);
    snprintf(n->ns_b, sizeof(n->ns_b), "colo-%s-%d-b", tag, pid);
    snprintf(n->if_a, sizeof(n->if_a), "c%ca%d", tag[0], pid % 100000);
    snprintf(n->if_b, sizeof(n->if_b), "c%cb%d", tag[0], pid % 100000);
    snprintf(n->addr_a, sizeof(n->addr_a), "10.%d.%d.1", net, n->subnet);
    snprintf(n->addr_b, sizeof(n->addr_b), "10.%d.%d.2", net, n->subnet);
    if (geteuid() != 0) {
        snprintf(why, whysz, "not root, cannot create network namespaces");
        return -1;
    }
    del_stale(tag);
    /* A previous test of this run may have failed before its cleanup. */
    tnet_sh("ip netns del %s", n->ns_a);
    tnet_sh("ip netns del %s", n->ns_b);
    if (tnet_sh("ip netns add %s", n->ns_a) != 0) {
        snprintf(why, whysz, "`ip netns add` failed here");
        return -1;
    }
    n->have = true;
    if (tnet_sh("ip netns add %s", n->ns_b) ||
        tnet_sh("ip link add %s netns %s type veth peer name %s netns %s",
                n->if_a, n->ns_a, n->if_b, n->ns_b) ||
        tnet_sh("ip -n %s addr add %s/30 dev %s", n->ns_a, n->addr_a,
                n->if_a) ||
        tnet_sh("ip -n %s addr add %s/30 dev %s", n->ns_b, n->addr_b,
                n->if_b) ||
        tnet_sh("ip -n %s link set %s up", n->ns_a, n->if_a) ||
        tnet_sh("ip -n %s link set %s up", n->ns_b, n->if_b) ||
        tnet_sh("ip -n %s link set lo up", n->ns_a) ||
        tnet_sh("ip -n %s link set lo up", n->ns_b)) {
        tnet_del(n);
        snprintf(why, whysz,
                 "veth / address setup in network namespaces failed here");
        return -1;
    }
    return 0;
}

void tnet_del(struct tnet *n)
{
    if (n->have) {
        tnet_sh("ip netns del %s", n->ns_a);
        tnet_sh("ip netns del %s", n->ns_b);
        n->have = false;
    }
}

int tnet_tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = 0;

    *a = *b = -1;
    if (ls < 0)
        return -errno;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 1) < 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &sl) < 0) {
        rc = -errno;
        goto out;
    }
    *a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*a < 0 || connect(*a, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        goto out;
    }
    *b = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (*b < 0)
        rc = -errno;
out:
    if (rc < 0 && *a >= 0) {
        close(*a);
        *a = -1;
    }
    close(ls);
    return rc;
}
