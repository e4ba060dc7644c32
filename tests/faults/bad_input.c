/*
 * faults.bad_input: everything a peer or a user can throw at colo, against
 * real colo processes and real QEMU. Each case expects a clear error and
 * the VM (and the last committed checkpoint) intact:
 *   wrong_key       a primary with another key protects to a standby:
 *                   refused, the standby parses nothing (never pairs,
 *                   never launches QEMU), the primary's guest runs on
 *   peer_garbage    random bytes and a fake oversized header to the
 *                   standby's port: connection dropped, the standby still
 *                   pairs with the real primary afterwards
 *   ctl_garbage     garbage, non-object JSON and a line over
 *                   ORCH_CTL_MAX_LINE on the control socket: an error
 *                   answer or a close, the VM runs, status still answers
 *   bad_config      malformed configs: exit 3 with a JSON-path message
 *   bad_stream      truncated / bit-flipped / replayed (stream twice)
 *                   copies of the stream corpus to
 *                   `colo verify-stream`: exit 6 (or 0 where a flip hits
 *                   a don't-care byte), never a crash (exit >= 128)
 *   qemu_killed     QEMU SIGKILLed under a protecting primary: the primary
 *                   exits 5 with a clear error, the standby takes over
 *                   from a committed checkpoint (>= the last one seen)
 */
#include "fproc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <sys/stat.h>

static int n_tried, n_ok;

static void row(const char *name, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void row(const char *name, bool ok, const char *fmt, ...)
{
    char msg[300];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    for (char *c = msg; *c; c++)
        if (*c == '\n')
            *c = ' ';
    n_tried++;
    n_ok += ok;
    printf("%-14s %-5s %s\n", name, ok ? "held" : "FAIL", msg);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static int start_primary(struct fenv *e, struct fproc *p, const char *key)
{
    char *argv[] = {(char *)fproc_colo_exe(),
                    "start",
                    e->cfg,
                    "--state-dir",
                    e->pdir,
                    "--key-file",
                    (char *)key,
                    NULL};

    if (fproc_spawn(p, argv, NULL) < 0)
        return -1;
    return fproc_wait_out(p, "running (QEMU pid", 0, 30000) < 0 ? -1 : 0;
}

static int start_standby(struct fenv *e, struct fproc *s, const char *key,
                         const char *fence)
{
    char *argv[] = {(char *)fproc_colo_exe(),
                    "standby",
                    "--listen",
                    "127.0.0.1:0",
                    "--state-dir",
                    e->sdir,
                    "--key-file",
                    (char *)key,
                    fence ? "--fence-cmd" : NULL,
                    (char *)fence,
                    NULL};
    long off;

    if (fproc_spawn(s, argv, NULL) < 0)
        return -1;
    off = fproc_wait_out(s, "waiting for a primary on 127.0.0.1:", 0, 10000);
    return off < 0 ? -1 : atoi(s->buf + off);
}

/* The guest's counter in ram advances within ms (pumping pump's output). */
static bool guest_moves_within(const char *ram, struct fproc *pump, int ms)
{
    uint32_t a = fproc_counter(ram);
    uint64_t d = fproc_now_ms() + (uint64_t)ms;

    while (fproc_now_ms() < d) {
        fproc_pump(pump, 20);
        if (fproc_counter(ram) > a)
            return true;
    }
    return false;
}

static bool guest_moves(const char *ram, struct fproc *pump)
{
    return guest_moves_within(ram, pump, 10000);
}

static int protect(struct fenv *e, int port, char *out, size_t outsz)
{
    char args[512];

    snprintf(args, sizeof(args),
             "protect jobvm 127.0.0.1:%d --interval 50 --state-dir %s", port,
             e->pdir);
    return fproc_colo(args, out, outsz, 30000);
}

static void case_wrong_key(void)
{
    struct fenv e;
    struct fproc p = {.pid = -1}, s = {.pid = -1};
    char other[160], out[8192];
    int port, rc;
    FILE *f;

    if (fenv_setup(&e, NULL) < 0)
        return row("wrong_key", false, "setup");
    snprintf(other, sizeof(other), "%s/other-key", e.dir);
    f = fopen(other, "w");
    fprintf(f, "a different key, also long enough\n");
    fclose(f);
    chmod(other, 0600); /* colo refuses a key others may read */
    if (start_primary(&e, &p, e.key) < 0 ||
        (port = start_standby(&e, &s, other, NULL)) < 0) {
        row("wrong_key", false, "start failed");
        goto out;
    }
    rc = protect(&e, port, out, sizeof(out));
    fproc_pump(&s, 200);
    {
        bool parsed = strstr(s.buf, "paired") || strstr(s.buf, "launching");
        bool runs = fproc_alive(&p) && guest_moves(e.pram, &p);
        bool sup = fproc_alive(&s);

        row("wrong_key", rc != 0 && !parsed && runs && sup,
            "protect exit %d (%.60s), standby parsed=%d alive=%d, "
            "primary runs=%d",
            rc, strchr(out, ':') ? strchr(out, ':') + 1 : out, parsed, sup,
            runs);
    }
out:
    fproc_free(&p);
    fproc_free(&s);
    fenv_teardown(&e);
}

static int tcp_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Write up to len bytes (peer may close), then wait up to ms for the peer
 * to close; returns true if it closed. */
static bool feed_and_wait_close(int fd, const void *b, size_t len, int ms)
{
    uint64_t d = fproc_now_ms() + (uint64_t)ms;
    char sink[4096];

    (void)!send(fd, b, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (fproc_now_ms() < d) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&pf, 1, (int)(d - fproc_now_ms())) <= 0)
            continue;
        n = recv(fd, sink, sizeof(sink), 0);
        if (n <= 0)
            return true;
    }
    return false;
}

