/*
 * bench-migrate: live migration of the test guest (RAM in a shared file,
 * rewritten continuously with non-zero data: dirty=<most of RAM> at a fixed
 * rate) by colo (colo start + colo receive + colo migrate over 127.0.0.1)
 * versus by QEMU's own `migrate` over loopback TCP, in the same run. The
 * QEMU side runs two QEMUs with the argv shape colo uses (shared
 * memory-backend-file RAM, -nodefaults -vga none, KVM when /dev/kvm
 * opens), max-bandwidth lifted and downtime-limit equal to colo's
 * --downtime. Each side runs N times (alternating); medians are reported.
 * Both sides start migrating only after the guest finished one full pass
 * over its dirty area (so no RAM page is still zero).
 *
 * Output: a CSV block (tool,run,total_ms,downtime_ms,bytes) and, as the
 * last line, {"bench":"migrate",...,"ratio":colo_total/qemu_total,...}.
 */
#include "guest_abi.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNS 20

struct proc {
    pid_t pid;
    int out; /* stdout+stderr of the child, -1 if not captured */
    char buf[65536];
    size_t len;
};

struct opts {
    unsigned ram_mb, dirty_mb, rate, runs, downtime_ms, timeout_s;
    unsigned peer_timeout_ms; /* colo --timeout; 0: colo's default */
    const char *colo, *kernel, *qemu;
    bool kvm;
};

struct result {
    double total_ms, downtime_ms;
    long long bytes;
    bool ok;
};

static char base_dir[256];
static struct proc *live[8];

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void track(struct proc *p, bool on)
{
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++) {
        if (on && !live[i]) {
            live[i] = p;
            return;
        }
        if (!on && live[i] == p)
            live[i] = NULL;
    }
}

/* Start argv; keep_fd (>= 0) is inherited by the child. */
static int spawn(struct proc *p, char *const argv[], int keep_fd)
{
    int fds[2];

    memset(p, 0, sizeof(*p));
    p->out = -1;
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    p->pid = fork();
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        if (keep_fd >= 0)
            fcntl(keep_fd, F_SETFD, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    if (p->pid < 0) {
        close(fds[0]);
        return -errno;
    }
    p->out = fds[0];
    track(p, true);
    return 0;
}

/* Read output until it contains s (after from); offset past the match or
 * -1 on deadline / EOF. */
static long wait_out(struct proc *p, const char *s, size_t from, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        struct pollfd pf = {.fd = p->out, .events = POLLIN};
        uint64_t now;
        char *hit;
        ssize_t n;

        p->buf[p->len] = '\0';
        hit = strstr(p->buf + from, s);
        if (hit)
            return (long)(hit - p->buf) + (long)strlen(s);
        now = now_ms();
        if (now >= deadline)
            return -1;
        if (p->len >= sizeof(p->buf) - 1) {
            /* Keep the last half; the caller's offsets become stale. */
            memmove(p->buf, p->buf + sizeof(p->buf) / 2,
                    p->len - sizeof(p->buf) / 2);
            p->len -= sizeof(p->buf) / 2;
            from = 0;
        }
        if (poll(&pf, 1, (int)(deadline - now)) <= 0)
            continue;
        n = read(p->out, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
        if (n <= 0)
            return -1;
        p->len += (size_t)n;
    }
}

static int wait_exit(struct proc *p, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int st;

    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);

        if (r == p->pid) {
            p->pid = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (now_ms() >= deadline)
            return -1;
        wait_out(p, "\x01never", p->len, 20);
    }
}

static void reap(struct proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
    }
    p->pid = -1;
    if (p->out >= 0)
        close(p->out);
    p->out = -1;
    track(p, false);
}

static void rm_rf(const char *dir)
{
    char cmd[512];

    if (!dir[0])
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench-migrate: could not remove %s\n", dir);
}

static void cleanup(void)
{
    for (size_t i = 0; i < sizeof(live) / sizeof(live[0]); i++)
        if (live[i])
            reap(live[i]);
    rm_rf(base_dir);
    base_dir[0] = '\0';
}

static void on_signal(int sig)
{
    (void)sig;
    exit(130); /* runs cleanup() through atexit */
}

