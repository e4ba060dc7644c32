/* The recording peer of the Linux test guest (netpeer.h). */
#include "netpeer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 8
#define MAX_FRAME   65536
#define RETRANS_MS  300

enum tcp_phase { TCP_IDLE, TCP_SYN_SENT, TCP_ESTABLISHED, TCP_DONE };

struct client {
    int fd;
    unsigned conn; /* accept ordinal, from 1 */
    size_t len;
    uint8_t buf[4 + MAX_FRAME];
};

struct netpeer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int lfd, wake[2];
    bool stop, started;
    struct timespec t0;
    struct client cl[MAX_CLIENTS];
    unsigned connections;
    size_t frames;
    uint8_t guest_mac[6], my_mac[6];
    uint32_t my_ip, guest_ip; /* network order */
    /* UDP "count N" values in arrival order, with their arrival time. */
    uint32_t *udp;
    long long *udp_ms;
    unsigned *udp_conn;
    size_t n_udp, cap_udp;
    /* The one TCP exchange in progress. */
    enum tcp_phase phase;
    int tcp_err;
    uint16_t sport;
    uint32_t iss, rcv_nxt;
    char req[256];
    size_t req_len;
    char reply[256];
    size_t reply_len;
    long long last_tx_ms;
};

long long netpeer_now_ms(struct netpeer *np)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)(t.tv_sec - np->t0.tv_sec) * 1000 +
           (t.tv_nsec - np->t0.tv_nsec) / 1000000;
}

static void parse_mac(const char *s, uint8_t m[6])
{
    unsigned v[6];

    if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5]) == 6)
        for (int i = 0; i < 6; i++)
            m[i] = (uint8_t)v[i];
}

static uint16_t csum_fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static uint32_t csum_add(uint32_t s, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    return s;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) << 16 | get16(p + 2);
}

/* Send one frame to every client (thread context, np->mu held). */
static void send_frame(struct netpeer *np, const uint8_t *f, size_t len)
{
    uint8_t hdr[4];

    put32(hdr, (uint32_t)len);
    for (int i = 0; i < MAX_CLIENTS; i++) {
        struct iovec iov[2] = {{hdr, 4}, {(void *)f, len}};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};

        if (np->cl[i].fd < 0)
            continue;
        /* Blocking with a send timeout: frames are small and QEMU reads
         * them even while its guest is stopped. */
        if (sendmsg(np->cl[i].fd, &m, MSG_NOSIGNAL) != (ssize_t)(4 + len)) {
            close(np->cl[i].fd);
            np->cl[i].fd = -1;
        }
    }
}

static void eth_hdr(struct netpeer *np, uint8_t *f, uint16_t type)
{
    memcpy(f, np->guest_mac, 6);
    memcpy(f + 6, np->my_mac, 6);
    put16(f + 12, type);
}

/* A TCP segment to the guest with flags and optional payload. */
static void send_tcp(struct netpeer *np, uint32_t seq, uint32_t ack,
                     uint8_t flags, const void *data, size_t dlen)
{
    uint8_t f[14 + 20 + 20 + 256], ph[12];
    uint8_t *ip = f + 14, *t = f + 34;
    uint32_t s;

    if (dlen > 256)
        return;
    memset(f, 0, sizeof(f));
    eth_hdr(np, f, 0x0800);
    ip[0] = 0x45;
    put16(ip + 2, (uint16_t)(20 + 20 + dlen));
    put16(ip + 6, 0x4000); /* DF */
    ip[8] = 64;
    ip[9] = 6;
    memcpy(ip + 12, &np->my_ip, 4);
    memcpy(ip + 16, &np->guest_ip, 4);
    put16(ip + 10, csum_fold(csum_add(0, ip, 20)));
    put16(t, np->sport);
    put16(t + 2, NETPEER_TCP_PORT);
    put32(t + 4, seq);
    put32(t + 8, ack);
    t[12] = 5 << 4;
    t[13] = flags;
    put16(t + 14, 65535);
    if (dlen)
        memcpy(t + 20, data, dlen);
    memcpy(ph, ip + 12, 8);
    ph[8] = 0;
    ph[9] = 6;
    put16(ph + 10, (uint16_t)(20 + dlen));
    s = csum_add(0, ph, 12);
    s = csum_add(s, t, 20 + dlen);
    put16(t + 16, csum_fold(s));
    send_frame(np, f, 14 + 40 + dlen);
}

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10

static void tcp_tx(struct netpeer *np)
{
    if (np->phase == TCP_SYN_SENT)
        send_tcp(np, np->iss, 0, F_SYN, NULL, 0);
    else if (np->phase == TCP_ESTABLISHED)
        send_tcp(np, np->iss + 1, np->rcv_nxt, F_ACK | F_PSH, np->req,
                 np->req_len);
    np->last_tx_ms = netpeer_now_ms(np);
}

