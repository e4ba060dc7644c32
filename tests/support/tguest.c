/*
 * Test support: boot the test guest under a real QEMU (see tguest.h).
 *
 * Life of a guest:
 *   tguest_prepare()  temp dir (mkdtemp under $TMPDIR, /dev/shm or /tmp);
 *                     the RAM file created, sized and mapped MAP_SHARED, so
 *                     the mapping exists before QEMU does (no race);
 *   tguest_launch()   bind+listen the QMP socket here, fork, exec QEMU with
 *                     the listening fd inherited, then probe the QMP socket
 *                     until QEMU's greeting arrives (QEMU finished its
 *                     setup) or it dies (we report its stderr);
 *   tguest_free()     SIGKILL + reap, unmap, remove the temp dir.
 *
 * Every prepared guest sits in a process-wide list that an atexit() handler
 * walks to kill what a failing test left behind; the child also has
 * PR_SET_PDEATHSIG(SIGKILL) for when this process dies without exiting.
 * That list is the one mutable global here (test-only code).
 */
#include "tguest.h"

#include <jansson.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/timeutil.h"
#include "config.h" /* orchestrator/: orch_config_qemu_argv */

#ifndef COLO_TGUEST_KERNEL
#define COLO_TGUEST_KERNEL "colo-test-guest.elf"
#endif

#define TGUEST_START_TIMEOUT_MS 15000
#define TGUEST_POLL_STEP_NS     (2 * 1000 * 1000) /* 2 ms */
#define TGUEST_STDERR_MAX       (64 * 1024)
#define TGUEST_SERIAL_MAX       (64 * 1024 * 1024)
/* qboot (Debian's qemu-system-data ships it) instead of SeaBIOS: the guest
 * boots in ~0.1 s instead of ~3 s where KVM emulates real mode slowly. */
#define TGUEST_QBOOT "/usr/share/qemu/qboot.rom"

/* ---- the live-guest list and the atexit killer ----------------------- */

/* Each guest is allocated inside a live-list entry (the public struct
 * first, so a struct tguest * is also the entry's address). */
struct live_entry {
    struct tguest g;
    struct live_entry *prev, *next;
    pid_t owner; /* the process that prepared it */
};
static struct live_entry *live_head;
static bool atexit_done;

/* At exit: kill what a test left running, remove its temp dir and free it
 * (a failed assertion skips the test's own tguest_free()). */
static void tguest_kill_all(void)
{
    struct live_entry *e = live_head, *next;

    for (; e; e = next) {
        next = e->next;
        /* A forked child that exits must not tear down its parent's. */
        if (e->owner == getpid())
            tguest_free(&e->g);
    }
}

static struct tguest *live_new(void)
{
    struct live_entry *e;

    if (!atexit_done) {
        if (atexit(tguest_kill_all) != 0)
            return NULL;
        atexit_done = true;
    }
    e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->owner = getpid();
    e->next = live_head;
    if (live_head)
        live_head->prev = e;
    live_head = e;
    return &e->g;
}

static void live_free(struct tguest *g)
{
    struct live_entry *e = (struct live_entry *)g;

    if (e->prev)
        e->prev->next = e->next;
    else
        live_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    free(e);
}

/* ---- small helpers ---------------------------------------------------- */

struct tguest_opts tguest_opts_default(void)
{
    struct tguest_opts o = {.ram_mb = 64};
    return o;
}

const char *tguest_kernel_path(void)
{
    const char *env = getenv("COLO_TGUEST_KERNEL");
    return env && *env ? env : COLO_TGUEST_KERNEL;
}

bool tguest_kvm_usable(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    colo_close(&fd);
    return true;
}

static void sleep_step(void)
{
    struct timespec ts = {0, TGUEST_POLL_STEP_NS};
    nanosleep(&ts, NULL);
}

