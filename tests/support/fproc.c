#include "fproc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "guest_abi.h"

extern char **environ;

uint64_t fproc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *fproc_colo_exe(void)
{
    return COLO_EXE;
}

void fproc_init(void)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
}

int fproc_spawn(struct fproc *p, char *const argv[], char *const envp_extra[])
{
    int fds[2];

    memset(p, 0, sizeof(*p));
    p->pid = -1;
    p->out = -1;
    p->status = -1;
    p->buf = calloc(1, FPROC_BUF);
    if (!p->buf || pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    p->pid = fork();
    if (p->pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        for (int i = 0; envp_extra && envp_extra[i]; i++)
            putenv(envp_extra[i]);
        execve(argv[0], argv, environ);
        _exit(127);
    }
    close(fds[1]);
    p->out = fds[0];
    fcntl(p->out, F_SETFL, O_NONBLOCK);
    return 0;
}

static void pump_once(struct fproc *p, int ms)
{
    struct pollfd pf = {.fd = p->out, .events = POLLIN};
    ssize_t n;

    if (p->out < 0) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

        nanosleep(&ts, NULL); /* nothing to wait on: a pure clock tick */
        return;
    }
    if (poll(&pf, 1, ms) <= 0)
        return;
    if (p->len >= FPROC_BUF - 1) {
        /* Keep the last half: callers look for recent lines. */
        memmove(p->buf, p->buf + FPROC_BUF / 2, p->len - FPROC_BUF / 2);
        p->len -= FPROC_BUF / 2;
    }
    n = read(p->out, p->buf + p->len, FPROC_BUF - 1 - p->len);
    if (n > 0) {
        p->len += (size_t)n;
        p->buf[p->len] = '\0';
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        close(p->out);
        p->out = -1;
    }
}

long fproc_wait_out(struct fproc *p, const char *s, size_t from, int timeout_ms)
{
    uint64_t deadline = fproc_now_ms() + (uint64_t)timeout_ms;

    for (;;) {
        uint64_t now;
        char *hit;

        p->buf[p->len] = '\0';
        if (from <= p->len && (hit = strstr(p->buf + from, s)))
            return (long)(hit - p->buf) + (long)strlen(s);
        now = fproc_now_ms();
        if (now >= deadline || p->out < 0)
            return -1;
        pump_once(p, (int)(deadline - now));
    }
}

void fproc_pump(struct fproc *p, int ms)
{
    uint64_t deadline = fproc_now_ms() + (uint64_t)ms;
    uint64_t now;

    pump_once(p, ms);
    while ((now = fproc_now_ms()) < deadline)
        pump_once(p, (int)(deadline - now));
}

bool fproc_alive(struct fproc *p)
{
    int st;

    if (p->pid <= 0)
        return false;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        p->pid = -1;
        return false;
    }
    return true;
}

int fproc_wait_exit(struct fproc *p, int timeout_ms)
{
    uint64_t deadline = fproc_now_ms() + (uint64_t)timeout_ms;

    while (fproc_alive(p)) {
        if (fproc_now_ms() >= deadline)
            return -1;
        pump_once(p, 20);
    }
    /* Collect what is left in the pipe. */
    for (int i = 0; i < 64 && p->out >= 0; i++)
        pump_once(p, 0);
    return p->status;
}

void fproc_reap(struct fproc *p)
{
    if (p->pid > 0) {
        int st;

        kill(p->pid, SIGKILL);
        if (waitpid(p->pid, &st, 0) == p->pid)
            p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        p->pid = -1;
    }
    if (p->out >= 0)
        close(p->out);
    p->out = -1;
}

void fproc_free(struct fproc *p)
{
    fproc_reap(p);
    free(p->buf);
    p->buf = NULL;
}

int fproc_colo(const char *args, char *out, size_t outsz, int timeout_ms)
{
    char *argv[] = {"/bin/sh", "-c", NULL, NULL};
    char cmd[2048];
    struct fproc p;
    int rc;

    snprintf(cmd, sizeof(cmd), "exec %s %s", COLO_EXE, args);
    argv[2] = cmd;
    if (fproc_spawn(&p, argv, NULL) < 0) {
        fproc_free(&p);
        return -1;
    }
    rc = fproc_wait_exit(&p, timeout_ms);
    if (out && outsz) {
        size_t n = p.len < outsz - 1 ? p.len : outsz - 1;

        memcpy(out, p.buf, n);
        out[n] = '\0';
    }
    fproc_free(&p);
    return rc;
}