static uint32_t guest_u32(const char *ram, uint32_t off)
{
    uint32_t v = 0;
    int fd = open(ram, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    if (pread(fd, &v, 4, TGUEST_STATUS_GPA + off) != 4)
        v = 0;
    close(fd);
    return v;
}

/* Wait (bounded) until the guest completed a full pass over its dirty
 * area: every page it will touch is then non-zero. */
static bool wait_first_pass(struct proc *p, const char *ram, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    while (now_ms() < deadline) {
        if (guest_u32(ram, TGUEST_MAGIC_OFF) == TGUEST_MAGIC &&
            guest_u32(ram, TGUEST_PASSES_OFF) >= 1)
            return true;
        /* Polling shared memory (no event); drains the child's output. */
        wait_out(p, "\x01never", p->len, 50);
    }
    return false;
}

static bool counter_moves(struct proc *p, const char *ram, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    uint32_t c0 = guest_u32(ram, TGUEST_COUNTER_OFF);

    while (now_ms() < deadline) {
        if (guest_u32(ram, TGUEST_COUNTER_OFF) != c0)
            return true;
        wait_out(p, "\x01never", p->len, 20);
    }
    return false;
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (!f)
        return -errno;
    fputs(text, f);
    return fclose(f) == 0 ? 0 : -errno;
}

/* ---- colo side ---------------------------------------------------------- */

static struct result run_colo(const struct opts *o, const char *dir)
{
    struct result r = {0};
    struct proc p, s, m;
    char cfg[320], key[320], pdir[320], sdir[320], pram[360], sram[360];
    char text[1024], target[64], downtime[16], peer_to[16];
    json_t *fin = NULL;
    long off;
    int port, rc;

    snprintf(peer_to, sizeof(peer_to), "%u", o->peer_timeout_ms);
    snprintf(cfg, sizeof(cfg), "%s/vm.json", dir);
    snprintf(key, sizeof(key), "%s/key", dir);
    snprintf(pdir, sizeof(pdir), "%s/p", dir);
    snprintf(sdir, sizeof(sdir), "%s/s", dir);
    snprintf(pram, sizeof(pram), "%s/benchvm/ram", pdir);
    snprintf(sram, sizeof(sram), "%s/benchvm/ram", sdir);
    snprintf(text, sizeof(text),
             "{\"name\": \"benchvm\", \"memory_mb\": %u, \"vcpus\": 1,\n"
             " \"kernel\": \"%s\",\n \"cmdline\": \"dirty=%u rate=%u\"}\n",
             o->ram_mb, o->kernel, o->dirty_mb, o->rate);
    if (write_file(cfg, text) < 0 ||
        write_file(key, "a shared bench key of enough length\n") < 0 ||
        chmod(key, 0600) < 0)
        return r;
    memset(&p, 0, sizeof(p));
    memset(&s, 0, sizeof(s));
    memset(&m, 0, sizeof(m));
    p.out = s.out = m.out = -1;
    {
        char *av[] = {(char *)o->colo, "start", cfg,  "--state-dir", pdir,
                      "--key-file",    key,     NULL, NULL,          NULL};

        if (o->peer_timeout_ms) {
            av[7] = "--timeout";
            av[8] = peer_to;
        }

        if (spawn(&p, av, -1) < 0)
            goto out;
    }
    if (wait_out(&p, "running (QEMU pid", 0, 60000) < 0) {
        fprintf(stderr, "colo start failed:\n%s\n", p.buf);
        goto out;
    }
    if (!wait_first_pass(&p, pram, (int)o->timeout_s * 1000)) {
        fprintf(stderr, "colo: guest did not finish a dirty pass\n");
        goto out;
    }
    {
        char *av[] = {(char *)o->colo,
                      "receive",
                      "--listen",
                      "127.0.0.1:0",
                      "--state-dir",
                      sdir,
                      "--key-file",
                      key,
                      NULL,
                      NULL,
                      NULL};

        if (o->peer_timeout_ms) {
            av[8] = "--timeout";
            av[9] = peer_to;
        }

        if (spawn(&s, av, -1) < 0)
            goto out;
    }
    off = wait_out(&s, "waiting for a primary on 127.0.0.1:", 0, 30000);
    if (off < 0) {
        fprintf(stderr, "colo receive did not listen:\n%s\n", s.buf);
        goto out;
    }
    port = atoi(s.buf + off);
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    snprintf(downtime, sizeof(downtime), "%u", o->downtime_ms);
    {
        char *av[] = {(char *)o->colo, "migrate", "benchvm",    target,
                      "--state-dir",   pdir,      "--downtime", downtime,
                      "--json",        NULL};

        if (spawn(&m, av, -1) < 0)
            goto out;
    }
    rc = wait_exit(&m, (int)o->timeout_s * 1000);
    if (rc != 0) {
        wait_out(&p, "\x01never", p.len, 200);
        wait_out(&s, "\x01never", s.len, 200);
        fprintf(stderr,
                "colo migrate failed (%d):\n%s\n--- colo start:\n%s\n"
                "--- colo receive:\n%s\n",
                rc, m.buf, p.buf, s.buf);
        goto out;
    }
    /* The last JSON line carries the totals. */
    m.buf[m.len] = '\0';
    for (char *line = strtok(m.buf, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *j = json_loads(line, 0, NULL);

        if (j && json_object_get(j, "total_us")) {
            json_decref(fin);
            fin = j;
        } else {
            json_decref(j);
        }
    }
    if (!fin) {
        fprintf(stderr, "colo migrate: no totals in its output\n");
        goto out;
    }
    r.total_ms =
        (double)json_integer_value(json_object_get(fin, "total_us")) / 1000.0;
    r.downtime_ms =
        (double)json_integer_value(json_object_get(fin, "downtime_us")) /
        1000.0;
    r.bytes = json_integer_value(json_object_get(fin, "bytes_sent"));
    /* The guest must run on the destination. */
    if (wait_out(&s, "now runs here", 0, 30000) < 0 ||
        !counter_moves(&s, sram, 10000)) {
        fprintf(stderr, "colo: guest does not run on the destination\n%s\n",
                s.buf);
        goto out;
    }
    r.ok = true;
out:
    json_decref(fin);
    reap(&m);
    reap(&p);
    reap(&s);
    return r;
}

/* ---- QEMU side ---------------------------------------------------------- */

struct qmp {
    int fd;
    char buf[65536];
    size_t len;
};

/* Next reply ("return" or "error"; events are skipped), bounded. */
static json_t *qmp_reply(struct qmp *q, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        char *nl;

        while ((nl = memchr(q->buf, '\n', q->len))) {
            size_t n = (size_t)(nl - q->buf) + 1;
            json_t *j = json_loadb(q->buf, n, 0, NULL);

            memmove(q->buf, q->buf + n, q->len - n);
            q->len -= n;
            if (j && (json_object_get(j, "return") ||
                      json_object_get(j, "error") || json_object_get(j, "QMP")))
                return j;
            json_decref(j);
        }
        uint64_t now = now_ms();
        struct pollfd pf = {.fd = q->fd, .events = POLLIN};
        ssize_t n;

        if (now >= deadline || q->len >= sizeof(q->buf))
            return NULL;
        if (poll(&pf, 1, (int)(deadline - now)) <= 0)
            continue;
        n = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);
        if (n <= 0)
            return NULL;
        q->len += (size_t)n;
    }
}