static void on_tcp(struct netpeer *np, const uint8_t *t, size_t len)
{
    uint32_t seq, ack;
    uint8_t flags;
    size_t hl;

    if (len < 20 || get16(t + 2) != np->sport || np->phase == TCP_IDLE ||
        np->phase == TCP_DONE)
        return;
    seq = get32(t + 4);
    ack = get32(t + 8);
    flags = t[13];
    hl = (size_t)(t[12] >> 4) * 4;
    if (hl < 20 || hl > len)
        return;
    if (flags & F_RST) {
        np->phase = TCP_DONE;
        np->tcp_err = -ECONNREFUSED;
        pthread_cond_broadcast(&np->cv);
        return;
    }
    if (np->phase == TCP_SYN_SENT) {
        if ((flags & (F_SYN | F_ACK)) != (F_SYN | F_ACK) || ack != np->iss + 1)
            return;
        np->rcv_nxt = seq + 1;
        np->phase = TCP_ESTABLISHED;
        tcp_tx(np);
        return;
    }
    /* Established: take in-order data. */
    if (len > hl && seq == np->rcv_nxt) {
        size_t d = len - hl, room = sizeof(np->reply) - 1 - np->reply_len;

        if (d > room)
            d = room;
        memcpy(np->reply + np->reply_len, t + hl, d);
        np->reply_len += d;
        np->reply[np->reply_len] = '\0';
        np->rcv_nxt += (uint32_t)(len - hl);
        if (memchr(np->reply, '\n', np->reply_len) ||
            np->reply_len == sizeof(np->reply) - 1) {
            send_tcp(np, np->iss + 1 + (uint32_t)np->req_len, np->rcv_nxt,
                     F_RST | F_ACK, NULL, 0);
            np->phase = TCP_DONE;
            np->tcp_err = 0;
            pthread_cond_broadcast(&np->cv);
        } else {
            send_tcp(np, np->iss + 1 + (uint32_t)np->req_len, np->rcv_nxt,
                     F_ACK, NULL, 0);
        }
    }
}

static void on_arp(struct netpeer *np, const uint8_t *f, size_t len)
{
    const uint8_t *a = f + 14;
    uint8_t r[42];

    if (len < 42 || get16(a + 6) != 1 || memcmp(a + 24, &np->my_ip, 4) != 0)
        return;
    memset(r, 0, sizeof(r));
    memcpy(r, a + 8, 6);
    memcpy(r + 6, np->my_mac, 6);
    put16(r + 12, 0x0806);
    memcpy(r + 14, a, 6); /* htype, ptype, hlen, plen */
    put16(r + 20, 2);
    memcpy(r + 22, np->my_mac, 6);
    memcpy(r + 28, &np->my_ip, 4);
    memcpy(r + 32, a + 8, 10); /* sender MAC + IP become the target */
    send_frame(np, r, sizeof(r));
}

static void on_frame(struct netpeer *np, unsigned conn, const uint8_t *f,
                     size_t len)
{
    const uint8_t *ip, *l4;
    size_t ihl, tot;

    np->frames++;
    if (len < 14)
        return;
    if (get16(f + 12) == 0x0806) {
        on_arp(np, f, len);
        return;
    }
    if (get16(f + 12) != 0x0800 || len < 34)
        return;
    ip = f + 14;
    ihl = (size_t)(ip[0] & 15) * 4;
    tot = get16(ip + 2);
    if (ihl < 20 || tot < ihl || 14 + tot > len ||
        memcmp(ip + 16, &np->my_ip, 4) != 0)
        return;
    if (!memcmp(ip + 12, &np->guest_ip, 4))
        memcpy(np->guest_mac, f + 6, 6);
    l4 = ip + ihl;
    if (ip[9] == 17 && tot - ihl >= 8 && get16(l4 + 2) == NETPEER_UDP_PORT) {
        char text[32];
        size_t n = tot - ihl - 8;
        unsigned v;

        if (n >= sizeof(text))
            n = sizeof(text) - 1;
        memcpy(text, l4 + 8, n);
        text[n] = '\0';
        if (sscanf(text, "count %u", &v) == 1) {
            if (np->n_udp == np->cap_udp) {
                size_t cap = np->cap_udp ? np->cap_udp * 2 : 1024;
                uint32_t *u = realloc(np->udp, cap * sizeof(*u));
                long long *m = u ? realloc(np->udp_ms, cap * sizeof(*m)) : NULL;
                unsigned *cn =
                    m ? realloc(np->udp_conn, cap * sizeof(*cn)) : NULL;

                if (u)
                    np->udp = u;
                if (m)
                    np->udp_ms = m;
                if (!u || !m || !cn)
                    return;
                np->udp_conn = cn;
                np->cap_udp = cap;
            }
            np->udp_ms[np->n_udp] = netpeer_now_ms(np);
            np->udp_conn[np->n_udp] = conn;
            np->udp[np->n_udp++] = v;
            pthread_cond_broadcast(&np->cv);
        }
    } else if (ip[9] == 6) {
        on_tcp(np, l4, tot - ihl);
    }
}