uint32_t fproc_counter(const char *ram_path)
{
    uint32_t v = 0;
    int fd = open(ram_path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    if (pread(fd, &v, 4, TGUEST_STATUS_GPA + TGUEST_COUNTER_OFF) != 4)
        v = 0;
    close(fd);
    return v;
}

long long fproc_json_int(const char *text, const char *key, long long def)
{
    char pat[80];
    const char *hit;

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    hit = text ? strstr(text, pat) : NULL;
    if (!hit)
        return def;
    hit += strlen(pat);
    while (*hit == ' ')
        hit++;
    return strtoll(hit, NULL, 10);
}

static int add_pid(pid_t *set, int n, int max, pid_t pid)
{
    for (int i = 0; i < n; i++)
        if (set[i] == pid)
            return n;
    if (n < max)
        set[n++] = pid;
    return n;
}

int fproc_add_descendants(pid_t pid, pid_t *set, int n, int max)
{
    char path[64];
    DIR *d;
    struct dirent *de;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    d = opendir(path);
    if (!d)
        return n;
    while ((de = readdir(d))) {
        char cpath[384], line[1024];
        FILE *f;

        if (de->d_name[0] == '.')
            continue;
        snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/children", (int)pid,
                 de->d_name);
        f = fopen(cpath, "re");
        if (!f)
            continue;
        if (fgets(line, sizeof(line), f)) {
            char *save = NULL;

            for (char *t = strtok_r(line, " \n", &save); t;
                 t = strtok_r(NULL, " \n", &save)) {
                pid_t c = (pid_t)atoi(t);

                if (c > 0) {
                    n = add_pid(set, n, max, c);
                    n = fproc_add_descendants(c, set, n, max);
                }
            }
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

void fproc_reap_orphans(void)
{
    /* Only orphans reparented to us: our own fprocs are reaped by pid. A
     * reaped fproc child is reported by fproc_alive() as gone anyway. */
    for (int i = 0; i < 256; i++) {
        siginfo_t si;

        memset(&si, 0, sizeof(si));
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 ||
            si.si_pid == 0)
            return;
        /* Leave direct fproc children to their owner: only reap pids
         * whose command is not colo (orphans: QEMU, shells). */
        {
            char path[64], comm[64] = "";
            FILE *f;

            snprintf(path, sizeof(path), "/proc/%d/comm", (int)si.si_pid);
            f = fopen(path, "re");
            if (f) {
                if (!fgets(comm, sizeof(comm), f))
                    comm[0] = '\0';
                fclose(f);
            }
            if (strncmp(comm, "colo", 4) == 0 || strncmp(comm, "sh", 2) == 0)
                return;
        }
        waitpid(si.si_pid, NULL, WNOHANG);
    }
}

bool fproc_pid_running(pid_t pid)
{
    char path[64], buf[512];
    FILE *f;
    char *rp;
    bool running = false;

    if (pid <= 0)
        return false;
    fproc_reap_orphans();
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return false;
    if (fgets(buf, sizeof(buf), f) && (rp = strrchr(buf, ')')) && rp[1])
        running = rp[2] != 'Z' && rp[2] != 'X';
    fclose(f);
    return running;
}

long fproc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

int fproc_fd_count(pid_t pid)
{
    char path[64];
    struct dirent *de;
    DIR *d;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (!d)
        return -1;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int fenv_setup(struct fenv *e, const char *guest_cmdline)
{
    return fenv_setup_ex(e, guest_cmdline, NULL);
}

bool fproc_counter_above(const char *ram_path, uint32_t v, int timeout_ms)
{
    uint64_t deadline = fproc_now_ms() + (uint64_t)timeout_ms;
    struct timespec step = {0, 5 * 1000 * 1000};

    while (fproc_now_ms() < deadline) {
        if (fproc_counter(ram_path) > v)
            return true;
        nanosleep(&step, NULL); /* a value in shared memory: no event */
    }
    return false;
}

#define FENV_QBOOT "/usr/share/qemu/qboot.rom"

int fenv_setup_ex(struct fenv *e, const char *guest_cmdline,
                  const char *extra_json)
{
    FILE *f;
    bool qboot;

    memset(e, 0, sizeof(*e));
    strcpy(e->dir, "/tmp/colo-faults-XXXXXX");
    if (!mkdtemp(e->dir))
        return -1;
    snprintf(e->cfg, sizeof(e->cfg), "%s/vm.json", e->dir);
    snprintf(e->key, sizeof(e->key), "%s/key", e->dir);
    snprintf(e->pdir, sizeof(e->pdir), "%s/p", e->dir);
    snprintf(e->sdir, sizeof(e->sdir), "%s/s", e->dir);
    snprintf(e->pram, sizeof(e->pram), "%s/jobvm/ram", e->pdir);
    snprintf(e->sram, sizeof(e->sram), "%s/jobvm/ram", e->sdir);
    f = fopen(e->cfg, "w");
    if (!f)
        return -1;
    /* qboot (Debian's qemu-system-data) boots the test guest in well under
     * a second; SeaBIOS took more than 10 s on this loaded machine. */
    qboot = access(FENV_QBOOT, R_OK) == 0 &&
            !(extra_json && strstr(extra_json, "\"qemu\""));
    fprintf(f,
            "{\"name\": \"jobvm\", \"memory_mb\": 32, \"vcpus\": 1,\n"
            " \"kernel\": \"%s/tests/guest/colo-test-guest.elf\",\n"
            " \"cmdline\": \"%s\"%s%s%s}\n",
            COLO_BINARY_DIR, guest_cmdline ? guest_cmdline : "dirty=2 rate=4",
            extra_json ? ",\n " : "", extra_json ? extra_json : "",
            qboot ? ",\n \"qemu\": {\"extra_args\": [\"-bios\", \"" FENV_QBOOT
                    "\"]}"
                  : "");
    fclose(f);
    f = fopen(e->key, "w");
    if (!f)
        return -1;
    fprintf(f, "a shared test key of enough length\n");
    fclose(f);
    /* colo refuses a key file group or others may read */
    return chmod(e->key, 0600);
}

void fenv_teardown(struct fenv *e)
{
    char cmd[256];

    if (!e->dir[0])
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", e->dir);
}

void fproc_summary(const char *prefix, const char *line)
{
    const char *path = getenv("COLO_FAULTS_SUMMARY");
    char tmp[600], buf[512];
    FILE *in, *out;

    if (!path)
        path = "faults-summary.txt";
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    out = fopen(tmp, "w");
    if (!out)
        return;
    in = fopen(path, "r");
    /* Keep the other programs' lines, replace ours. */
    while (in && fgets(buf, sizeof(buf), in))
        if (strncmp(buf, prefix, strlen(prefix)) != 0)
            fputs(buf, out);
    if (in)
        fclose(in);
    fprintf(out, "%s\n", line);
    fclose(out);
    if (rename(tmp, path) != 0)
        unlink(tmp);
}