/* Execute a command; returns its "return" (owned) or NULL on error. */
static json_t *qmp_cmd(struct qmp *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static json_t *qmp_cmd(struct qmp *q, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    json_t *j, *ret;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 1)
        return NULL;
    line[n++] = '\n';
    if (write(q->fd, line, (size_t)n) != n)
        return NULL;
    j = qmp_reply(q, 10000);
    if (!j)
        return NULL;
    ret = json_object_get(j, "return");
    if (!ret) {
        char *s = json_dumps(j, JSON_COMPACT);

        fprintf(stderr, "qmp: %s -> %s\n", line, s ? s : "?");
        free(s);
        json_decref(j);
        return NULL;
    }
    json_incref(ret);
    json_decref(j);
    return ret;
}

static bool qmp_ok(struct qmp *q, const char *cmd)
{
    json_t *r = qmp_cmd(q, "%s", cmd);

    json_decref(r);
    return r != NULL;
}

/* Start a QEMU like colo starts it, its QMP monitor on a socket we bound;
 * connects q and negotiates capabilities. */
static int qemu_start(const struct opts *o, const char *dir, const char *name,
                      bool incoming, struct proc *p, struct qmp *q)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char ram[320], mem[400], msize[32], chardev[96], append[64];
    int lfd = -1, rc = -1;
    json_t *g;

    q->fd = -1;
    q->len = 0;
    snprintf(ram, sizeof(ram), "%s/%s.ram", dir, name);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.qmp", dir, name);
    snprintf(mem, sizeof(mem),
             "memory-backend-file,id=ram,size=%uM,mem-path=%s,share=on",
             o->ram_mb, ram);
    snprintf(msize, sizeof(msize), "%uM", o->ram_mb);
    snprintf(append, sizeof(append), "dirty=%u rate=%u", o->dirty_mb, o->rate);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(lfd, 1) < 0)
        goto out;
    snprintf(chardev, sizeof(chardev), "socket,id=qmp,fd=%d,server=on,wait=off",
             lfd);
    {
        char *av[40] = {(char *)o->qemu,
                        "-name",
                        (char *)name,
                        "-nodefaults",
                        "-no-user-config",
                        "-vga",
                        "none",
                        "-display",
                        "none",
                        "-machine",
                        "pc,memory-backend=ram",
                        "-object",
                        mem,
                        "-m",
                        msize,
                        "-smp",
                        "1",
                        "-accel",
                        o->kvm ? "kvm" : "tcg",
                        "-kernel",
                        (char *)o->kernel,
                        "-append",
                        append,
                        "-chardev",
                        chardev,
                        "-mon",
                        "chardev=qmp,mode=control",
                        NULL};
        int n = 27;

        if (incoming) {
            av[n++] = "-incoming";
            av[n++] = "defer";
        }
        av[n] = NULL;
        if (spawn(p, av, lfd) < 0)
            goto out;
    }
    q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (q->fd < 0 || connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto out;
    g = qmp_reply(q, 30000); /* the greeting */
    if (!g) {
        wait_out(p, "\x01never", 0, 200);
        fprintf(stderr, "qemu %s: no QMP greeting:\n%s\n", name, p->buf);
        goto out;
    }
    json_decref(g);
    if (!qmp_ok(q, "{\"execute\":\"qmp_capabilities\"}"))
        goto out;
    rc = 0;
out:
    if (lfd >= 0)
        close(lfd);
    return rc;
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static struct result run_qemu(const struct opts *o, const char *dir)
{
    struct result r = {0};
    struct proc src, dst;
    struct qmp qs = {.fd = -1}, qd = {.fd = -1};
    char sram[320], dram[320];
    json_t *st = NULL;
    uint64_t deadline;
    int port;

    memset(&src, 0, sizeof(src));
    memset(&dst, 0, sizeof(dst));
    src.out = dst.out = -1;
    snprintf(sram, sizeof(sram), "%s/src.ram", dir);
    snprintf(dram, sizeof(dram), "%s/dst.ram", dir);
    if (qemu_start(o, dir, "src", false, &src, &qs) < 0)
        goto out;
    if (!wait_first_pass(&src, sram, (int)o->timeout_s * 1000)) {
        fprintf(stderr, "qemu: guest did not finish a dirty pass\n");
        goto out;
    }
    if (qemu_start(o, dir, "dst", true, &dst, &qd) < 0)
        goto out;
    port = free_port();
    if (port < 0)
        goto out;
    st = qmp_cmd(&qd,
                 "{\"execute\":\"migrate-incoming\",\"arguments\":"
                 "{\"uri\":\"tcp:127.0.0.1:%d\"}}",
                 port);
    if (!st)
        goto out;
    json_decref(st);
    st = qmp_cmd(&qs,
                 "{\"execute\":\"migrate-set-parameters\",\"arguments\":"
                 "{\"max-bandwidth\":100000000000,\"downtime-limit\":%u}}",
                 o->downtime_ms);
    if (!st)
        goto out;
    json_decref(st);
    st = qmp_cmd(&qs,
                 "{\"execute\":\"migrate\",\"arguments\":"
                 "{\"uri\":\"tcp:127.0.0.1:%d\"}}",
                 port);
    if (!st)
        goto out;
    json_decref(st);
    st = NULL;
    deadline = now_ms() + (uint64_t)o->timeout_s * 1000;
    for (;;) {
        const char *status;

        json_decref(st);
        st = qmp_cmd(&qs, "{\"execute\":\"query-migrate\"}");
        status = json_string_value(json_object_get(st, "status"));
        if (!status)
            goto out;
        if (!strcmp(status, "completed"))
            break;
        if (!strcmp(status, "failed") || !strcmp(status, "cancelled")) {
            char *s = json_dumps(st, JSON_COMPACT);

            fprintf(stderr, "qemu migrate %s: %s\n", status, s ? s : "");
            free(s);
            goto out;
        }
        if (now_ms() >= deadline) {
            char *s = json_dumps(st, JSON_COMPACT);

            fprintf(stderr, "qemu migrate: no completion in %u s: %s\n",
                    o->timeout_s, s ? s : "");
            free(s);
            qmp_ok(&qs, "{\"execute\":\"migrate_cancel\"}");
            goto out;
        }
        wait_out(&src, "\x01never", src.len, 20); /* poll interval */
    }
    if (!json_is_integer(json_object_get(st, "total-time")) ||
        !json_is_integer(json_object_get(st, "downtime"))) {
        char *s = json_dumps(st, JSON_COMPACT);

        fprintf(stderr, "qemu migrate: completed without times: %s\n",
                s ? s : "");
        free(s);
        goto out;
    }
    r.total_ms = (double)json_integer_value(json_object_get(st, "total-time"));
    r.downtime_ms = (double)json_integer_value(json_object_get(st, "downtime"));
    r.bytes = json_integer_value(
        json_object_get(json_object_get(st, "ram"), "transferred"));
    /* The guest must run on the destination (it starts by itself once the
     * incoming migration completes: autostart). */
    if (!counter_moves(&dst, dram, 10000)) {
        fprintf(stderr, "qemu: guest does not run on the destination\n");
        goto out;
    }
    r.ok = true;
out:
    json_decref(st);
    if (qs.fd >= 0)
        close(qs.fd);
    if (qd.fd >= 0)
        close(qd.fd);
    reap(&src);
    reap(&dst);
    return r;
}

/* ---- main --------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(const struct result *r, unsigned n, bool downtime)
{
    double v[MAX_RUNS];
    unsigned k = 0;

    for (unsigned i = 0; i < n; i++)
        if (r[i].ok)
            v[k++] = downtime ? r[i].downtime_ms : r[i].total_ms;
    if (!k)
        return -1;
    qsort(v, k, sizeof(v[0]), cmp_double);
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

static void usage(void)
{
    printf("Usage: bench-migrate [--ram-mb N (1024)] [--dirty-mb N (RAM-8)] "
           "[--rate MiB/s (128)]\n"
           "       [--runs N (3)] [--downtime MS (300)] [--timeout S (120)]\n"
           "       [--colo PATH] [--kernel PATH] [--qemu PATH] [--tcg]\n"
           "       [--colo-timeout MS (colo start/receive --timeout; "
           "default: colo's)]\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"ram-mb", required_argument, NULL, 'm'},
        {"dirty-mb", required_argument, NULL, 'd'},
        {"rate", required_argument, NULL, 'r'},
        {"runs", required_argument, NULL, 'n'},
        {"downtime", required_argument, NULL, 't'},
        {"timeout", required_argument, NULL, 'T'},
        {"colo", required_argument, NULL, 'c'},
        {"kernel", required_argument, NULL, 'k'},
        {"qemu", required_argument, NULL, 'q'},
        {"tcg", no_argument, NULL, 'g'},
        {"colo-timeout", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct opts o = {.ram_mb = 1024,
                     .rate = 128,
                     .runs = 3,
                     .downtime_ms = 300,
                     .timeout_s = 120,
                     .colo = COLO_EXE,
                     .kernel = COLO_TGUEST_ELF,
                     .qemu = "/usr/bin/qemu-system-x86_64"};
    struct result rc[MAX_RUNS], rq[MAX_RUNS];
    bool tcg = false;
    const char *tmp;
    double ct, qt, cd, qd;
    int c, fails = 0, kfd;

    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            o.ram_mb = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            o.dirty_mb = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            o.rate = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'n':
            o.runs = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 't':
            o.downtime_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'T':
            o.timeout_s = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'c':
            o.colo = optarg;
            break;
        case 'k':
            o.kernel = optarg;
            break;
        case 'q':
            o.qemu = optarg;
            break;
        case 'P':
            o.peer_timeout_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'g':
            tcg = true;
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (o.ram_mb < 16 || o.ram_mb > 65536 || o.runs < 1 || o.runs > MAX_RUNS ||
        o.rate < 1 || o.timeout_s < 5) {
        usage();
        return 2;
    }
    /* The dirty area starts at TGUEST_DIRTY_GPA (4 MiB); leave a margin. */
    if (!o.dirty_mb || o.dirty_mb > o.ram_mb - 8)
        o.dirty_mb = o.ram_mb - 8;
    kfd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    o.kvm = kfd >= 0 && !tcg;
    if (kfd >= 0)
        close(kfd);
    if (access(o.qemu, X_OK) != 0 || access(o.colo, X_OK) != 0 ||
        access(o.kernel, R_OK) != 0) {
        fprintf(stderr, "bench-migrate: missing %s, %s or %s\n", o.qemu, o.colo,
                o.kernel);
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* RAM files on tmpfs when there is one, the same place for both. */
    tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(base_dir, sizeof(base_dir), "%s/colo-bench-mig-XXXXXX", tmp);
    if (!mkdtemp(base_dir)) {
        perror("mkdtemp");
        return 1;
    }
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    printf("# bench-migrate: %u MiB guest, dirty=%u MiB at %u MiB/s, "
           "downtime target %u ms, %s, %u runs each\n",
           o.ram_mb, o.dirty_mb, o.rate, o.downtime_ms, o.kvm ? "kvm" : "tcg",
           o.runs);
    for (unsigned i = 0; i < o.runs; i++) {
        char d[320];

        snprintf(d, sizeof(d), "%s/colo%u", base_dir, i);
        mkdir(d, 0700);
        rc[i] = run_colo(&o, d);
        rm_rf(d);
        printf("# colo run %u: %s total %.1f ms downtime %.1f ms\n", i,
               rc[i].ok ? "ok" : "FAILED", rc[i].total_ms, rc[i].downtime_ms);
        snprintf(d, sizeof(d), "%s/qemu%u", base_dir, i);
        mkdir(d, 0700);
        rq[i] = run_qemu(&o, d);
        rm_rf(d);
        printf("# qemu run %u: %s total %.1f ms downtime %.1f ms\n", i,
               rq[i].ok ? "ok" : "FAILED", rq[i].total_ms, rq[i].downtime_ms);
        fails += !rc[i].ok + !rq[i].ok;
    }
    printf("tool,run,total_ms,downtime_ms,bytes\n");
    for (unsigned i = 0; i < o.runs; i++)
        if (rc[i].ok)
            printf("colo,%u,%.1f,%.1f,%lld\n", i, rc[i].total_ms,
                   rc[i].downtime_ms, rc[i].bytes);
    for (unsigned i = 0; i < o.runs; i++)
        if (rq[i].ok)
            printf("qemu,%u,%.1f,%.1f,%lld\n", i, rq[i].total_ms,
                   rq[i].downtime_ms, rq[i].bytes);
    ct = median(rc, o.runs, false);
    qt = median(rq, o.runs, false);
    cd = median(rc, o.runs, true);
    qd = median(rq, o.runs, true);
    printf(
        "{\"bench\":\"migrate\",\"ram_mb\":%u,\"dirty_mb\":%u,"
        "\"dirty_rate_mbs\":%u,\"downtime_target_ms\":%u,\"accel\":\"%s\","
        "\"runs\":%u,\"failed_runs\":%d,\"colo_total_ms\":%.1f,"
        "\"qemu_total_ms\":%.1f,\"colo_downtime_ms\":%.1f,"
        "\"qemu_downtime_ms\":%.1f,\"ratio\":%.3f,\"ratio_downtime\":%.3f}\n",
        o.ram_mb, o.dirty_mb, o.rate, o.downtime_ms, o.kvm ? "kvm" : "tcg",
        o.runs, fails, ct, qt, cd, qd, ct > 0 && qt > 0 ? ct / qt : -1.0,
        cd > 0 && qd > 0 ? cd / qd : -1.0);
    return fails ? 1 : 0;
}