static uint64_t deadline_after_ms(int timeout_ms)
{
    return colo_now_ns() +
           (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
}

/* True when QEMU has exited (without reaping it), false when it runs or is
 * not our child. */
static bool qemu_exited(const struct tguest *g)
{
    siginfo_t si;
    if (g->pid <= 0)
        return true;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PID, (id_t)g->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return false;
    return si.si_pid == g->pid;
}

static volatile uint32_t *status_word(const struct tguest *g, uint32_t off)
{
    if (!g->ram || g->ram_size < TGUEST_STATUS_GPA + 4096)
        return NULL;
    return (volatile uint32_t *)(g->ram + TGUEST_STATUS_GPA + off);
}

static uint32_t read_status(const struct tguest *g, uint32_t off)
{
    volatile uint32_t *p = status_word(g, off);
    return p ? __atomic_load_n(p, __ATOMIC_RELAXED) : 0;
}

uint32_t tguest_counter(const struct tguest *g)
{
    return read_status(g, TGUEST_COUNTER_OFF);
}

uint32_t tguest_magic(const struct tguest *g)
{
    return read_status(g, TGUEST_MAGIC_OFF);
}

uint32_t tguest_mode(const struct tguest *g)
{
    return read_status(g, TGUEST_MODE_OFF);
}

uint32_t tguest_passes(const struct tguest *g)
{
    return read_status(g, TGUEST_PASSES_OFF);
}

/* ---- argv ------------------------------------------------------------- */

/*
 * The command line comes from colo's own builder (orch_config_qemu_argv,
 * orchestrator/config.h) over a configuration describing the test guest,
 * so a test's QEMU runs with what colo would give it. tguest adds what a
 * configuration does not say: the qboot firmware, the serial log appended
 * to across relaunches, the pre-opened QMP socket, opts.extra_args.
 */

void tguest_argv_free(char **argv)
{
    orch_config_argv_free(argv);
}

static bool use_kvm(const struct tguest_opts *o)
{
    return !o->force_tcg && tguest_kvm_usable();
}

char **tguest_build_argv(const struct tguest_opts *o, const struct tguest *g,
                         int qmp_fd)
{
    const char *qemu = getenv("COLO_QEMU");
    struct orch_qemu_launch_params p = {
        .ram_path = g->ram_path,
        .paused = o->paused,
        .incoming_defer = o->incoming_defer,
        .kvm = use_kvm(o) ? ORCH_KVM_YES : ORCH_KVM_NO,
    };
    struct orch_config_error err;
    struct orch_vm_config *c = NULL;
    json_t *root, *firmware = json_array();
    char serial[400], qmp[96], dirty[64];
    const char **tail;
    char **argv = NULL;
    size_t n = 0, extra = 0;

    for (const char *const *e = o->extra_args; e && *e; e++)
        extra++;
    tail = calloc(extra + 9, sizeof(*tail)); /* 8 of ours + NULL */
    if (!tail || !firmware)
        goto out;
    if (!o->seabios && access(TGUEST_QBOOT, R_OK) == 0) {
        json_array_append_new(firmware, json_string("-bios"));
        json_array_append_new(firmware, json_string(TGUEST_QBOOT));
    }
    root =
        json_pack("{s:s, s:I, s:i, s:{s:s, s:s, s:s, s:O}}", "name", "tguest",
                  "memory_mb", (json_int_t)o->ram_mb, "vcpus", 1, "qemu",
                  "binary", qemu && *qemu ? qemu : "qemu-system-x86_64",
                  "machine", "pc", "accel", "auto", "extra_args", firmware);
    if (root && !o->no_kernel) {
        json_object_set_new(root, "kernel", json_string(tguest_kernel_path()));
        if (o->dirty_mb > 0) {
            snprintf(dirty, sizeof(dirty), "dirty=%zu rate=%u", o->dirty_mb,
                     o->dirty_rate_mbs);
            json_object_set_new(root, "cmdline", json_string(dirty));
        }
    }
    if (!root || orch_config_from_json(root, "tguest", &c, &err) < 0) {
        if (root)
            fprintf(stderr, "tguest: configuration refused: %s\n", err.text);
        json_decref(root);
        goto out;
    }
    json_decref(root);
    /* append: a relaunched guest adds to the same log. */
    snprintf(serial, sizeof(serial), "file,id=ser,path=%s,append=on",
             g->serial_path);
    tail[n++] = "-chardev";
    tail[n++] = serial;
    tail[n++] = "-serial";
    tail[n++] = "chardev:ser";
    if (qmp_fd >= 0) {
        snprintf(qmp, sizeof(qmp), "socket,id=qmp,fd=%d,server=on,wait=off",
                 qmp_fd);
        tail[n++] = "-chardev";
        tail[n++] = qmp;
        tail[n++] = "-mon";
        tail[n++] = "chardev=qmp,mode=control";
    }
    for (size_t i = 0; i < extra; i++)
        tail[n++] = o->extra_args[i];
    p.extra_args = tail;
    if (orch_config_qemu_argv(c, &p, &argv) < 0)
        argv = NULL;
out:
    orch_config_free(c);
    json_decref(firmware);
    free(tail);
    return argv;
}

/* ---- prepare / free ---------------------------------------------------- */

static int map_ram(struct tguest *g, const char *path, bool create)
{
    int fd = -1, rc = 0;
    struct stat st;
    void *p;

    fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0)
        return -errno;
    if (create && ftruncate(fd, (off_t)g->ram_size) < 0) {
        rc = -errno;
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if ((size_t)st.st_size != g->ram_size) {
        fprintf(stderr, "tguest: %s is %lld bytes, want %zu\n", path,
                (long long)st.st_size, g->ram_size);
        rc = -EINVAL;
        goto out;
    }
    p = mmap(NULL, g->ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        goto out;
    }
    g->ram = p;
out:
    colo_close(&fd);
    return rc;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
    rmdir(dir);
}

int tguest_prepare(const struct tguest_opts *o, struct tguest **ret)
{
    struct tguest *g;
    const char *tmp = getenv("TMPDIR");
    struct stat st;
    int rc;

    *ret = NULL;
    if (o->ram_mb < 8 || o->ram_mb > 2048)
        return -EINVAL; /* the layout needs >= 8 MiB, below the PCI hole */
    g = live_new();
    if (!g)
        return -ENOMEM;
    g->pid = -1;
    g->ram_size = o->ram_mb << 20;
    /* $TMPDIR, else /dev/shm, else /tmp: the RAM file should live in
     * memory; on a disk file system the kernel keeps writing the guest's
     * RAM back to disk, which slows dirty mode down a lot. */
    if (!tmp || !*tmp) {
        tmp = "/tmp";
        if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
            access("/dev/shm", W_OK) == 0)
            tmp = "/dev/shm";
    }
    if (snprintf(g->dir, sizeof(g->dir), "%s/colo-tguest-XXXXXX", tmp) >=
        (int)sizeof(g->dir)) {
        g->dir[0] = '\0';
        rc = -ENAMETOOLONG;
        goto out;
    }
    if (!mkdtemp(g->dir)) {
        rc = -errno;
        g->dir[0] = '\0';
        goto out;
    }
    snprintf(g->serial_path, sizeof(g->serial_path), "%s/serial", g->dir);
    snprintf(g->qmp_path, sizeof(g->qmp_path), "%s/qmp", g->dir);
    if (o->ram_path) {
        if (snprintf(g->ram_path, sizeof(g->ram_path), "%s", o->ram_path) >=
            (int)sizeof(g->ram_path)) {
            rc = -ENAMETOOLONG;
            goto out;
        }
        rc = map_ram(g, g->ram_path, false);
    } else {
        snprintf(g->ram_path, sizeof(g->ram_path), "%s/ram", g->dir);
        rc = map_ram(g, g->ram_path, true);
    }
    /* The serial log exists from the start, so readers never see ENOENT. */
    if (rc >= 0)
        rc = colo_write_file(g->serial_path, "", 0);
out:
    if (rc < 0) {
        tguest_free(g);
        return rc;
    }
    g->kvm = use_kvm(o);
    *ret = g;
    return 0;
}