/* Read what client c has and handle complete frames; -1 on EOF/error. */
static int client_read(struct netpeer *np, struct client *c)
{
    ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
    size_t off = 0;

    if (n <= 0)
        return n < 0 && (errno == EINTR || errno == EAGAIN) ? 0 : -1;
    c->len += (size_t)n;
    while (c->len - off >= 4) {
        uint32_t fl = get32(c->buf + off);

        if (fl > MAX_FRAME)
            return -1;
        if (c->len - off < 4 + fl)
            break;
        on_frame(np, c->conn, c->buf + off + 4, fl);
        off += 4 + fl;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return 0;
}

static void *peer_thread(void *arg)
{
    struct netpeer *np = arg;

    pthread_mutex_lock(&np->mu);
    while (!np->stop) {
        struct pollfd pf[MAX_CLIENTS + 2];
        int idx[MAX_CLIENTS + 2], n = 0, timeout = -1;

        pf[n].fd = np->lfd;
        pf[n].events = POLLIN;
        idx[n++] = -1;
        pf[n].fd = np->wake[0];
        pf[n].events = POLLIN;
        idx[n++] = -2;
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (np->cl[i].fd >= 0) {
                pf[n].fd = np->cl[i].fd;
                pf[n].events = POLLIN;
                idx[n++] = i;
            }
        if (np->phase == TCP_SYN_SENT || np->phase == TCP_ESTABLISHED) {
            long long due = np->last_tx_ms + RETRANS_MS - netpeer_now_ms(np);

            if (due <= 0) {
                tcp_tx(np);
                due = RETRANS_MS;
            }
            timeout = (int)due;
        }
        pthread_mutex_unlock(&np->mu);
        n = poll(pf, (nfds_t)n, timeout);
        pthread_mutex_lock(&np->mu);
        if (n <= 0)
            continue;
        for (int k = 0; k < MAX_CLIENTS + 2 && n > 0; k++) {
            if (!pf[k].revents)
                continue;
            n--;
            if (idx[k] == -2) {
                char b[64];

                if (read(np->wake[0], b, sizeof(b)) < 0)
                    continue;
            } else if (idx[k] == -1) {
                int fd = accept4(np->lfd, NULL, NULL, SOCK_CLOEXEC);
                int i;

                if (fd < 0)
                    continue;
                for (i = 0; i < MAX_CLIENTS && np->cl[i].fd >= 0; i++)
                    ;
                if (i == MAX_CLIENTS) {
                    close(fd);
                    continue;
                }
                {
                    struct timeval tv = {1, 0};

                    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                }
                np->cl[i].fd = fd;
                np->cl[i].len = 0;
                np->cl[i].conn = ++np->connections;
            } else if (client_read(np, &np->cl[idx[k]]) < 0) {
                close(np->cl[idx[k]].fd);
                np->cl[idx[k]].fd = -1;
            }
        }
    }
    pthread_mutex_unlock(&np->mu);
    return NULL;
}

int netpeer_start(const char *path, struct netpeer **ret)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    struct netpeer *np;
    struct in_addr in;

    *ret = NULL;
    if (strlen(path) >= sizeof(a.sun_path))
        return -ENAMETOOLONG;
    np = calloc(1, sizeof(*np));
    if (!np)
        return -ENOMEM;
    clock_gettime(CLOCK_MONOTONIC, &np->t0);
    pthread_mutex_init(&np->mu, NULL);
    pthread_cond_init(&np->cv, NULL);
    for (int i = 0; i < MAX_CLIENTS; i++)
        np->cl[i].fd = -1;
    np->wake[0] = np->wake[1] = -1;
    parse_mac(NETPEER_MAC, np->my_mac);
    parse_mac(NETPEER_GUEST_MAC, np->guest_mac);
    inet_pton(AF_INET, NETPEER_IP, &in);
    np->my_ip = in.s_addr;
    inet_pton(AF_INET, NETPEER_GUEST_IP, &in);
    np->guest_ip = in.s_addr;
    strcpy(a.sun_path, path);
    unlink(path);
    np->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (np->lfd < 0 || bind(np->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(np->lfd, 8) < 0 || pipe2(np->wake, O_CLOEXEC | O_NONBLOCK) < 0 ||
        pthread_create(&np->thread, NULL, peer_thread, np) != 0) {
        int e = -errno;

        netpeer_free(np);
        return e ? e : -EIO;
    }
    np->started = true;
    *ret = np;
    return 0;
}

void netpeer_free(struct netpeer *np)
{
    if (!np)
        return;
    if (np->started) {
        pthread_mutex_lock(&np->mu);
        np->stop = true;
        pthread_mutex_unlock(&np->mu);
        if (write(np->wake[1], "x", 1) < 0)
            perror("netpeer wake");
        pthread_join(np->thread, NULL);
    }
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (np->cl[i].fd >= 0)
            close(np->cl[i].fd);
    if (np->lfd >= 0)
        close(np->lfd);
    if (np->wake[0] >= 0)
        close(np->wake[0]);
    if (np->wake[1] >= 0)
        close(np->wake[1]);
    pthread_mutex_destroy(&np->mu);
    pthread_cond_destroy(&np->cv);
    free(np->udp);
    free(np->udp_ms);
    free(np->udp_conn);
    free(np);
}

size_t netpeer_frames(struct netpeer *np)
{
    size_t n;

    pthread_mutex_lock(&np->mu);
    n = np->frames;
    pthread_mutex_unlock(&np->mu);
    return n;
}

unsigned netpeer_connections(struct netpeer *np)
{
    unsigned n;

    pthread_mutex_lock(&np->mu);
    n = np->connections;
    pthread_mutex_unlock(&np->mu);
    return n;
}

size_t netpeer_udp_values(struct netpeer *np, uint32_t *out, size_t max)
{
    size_t n;

    pthread_mutex_lock(&np->mu);
    n = np->n_udp;
    if (out)
        memcpy(out, np->udp, (n < max ? n : max) * sizeof(*out));
    pthread_mutex_unlock(&np->mu);
    return n;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* pthread_cond_timedwait on CLOCK_MONOTONIC. */
static int cv_wait_until(struct netpeer *np, const struct timespec *dl)
{
    return pthread_cond_clockwait(&np->cv, &np->mu, CLOCK_MONOTONIC, dl);
}

size_t netpeer_udp_get(struct netpeer *np, struct netpeer_udp *out, size_t max)
{
    size_t n;

    pthread_mutex_lock(&np->mu);
    n = np->n_udp;
    for (size_t i = 0; i < n && i < max; i++) {
        out[i].v = np->udp[i];
        out[i].conn = np->udp_conn[i];
        out[i].ms = np->udp_ms[i];
    }
    pthread_mutex_unlock(&np->mu);
    return n;
}

int netpeer_wait_udp_above(struct netpeer *np, uint32_t v, int timeout_ms,
                           uint32_t *got)
{
    struct timespec dl;
    size_t seen = 0;
    int rc = -ETIMEDOUT;

    deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&np->mu);
    for (;;) {
        for (; seen < np->n_udp; seen++)
            if (np->udp[seen] > v) {
                if (got)
                    *got = np->udp[seen];
                rc = 0;
                goto out;
            }
        if (cv_wait_until(np, &dl) == ETIMEDOUT)
            break;
    }
out:
    pthread_mutex_unlock(&np->mu);
    return rc;
}

long long netpeer_udp_first_ms(struct netpeer *np, uint32_t v)
{
    long long r = -1;

    pthread_mutex_lock(&np->mu);
    for (size_t i = 0; i < np->n_udp; i++)
        if (np->udp[i] > v) {
            r = np->udp_ms[i];
            break;
        }
    pthread_mutex_unlock(&np->mu);
    return r;
}

int netpeer_tcp_request(struct netpeer *np, const char *line, char *reply,
                        size_t replysz, int timeout_ms)
{
    struct timespec dl;
    uint32_t r = 0;
    int rc;

    if (strlen(line) >= sizeof(np->req) || replysz == 0)
        return -EINVAL;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint32_t)time(NULL);
    deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&np->mu);
    np->sport = (uint16_t)(40000 + (np->sport + 1 + (r & 0xff)) % 20000);
    np->iss = r;
    np->req_len = strlen(line);
    memcpy(np->req, line, np->req_len);
    np->reply_len = 0;
    np->reply[0] = '\0';
    np->phase = TCP_SYN_SENT;
    np->tcp_err = -ETIMEDOUT;
    tcp_tx(np);
    if (write(np->wake[1], "x", 1) < 0)
        perror("netpeer wake");
    while (np->phase != TCP_DONE)
        if (cv_wait_until(np, &dl) == ETIMEDOUT)
            break;
    rc = np->phase == TCP_DONE ? np->tcp_err : -ETIMEDOUT;
    snprintf(reply, replysz, "%s", np->reply);
    np->phase = TCP_IDLE;
    pthread_mutex_unlock(&np->mu);
    return rc;
}