static void case_peer_garbage(void)
{
    struct fenv e;
    struct fproc p = {.pid = -1}, s = {.pid = -1};
    static unsigned char junk[65536];
    char out[8192];
    int port, closed = 0, rc;

    if (fenv_setup(&e, NULL) < 0)
        return row("peer_garbage", false, "setup");
    if (start_primary(&e, &p, e.key) < 0 ||
        (port = start_standby(&e, &s, e.key, NULL)) < 0) {
        row("peer_garbage", false, "start failed");
        goto out;
    }
    for (int round = 0; round < 4; round++) {
        int fd = tcp_connect(port);
        size_t len = sizeof(junk);

        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = (unsigned char)rnd();
        if (round == 1) {
            /* A header-sized prefix claiming a huge body. */
            memset(junk, 0xff, 64);
        } else if (round == 2) {
            len = 7; /* short, then nothing: must time out */
        } else if (round == 3) {
            memset(junk, 0, sizeof(junk));
        }
        if (fd < 0)
            continue;
        /* Round 2 waits out the handshake deadline of the setup phase
         * (CKPT_SETUP_TIMEOUT_MS / 2 = 15 s, lenient for loaded hosts). */
        closed += feed_and_wait_close(fd, junk, len, round == 2 ? 25000 : 8000);
        close(fd);
    }
    rc = protect(&e, port, out, sizeof(out));
    row("peer_garbage",
        closed == 4 && rc == 0 && fproc_alive(&s) && guest_moves(e.pram, &p),
        "4 garbage connections, %d closed by the standby; then a real "
        "protect: exit %d",
        closed, rc);
out:
    fproc_free(&p);
    fproc_free(&s);
    fenv_teardown(&e);
}