void tguest_kill(struct tguest *g)
{
    if (!g || g->pid <= 0)
        return;
    kill(g->pid, SIGKILL);
    while (waitpid(g->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    g->pid = -1;
}

void tguest_free(struct tguest *g)
{
    if (!g)
        return;
    tguest_kill(g);
    if (g->ram)
        munmap(g->ram, g->ram_size);
    if (g->dir[0])
        remove_dir(g->dir);
    live_free(g);
}

/* ---- launch ------------------------------------------------------------- */

static int qmp_listen(const char *path, int *ret_fd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, rc;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    unlink(path); /* left over by an earlier launch of this guest */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
        rc = -errno;
        colo_close(&fd);
        return rc;
    }
    *ret_fd = fd;
    return 0;
}

/* Connect to QMP and wait for the greeting line: QEMU finished its setup.
 * Fails with -COLO_EQEMU_DIED when QEMU closes the socket (it exited). */
static int qmp_probe(const struct tguest *g, uint64_t deadline)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char buf[512];
    size_t got = 0;
    int fd = -1, rc = 0;

    strcpy(sa.sun_path, g->qmp_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* The socket is listening already: connect completes at once. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        goto out;
    }
    for (;;) {
        uint64_t now = colo_now_ns();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (now >= deadline) {
            rc = -ETIMEDOUT;
            goto out;
        }
        n = poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1));
        if (n < 0 && errno != EINTR) {
            rc = -errno;
            goto out;
        }
        if (n <= 0)
            continue;
        n = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = -COLO_EQEMU_DIED;
            goto out;
        }
        got += (size_t)n;
        buf[got] = '\0';
        if (strchr(buf, '\n') || got == sizeof(buf) - 1)
            break;
    }
    if (!strstr(buf, "\"QMP\""))
        rc = -COLO_EQMP_PROTOCOL;
