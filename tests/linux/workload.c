/*
 * colo-workload: the program the Linux test guest runs as PID 1 (after
 * tests/linux/init). It makes output commit visible from outside: it keeps a
 * counter in memory and, for each new value, in this order
 *   1. writes it to its disk (O_DIRECT | O_DSYNC: on the disk before 2.),
 *   2. sends it in a UDP datagram to the peer,
 *   3. prints it on the serial console,
 * and answers each line received on its TCP port with the current value.
 * Every output carries the same text, "count <N>\n" (N decimal).
 *
 * Configuration: the kernel command line (tests/linux/README.md):
 *   cw.interval=MS   a new value every MS ms (default 100; 0: never)
 *   cw.burst=N       values per interval (default 1)
 *   cw.out=LIST      outputs, comma-separated from serial,udp,disk,tcp
 *                    (default all four; "none" for none)
 *   cw.det=1         deterministic (COLO): no timer; each TCP request line
 *                    makes the next value (disk, UDP, serial) and is
 *                    answered with it; TCP timestamps off
 *   cw.peer=ADDR     the peer's IPv4 address (default 10.0.2.2)
 *   cw.udp=PORT      the peer's UDP port (default 5555)
 *   cw.tcp=PORT      the TCP port served (default 7777)
 *   cw.disk=DEV      the disk (default /dev/vda)
 *   cw.ring=N        disk records in the ring (default 1024)
 * Disk layout: value N goes to the 512-byte sector 1 + (N % ring), the text
 * "count <N>\n" padded with NUL bytes; sector 0 holds "colo-workload\n".
 *
 * Built static (no libc in the initramfs), outside the project's compile
 * flags (no sanitizers).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SECTOR      512
#define MAX_CLIENTS 16
#define LINE_MAX_B  256

struct cfg {
    unsigned interval_ms, burst, ring;
    int o_serial, o_udp, o_disk, o_tcp, det;
    char peer[64], disk[64];
    unsigned udp_port, tcp_port;
};

struct client {
    int fd;
    size_t len;
    char buf[LINE_MAX_B];
};

static struct cfg c = {
    .interval_ms = 100,
    .burst = 1,
    .ring = 1024,
    .o_serial = 1,
    .o_udp = 1,
    .o_disk = 1,
    .o_tcp = 1,
    .peer = "10.0.2.2",
    .disk = "/dev/vda",
    .udp_port = 5555,
    .tcp_port = 7777,
};
static int serial_fd = -1, udp_fd = -1, disk_fd = -1, listen_fd = -1;
static struct sockaddr_in peer_addr;
static uint32_t counter;
static unsigned char *sector; /* SECTOR bytes, aligned for O_DIRECT */

static void say(const char *fmt, ...)
{
    char b[512];
    va_list ap;
    int n;

    if (serial_fd < 0)
        return;
    va_start(ap, fmt);
    n = vsnprintf(b, sizeof(b), fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(b) - 1)
        n = (int)sizeof(b) - 1;
    if (n > 0 && write(serial_fd, b, (size_t)n) < 0)
        return;
}

static void parse_out(const char *v)
{
    char tmp[128], *save = NULL, *t;

    c.o_serial = c.o_udp = c.o_disk = c.o_tcp = 0;
    snprintf(tmp, sizeof(tmp), "%s", v);
    for (t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "serial"))
            c.o_serial = 1;
        else if (!strcmp(t, "udp"))
            c.o_udp = 1;
        else if (!strcmp(t, "disk"))
            c.o_disk = 1;
        else if (!strcmp(t, "tcp"))
            c.o_tcp = 1;
    }
}

static void parse_cmdline(void)
{
    char buf[4096], *save = NULL, *t;
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    for (t = strtok_r(buf, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
        if (strncmp(t, "cw.", 3) != 0 || !strchr(t, '='))
            continue;
        char *v = strchr(t, '=') + 1;

        if (!strncmp(t, "cw.interval=", 12))
            c.interval_ms = (unsigned)strtoul(v, NULL, 10);
        else if (!strncmp(t, "cw.burst=", 9))
            c.burst = (unsigned)strtoul(v, NULL, 10);
        else if (!strncmp(t, "cw.ring=", 8))
            c.ring = (unsigned)strtoul(v, NULL, 10);
        else if (!strncmp(t, "cw.out=", 7))
            parse_out(v);
        else if (!strncmp(t, "cw.det=", 7))
            c.det = atoi(v) != 0;
        else if (!strncmp(t, "cw.peer=", 8))
            snprintf(c.peer, sizeof(c.peer), "%s", v);
        else if (!strncmp(t, "cw.udp=", 7))
            c.udp_port = (unsigned)strtoul(v, NULL, 10);
        else if (!strncmp(t, "cw.tcp=", 7))
            c.tcp_port = (unsigned)strtoul(v, NULL, 10);
        else if (!strncmp(t, "cw.disk=", 8))
            snprintf(c.disk, sizeof(c.disk), "%s", v);
    }
    if (c.burst == 0)
        c.burst = 1;
    if (c.ring == 0)
        c.ring = 1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);

    if (fd < 0)
        return;
    if (write(fd, s, strlen(s)) < 0)
        say("colo-workload: cannot write %s\n", path);
    close(fd);
}