static int unix_connect(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (strlen(path) >= sizeof(a.sun_path)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    memcpy(a.sun_path, path, strlen(path) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void case_ctl_garbage(void)
{
    struct fenv e;
    struct fproc p = {.pid = -1};
    char sock[200], out[8192];
    static char big[64 * 1024 + 2];
    const char *lines[] = {"garbage\n",      "[1,2,3]\n",
                           "{\"cmd\": 5}\n", "{\"cmd\": \"nosuch\"}\n",
                           "\"str\"\n",      "{\"cmd\": \"stop\"\n"};
    int closed = 0, tried = 0;

    if (fenv_setup(&e, NULL) < 0)
        return row("ctl_garbage", false, "setup");
    if (start_primary(&e, &p, e.key) < 0) {
        row("ctl_garbage", false, "start failed");
        goto out;
    }
    snprintf(sock, sizeof(sock), "%s/jobvm.sock", e.pdir);
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        int fd = unix_connect(sock);

        tried++;
        if (fd < 0)
            continue;
        closed += feed_and_wait_close(fd, lines[i], strlen(lines[i]), 5000);
        close(fd);
    }
    {
        /* Over the line cap, no newline. */
        int fd = unix_connect(sock);

        memset(big, 'x', sizeof(big) - 1);
        tried++;
        if (fd >= 0) {
            size_t sent = 0;
            uint64_t d = fproc_now_ms() + 5000;

            while (sent < sizeof(big) - 1 && fproc_now_ms() < d) {
                ssize_t n = send(fd, big + sent, sizeof(big) - 1 - sent,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);

                if (n > 0)
                    sent += (size_t)n;
                else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    fproc_pump(&p, 5);
                else
                    break;
            }
            closed += feed_and_wait_close(fd, "", 0, 5000);
            close(fd);
        }
    }
    {
        char args[300];
        int rc;

        snprintf(args, sizeof(args), "status jobvm --json --state-dir %s",
                 e.pdir);
        rc = fproc_colo(args, out, sizeof(out), 5000);
        row("ctl_garbage",
            closed == tried && rc == 0 && fproc_alive(&p) &&
                guest_moves(e.pram, &p),
            "%d bad requests (incl. %d bytes without newline), %d closed; "
            "status exit %d afterwards",
            tried, (int)sizeof(big) - 1, closed, rc);
    }
out:
    fproc_free(&p);
    fenv_teardown(&e);
}

static void case_bad_config(void)
{
    const char *cfgs[] = {
        "",
        "{",
        "{\"name\": 5}",
        "[]",
        "{\"name\": \"x\", \"memory_mb\": -1}",
        "{\"name\": \"x\", \"memory_mb\": 99999999999999999999}",
        "{\"name\": \"x\", \"vcpus\": \"two\"}",
        "{\"name\": \"x\", \"devices\": [{\"type\": 7}]}",
        "\xff\xfe\x00garbage",
        "{\"name\": \"x\", \"name\": \"y\"}",
    };
    struct fenv e;
    int good = 0, n = 0;
    char out[4096], args[512], bad[200] = "";

    if (fenv_setup(&e, NULL) < 0)
        return row("bad_config", false, "setup");
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
        FILE *f = fopen(e.cfg, "w");
        int rc;

        fwrite(cfgs[i], 1, strlen(cfgs[i]), f);
        fclose(f);
        snprintf(args, sizeof(args), "start %s --state-dir %s --insecure",
                 e.cfg, e.pdir);
        rc = fproc_colo(args, out, sizeof(out), 10000);
        n++;
        if (rc == 3 && strstr(out, "colo"))
            good++;
        else if (!bad[0])
            snprintf(bad, sizeof(bad), "; config #%zu: exit %d: %.80s", i, rc,
                     out);
    }
    {
        /* Oversized config: 64 MiB of spaces. */
        FILE *f = fopen(e.cfg, "w");
        int rc;

        for (int i = 0; i < 64 * 1024; i++)
            fprintf(f, "%1023s\n", "");
        fclose(f);
        rc = fproc_colo(args, out, sizeof(out), 10000);
        n++;
        if (rc == 3)
            good++;
        else if (!bad[0])
            snprintf(bad, sizeof(bad), "; 64 MiB config: exit %d: %.80s", rc,
                     out);
    }
    row("bad_config", good == n, "%d/%d malformed configs gave exit 3%s", good,
        n, bad);
    n_tried += n - 1;
    n_ok += good - (good == n);
    fenv_teardown(&e);
}

static void case_bad_stream(void)
{
    char dir[300], path[700], tmp[] = "/tmp/colo-faults-stream-XXXXXX";
    static unsigned char data[1 << 20];
    int tried = 0, good = 0, crashed = 0, fd;
    char bad[200] = "";
    struct dirent *de;
    DIR *d;

    snprintf(dir, sizeof(dir), "%s/fuzz/corpus/stream", COLO_SOURCE_DIR);
    d = opendir(dir);
    fd = mkstemp(tmp);
    if (!d || fd < 0) {
        if (d)
            closedir(d);
        return row("bad_stream", false, "no corpus in %s", dir);
    }
    close(fd);
    while ((de = readdir(d))) {
        ssize_t len;
        int in;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        in = open(path, O_RDONLY | O_CLOEXEC);
        if (in < 0)
            continue;
        len = read(in, data, sizeof(data));
        close(in);
        if (len < 16)
            continue;
        for (int v = 0; v < 5; v++) {
            unsigned char *m = malloc(2 * (size_t)len);
            size_t mlen = (size_t)len;
            char args[600], out[4096];
            FILE *f;
            int rc;

            memcpy(m, data, (size_t)len);
            if (v == 0)
                mlen = (size_t)len / 2; /* truncated mid-way */
            else if (v == 1)
                mlen = (size_t)len - 1; /* last byte missing */
            else if (v == 2)
                for (int k = 0; k < 8; k++) /* header bytes corrupted */
                    m[k % (mlen < 24 ? mlen : 24)] ^= 0xa5;
            else if (v == 4) {
                /* Replayed: the whole stream again after its end. */
                memcpy(m + len, data, (size_t)len);
                mlen = 2 * (size_t)len;
            } else
                for (int k = 0; k < 16; k++) /* random flips */
                    m[rnd() % mlen] ^= (unsigned char)(1u << (rnd() % 8));
            f = fopen(tmp, "w");
            fwrite(m, 1, mlen, f);
            fclose(f);
            free(m);
            snprintf(args, sizeof(args), "verify-stream --quiet %s", tmp);
            rc = fproc_colo(args, out, sizeof(out), 10000);
            tried++;
            if (rc >= 128 || rc < 0)
                crashed++;
            /* Truncation/header corruption must be detected; random flips
             * may land in payload the verifier cannot judge. */
            if (rc == 6 || (v == 3 && rc == 0))
                good++;
            else if (!bad[0])
                snprintf(bad, sizeof(bad), "; %.40s variant %d: exit %d %.60s",
                         de->d_name, v, rc, out);
        }
    }
    closedir(d);
    unlink(tmp);
    row("bad_stream", tried > 0 && good == tried && !crashed,
        "%d damaged streams: %d rejected as corrupt (exit 6), %d crashes%s",
        tried, good, crashed, bad);
    n_tried += tried - 1;
    n_ok += good - (good == tried && !crashed);
}

static void case_qemu_killed(void)
{
    struct fenv e;
    struct fproc p = {.pid = -1}, s = {.pid = -1};
    char fence[160], args[300], out[8192];
    long long qpid, committed, took = -1;
    int port, rc = -1, prc;
    bool ok, moves;

    if (fenv_setup(&e, NULL) < 0)
        return row("qemu_killed", false, "setup");
    if (start_primary(&e, &p, e.key) < 0) {
        row("qemu_killed", false, "start failed");
        goto out;
    }
    /* A running guest loses its QEMU: not one still in its firmware (under
     * load, TCG takes seconds to reach the guest's loop). */
    if (!guest_moves_within(e.pram, &p, 30000)) {
        row("qemu_killed", false, "the guest never ran on the primary");
        goto out;
    }
    snprintf(fence, sizeof(fence),
             "! grep -qsE '^State:[[:space:]]+[RSDTt]' /proc/%d/status",
             (int)p.pid);
    if ((port = start_standby(&e, &s, e.key, fence)) < 0 ||
        (rc = protect(&e, port, out, sizeof(out))) != 0) {
        row("qemu_killed", false, "protect failed %d: %s", rc, out);
        goto out;
    }
    snprintf(args, sizeof(args), "status jobvm --json --state-dir %s", e.pdir);
    fproc_colo(args, out, sizeof(out), 5000);
    qpid = fproc_json_int(out, "qemu_pid", -1);
    committed = fproc_json_int(out, "last_committed", -1);
    if (qpid <= 0) {
        row("qemu_killed", false, "no qemu_pid in status: %s", out);
        goto out;
    }
    kill((pid_t)qpid, SIGKILL);
    prc = fproc_wait_exit(&p, 15000);
    /* The primary closes the link before it exits: a liveness fence may
     * run while it still lives and refuse (the safe answer). Then the
     * operator's explicit failover must work. */
    if (fproc_wait_out(&s, "now runs here", 0, 5000) < 0 &&
        strstr(s.buf, "NOT taking over")) {
        snprintf(args, sizeof(args), "failover jobvm --state-dir %s", e.sdir);
        fproc_colo(args, out, sizeof(out), 10000);
    }
    if (fproc_wait_out(&s, "now runs here", 0, 20000) >= 0) {
        snprintf(args, sizeof(args), "status jobvm --json --state-dir %s",
                 e.sdir);
        fproc_colo(args, out, sizeof(out), 5000);
        took = fproc_json_int(out, "took_over_from", -1);
    }
    moves = took >= 0 && guest_moves_within(e.sram, &s, 20000);
    ok = prc == 5 && strstr(p.buf, "QEMU") && took >= committed && moves;
    row("qemu_killed", ok,
        "primary exit %d (want 5), standby took over from %lld (last "
        "committed seen %lld), guest runs there: %d",
        prc, took, committed, moves);
    if (!ok) {
        fprintf(stderr,
                "primary:\n%s\nstandby:\n%s\nstatus: %s\nguest counter "
                "on the standby: %u\n",
                p.buf, s.buf, out, fproc_counter(e.sram));
        snprintf(args, sizeof(args), "tail -c 2000 %s/jobvm/serial.log >&2",
                 e.sdir);
        if (system(args) != 0)
            fprintf(stderr, "(no serial log)\n");
    }
out:
    fproc_free(&p);
    fproc_free(&s);
    fenv_teardown(&e);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    fproc_init();
    if (access("/usr/bin/qemu-system-x86_64", X_OK) != 0) {
        printf("SKIP: qemu-system-x86_64 not installed\n");
        return 77; /* SKIP_RETURN_CODE: ctest counts it skipped */
    }
    printf("%-14s %-5s %s\n", "bad input", "held", "what happened");
    if (!getenv("COLO_BAD_ONLY") || !strcmp(getenv("COLO_BAD_ONLY"), "config"))
        case_bad_config();
    if (!getenv("COLO_BAD_ONLY") || !strcmp(getenv("COLO_BAD_ONLY"), "stream"))
        case_bad_stream();
    if (!getenv("COLO_BAD_ONLY") || !strcmp(getenv("COLO_BAD_ONLY"), "ctl"))
        case_ctl_garbage();
    if (!getenv("COLO_BAD_ONLY") || !strcmp(getenv("COLO_BAD_ONLY"), "key"))
        case_wrong_key();
    if (!getenv("COLO_BAD_ONLY") || !strcmp(getenv("COLO_BAD_ONLY"), "peer"))
        case_peer_garbage();
    if (!getenv("COLO_BAD_ONLY") || !strcmp(getenv("COLO_BAD_ONLY"), "qemu"))
        case_qemu_killed();
    printf("bad inputs: tried %d, handled %d\n", n_tried, n_ok);
    {
        char line[120];

        snprintf(line, sizeof(line), "bad inputs: tried %d handled %d", n_tried,
                 n_ok);
        fproc_summary("bad inputs:", line);
    }
    return n_tried == n_ok ? 0 : 1;
}