out:
    colo_close(&fd);
    return rc;
}

static void report_failure(const struct tguest *g, const char *what, int rc)
{
    char path[320], *err = NULL;
    size_t len = 0;

    snprintf(path, sizeof(path), "%s/qemu.stderr", g->dir);
    colo_read_file(path, TGUEST_STDERR_MAX, &err, &len);
    fprintf(stderr, "tguest: QEMU %s (%s); its stderr:\n%s\n", what,
            colo_strerror(rc), err ? err : "(unreadable)");
    free(err);
}

int tguest_launch(struct tguest *g, const struct tguest_opts *o)
{
    char **argv = NULL;
    char errpath[320];
    int qmp_fd = -1, err_fd = -1, null_fd = -1, rc;
    pid_t parent = getpid(), pid;

    if (g->pid > 0)
        return -EBUSY;
    rc = qmp_listen(g->qmp_path, &qmp_fd);
    if (rc < 0)
        goto out;
    snprintf(errpath, sizeof(errpath), "%s/qemu.stderr", g->dir);
    err_fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (err_fd < 0 || null_fd < 0) {
        rc = -errno;
        goto out;
    }
    argv = tguest_build_argv(o, g, qmp_fd);
    if (!argv) {
        rc = -ENOMEM;
        goto out;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        goto out;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only until exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (dup2(null_fd, 0) < 0 || dup2(err_fd, 1) < 0 || dup2(err_fd, 2) < 0)
            _exit(127);
        /* QEMU gets exactly 0-2, the QMP socket and o->pass_fds: not the
         * test framework's pipes that happen to lack O_CLOEXEC. */
        syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
        if (fcntl(qmp_fd, F_SETFD, 0) < 0)
            _exit(127);
        for (size_t i = 0; i < o->n_pass_fds; i++) {
            if (fcntl(o->pass_fds[i], F_SETFD, 0) < 0)
                _exit(127);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    g->pid = pid;
    g->kvm = use_kvm(o);
    colo_close(&qmp_fd); /* QEMU owns the listening socket now */
    rc = qmp_probe(g, deadline_after_ms(TGUEST_START_TIMEOUT_MS));
    if (rc < 0) {
        report_failure(
            g, rc == -COLO_EQEMU_DIED ? "exited at start" : "did not come up",
            rc);
        tguest_kill(g);
    }
out:
    tguest_argv_free(argv);
    colo_close(&qmp_fd);
    colo_close(&err_fd);
    colo_close(&null_fd);
    return rc;
}

int tguest_start(const struct tguest_opts *o, struct tguest **ret)
{
    struct tguest *g = NULL;
    int rc;

    *ret = NULL;
    rc = tguest_prepare(o, &g);
    if (rc < 0)
        return rc;
    rc = tguest_launch(g, o);
    if (rc < 0) {
        tguest_free(g);
        return rc;
    }
    *ret = g;
    return 0;
}

/* ---- waiting ------------------------------------------------------------ */

static int wait_status_above(const struct tguest *g, uint32_t off, uint32_t v,
                             int timeout_ms)
{
    uint64_t deadline = deadline_after_ms(timeout_ms);

    for (;;) {
        if (read_status(g, off) > v)
            return 0;
        if (g->pid > 0 && qemu_exited(g))
            return -COLO_EQEMU_DIED;
        if (colo_now_ns() >= deadline)
            return -ETIMEDOUT;
        sleep_step();
    }
}

int tguest_wait_counter_above(const struct tguest *g, uint32_t v,
                              int timeout_ms)
{
    return wait_status_above(g, TGUEST_COUNTER_OFF, v, timeout_ms);
}

int tguest_wait_passes_above(const struct tguest *g, uint32_t v, int timeout_ms)
{
    return wait_status_above(g, TGUEST_PASSES_OFF, v, timeout_ms);
}

/* Count lines of the log that start with prefix. */
static int count_lines(const char *log, const char *prefix)
{
    size_t plen = strlen(prefix);
    int n = 0;

    for (const char *p = log; p && *p;) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            break; /* an incomplete last line does not count yet */
        if (!strncmp(p, prefix, plen) && (size_t)(nl - p) >= plen)
            n++;
        p = nl + 1;
    }
    return n;
}

char *tguest_serial(const struct tguest *g)
{
    char *buf = NULL;
    size_t len = 0;

    if (colo_read_file(g->serial_path, TGUEST_SERIAL_MAX, &buf, &len) < 0)
        return NULL;
    return buf;
}

int tguest_wait_serial(const struct tguest *g, const char *s, int timeout_ms)
{
    uint64_t deadline = deadline_after_ms(timeout_ms);

    for (;;) {
        char *log = tguest_serial(g);
        bool found = log && strstr(log, s);

        free(log);
        if (found)
            return 0;
        if (g->pid > 0 && qemu_exited(g))
            return -COLO_EQEMU_DIED;
        if (colo_now_ns() >= deadline)
            return -ETIMEDOUT;
        sleep_step();
    }
}

int tguest_wait_serial_lines(const struct tguest *g, const char *prefix, int n,
                             int timeout_ms)
{
    uint64_t deadline = deadline_after_ms(timeout_ms);

    for (;;) {
        char *log = tguest_serial(g);
        int have = log ? count_lines(log, prefix) : 0;

        free(log);
        if (have >= n)
            return 0;
        if (g->pid > 0 && qemu_exited(g))
            return -COLO_EQEMU_DIED;
        if (colo_now_ns() >= deadline)
            return -ETIMEDOUT;
        sleep_step();
    }
}

/* ---- a tiny blocking QMP exchange (tests only) ------------------------- */

#define TGUEST_QMP_LINE_MAX (64 * 1024)

/* Read one line (without the newline) before the deadline. */
static int qmp_line(int fd, char *buf, size_t cap, uint64_t deadline)
{
    size_t len = 0;

    while (len + 1 < cap) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        uint64_t now = colo_now_ns();
        ssize_t n;

        if (now >= deadline)
            return -ETIMEDOUT;
        n = poll(&pfd, 1, (int)((deadline - now) / 1000000) + 1);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n <= 0)
            continue;
        n = read(fd, buf + len, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -COLO_EQMP_DISCONNECTED;
        if (buf[len] == '\n') {
            buf[len] = '\0';
            return 0;
        }
        len++;
    }
    return -COLO_EQMP_PROTOCOL; /* a line over the cap */
}