/* The next value: disk (synchronous), then UDP, then serial. */
static void next_value(void)
{
    char text[32];
    int n;

    counter++;
    n = snprintf(text, sizeof(text), "count %u\n", counter);
    if (disk_fd >= 0) {
        memset(sector, 0, SECTOR);
        memcpy(sector, text, (size_t)n);
        if (pwrite(disk_fd, sector, SECTOR,
                   (off_t)(1 + counter % c.ring) * SECTOR) != SECTOR)
            say("colo-workload: disk write of %u failed: %s\n", counter,
                strerror(errno));
    }
    if (udp_fd >= 0 &&
        sendto(udp_fd, text, (size_t)n, 0, (struct sockaddr *)&peer_addr,
               sizeof(peer_addr)) < 0 &&
        errno != EAGAIN && errno != ENOBUFS)
        say("colo-workload: udp send failed: %s\n", strerror(errno));
    if (c.o_serial)
        say("%s", text);
}

static void open_outputs(void)
{
    if (c.o_disk) {
        disk_fd = open(c.disk, O_RDWR | O_DIRECT | O_DSYNC | O_CLOEXEC);
        if (disk_fd < 0) {
            say("colo-workload: cannot open %s: %s\n", c.disk, strerror(errno));
        } else {
            memset(sector, 0, SECTOR);
            memcpy(sector, "colo-workload\n", 14);
            if (pwrite(disk_fd, sector, SECTOR, 0) != SECTOR)
                say("colo-workload: disk header write failed: %s\n",
                    strerror(errno));
        }
    }
    memset(&peer_addr, 0, sizeof(peer_addr));
    peer_addr.sin_family = AF_INET;
    peer_addr.sin_port = htons((uint16_t)c.udp_port);
    if (inet_pton(AF_INET, c.peer, &peer_addr.sin_addr) != 1)
        say("colo-workload: bad cw.peer %s\n", c.peer);
    if (c.o_udp) {
        udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (udp_fd < 0)
            say("colo-workload: udp socket: %s\n", strerror(errno));
    }
    if (c.o_tcp) {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)c.tcp_port)};
        int one = 1;

        listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listen_fd >= 0) {
            setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
                listen(listen_fd, 16) < 0) {
                say("colo-workload: tcp listen: %s\n", strerror(errno));
                close(listen_fd);
                listen_fd = -1;
            }
        }
    }
}

/* Answer every complete line in cl's buffer; -1 when the client is gone. */
static int serve(struct client *cl)
{
    ssize_t n = read(cl->fd, cl->buf + cl->len, sizeof(cl->buf) - cl->len);
    char *nl;

    if (n <= 0)
        return n < 0 && errno == EINTR ? 0 : -1;
    cl->len += (size_t)n;
    while ((nl = memchr(cl->buf, '\n', cl->len)) != NULL) {
        char text[32];
        int m, one = 1;

        if (c.det)
            next_value();
        m = snprintf(text, sizeof(text), "count %u\n", counter);
        if (write(cl->fd, text, (size_t)m) != m)
            return -1;
        setsockopt(cl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        cl->len -= (size_t)(nl + 1 - cl->buf);
        memmove(cl->buf, nl + 1, cl->len);
    }
    if (cl->len == sizeof(cl->buf))
        return -1; /* a line over LINE_MAX_B: not ours */
    return 0;
}

int main(void)
{
    struct client cl[MAX_CLIENTS];
    struct pollfd pf[MAX_CLIENTS + 1];
    uint64_t next;
    char up[64] = "?";
    int i, fd;

    serial_fd = open("/dev/ttyS0", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (posix_memalign((void **)&sector, 4096, 4096) != 0)
        return 1;
    parse_cmdline();
    if (c.det) {
        c.interval_ms = 0;
        write_file("/proc/sys/net/ipv4/tcp_timestamps", "0");
    }
    open_outputs();
    fd = open("/proc/uptime", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, up, sizeof(up) - 1);

        up[n > 0 ? n : 0] = '\0';
        up[strcspn(up, " \n")] = '\0';
        close(fd);
    }
    say("colo-workload ready uptime=%s interval=%u burst=%u det=%d "
        "out=%s%s%s%s\n",
        up, c.interval_ms, c.burst, c.det, c.o_serial ? "serial," : "",
        c.o_udp ? "udp," : "", c.o_disk ? "disk," : "", c.o_tcp ? "tcp" : "");
    for (i = 0; i < MAX_CLIENTS; i++)
        cl[i].fd = -1;
    next = now_ms() + c.interval_ms;
    for (;;) {
        int timeout = -1, n = 0;

        if (c.interval_ms) {
            uint64_t t = now_ms();

            if (t >= next) {
                for (unsigned b = 0; b < c.burst; b++)
                    next_value();
                next += c.interval_ms;
                if (next <= t) /* after a pause: no catching up */
                    next = t + c.interval_ms;
            }
            timeout = (int)(next - now_ms() > c.interval_ms ? c.interval_ms
                                                            : next - now_ms());
        }
        if (listen_fd >= 0) {
            pf[n].fd = listen_fd;
            pf[n++].events = POLLIN;
        }
        for (i = 0; i < MAX_CLIENTS; i++)
            if (cl[i].fd >= 0) {
                pf[n].fd = cl[i].fd;
                pf[n++].events = POLLIN;
            }
        if (poll(pf, (nfds_t)n, timeout) <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (pf[k].fd == listen_fd) {
                fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                for (i = 0; i < MAX_CLIENTS && cl[i].fd >= 0; i++)
                    ;
                if (i == MAX_CLIENTS) {
                    close(fd);
                    continue;
                }
                cl[i].fd = fd;
                cl[i].len = 0;
                continue;
            }
            for (i = 0; i < MAX_CLIENTS && cl[i].fd != pf[k].fd; i++)
                ;
            if (i < MAX_CLIENTS && serve(&cl[i]) < 0) {
                close(cl[i].fd);
                cl[i].fd = -1;
            }
        }
    }
}