int tguest_qmp(const struct tguest *g, const char *cmd, int timeout_ms)
{
    static const char caps[] = "{\"execute\":\"qmp_capabilities\"}\n";
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    uint64_t deadline = deadline_after_ms(timeout_ms);
    char *line = NULL;
    int fd = -1, rc = 0;

    if (strlen(g->qmp_path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, g->qmp_path);
    line = malloc(TGUEST_QMP_LINE_MAX);
    if (!line)
        return -ENOMEM;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        goto out;
    }
    rc = qmp_line(fd, line, TGUEST_QMP_LINE_MAX, deadline); /* greeting */
    if (rc == 0)
        rc = colo_write_all(fd, caps, strlen(caps));
    if (rc == 0)
        rc = qmp_line(fd, line, TGUEST_QMP_LINE_MAX, deadline);
    if (rc == 0)
        rc = colo_write_all(fd, cmd, strlen(cmd));
    if (rc == 0 && (!*cmd || cmd[strlen(cmd) - 1] != '\n'))
        rc = colo_write_all(fd, "\n", 1);
    /* Skip events up to the reply. */
    while (rc == 0) {
        rc = qmp_line(fd, line, TGUEST_QMP_LINE_MAX, deadline);
        if (rc == 0 && !strncmp(line, "{\"return\"", 9))
            break;
        if (rc == 0 && !strncmp(line, "{\"error\"", 8)) {
            fprintf(stderr, "tguest: QMP %s -> %s\n", cmd, line);
            rc = -COLO_EQMP_GENERIC;
        }
    }
out:
    if (rc < 0 && rc != -COLO_EQMP_GENERIC)
        fprintf(stderr, "tguest: QMP %s -> %s\n", cmd, colo_strerror(rc));
    colo_close(&fd);
    free(line);
    return rc;
}
