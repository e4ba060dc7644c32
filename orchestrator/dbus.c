/*
 * orchestrator/dbus: private bus, helpers and checks for QEMU's
 * dbus-vmstate (see dbus.h and docs/dbus.md).
 *
 * The bus is a real dbus-daemon. Queries on the bus go through dbus-send
 * (package dbus-bin, pulled in by dbus), so colo_orch needs no libdbus:
 * each query is a child process with a deadline whose output is parsed.
 */
#include "dbus.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/timeutil.h"
#include "config.h"

extern char **environ;

#define BUS_NAME     "org.qemu.VMState1"
#define VMSTATE_PATH "/org/qemu/VMState1"
/* dbus-send prints a byte as "xx " plus line breaks (< 4 chars a byte):
 * output over this is far over ORCH_DBUS_STATE_MAX. */
#define SAVE_OUTPUT_MAX  (8u * ORCH_DBUS_STATE_MAX)
#define QUERY_OUTPUT_MAX (64u * 1024)
#define ADDRESS_MAX      1024

struct helper {
    char id[ORCH_DBUS_ID_MAX + 1];
    char **argv; /* NULL-terminated */
    pid_t pid;   /* -1 once reaped */
    int status;  /* waitpid status once reaped */
};

struct orch_dbus {
    char conf_path[4096];
    char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char address[ADDRESS_MAX];
    pid_t bus_pid;
    struct helper *helpers;
    size_t n_helpers;
    char *qemu_arg; /* "dbus-vmstate,..." */
    /* orch_dbus_check_start(): child, result pipe, read event, callback */
    pid_t check_pid;
    int check_fd;
    struct event *check_ev;
    orch_dbus_check_cb check_cb;
    void *check_arg;
    bool check_is_start;      /* the job waits for the Ids (start_async) */
    const char *qemu_args[3]; /* {"-object", qemu_arg, NULL} or {NULL} */
};

static int fail(struct orch_dbus_error *err, const char *helper, int rc,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(struct orch_dbus_error *err, const char *helper, int rc,
                const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return rc;
    snprintf(err->helper, sizeof(err->helper), "%s", helper ? helper : "");
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
    return rc;
}

static uint64_t now_ms(void)
{
    return colo_now_ns() / 1000000;
}

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = now_ms();

    return now >= deadline ? 0 : (int)(deadline - now);
}

/* ---- helpers array ----------------------------------------------------- */

static bool id_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > ORCH_DBUS_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static void helpers_free(struct helper *h, size_t n)
{
    for (size_t i = 0; h && i < n; i++) {
        for (char **a = h[i].argv; a && *a; a++)
            free(*a);
        free(h[i].argv);
    }
    free(h);
}

/* Validate "helpers"; with want_argv, copy the commands too. */
static int helpers_parse(const json_t *arr, bool want_argv, struct helper **ret,
                         size_t *ret_n, struct orch_dbus_error *err)
{
    struct helper *h = NULL;
    size_t n, i;
    int rc;

    *ret = NULL;
    *ret_n = 0;
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return fail(err, NULL, -COLO_ECONFIG, "$.helpers: expected array");
    n = json_array_size(arr);
    if (n > ORCH_DBUS_MAX_HELPERS)
        return fail(err, NULL, -COLO_ECONFIG,
                    "$.helpers: %zu helpers, at most %d", n,
                    ORCH_DBUS_MAX_HELPERS);
    if (n == 0)
        return 0;
    h = calloc(n, sizeof(*h));
    if (!h)
        return -ENOMEM;
    for (i = 0; i < n; i++) {
        const json_t *o = json_array_get(arr, i);
        const json_t *id = json_object_get(o, "id");
        const json_t *cmd = json_object_get(o, "command");
        size_t argc;

        h[i].pid = -1;
        if (!json_is_object(o) || !json_is_string(id) ||
            !id_valid(json_string_value(id))) {
            rc = fail(err, NULL, -COLO_ECONFIG,
                      "$.helpers[%zu].id: expected 1-%d characters of "
                      "[A-Za-z0-9_.-]",
                      i, ORCH_DBUS_ID_MAX);
            goto out;
        }
        snprintf(h[i].id, sizeof(h[i].id), "%s", json_string_value(id));
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(h[j].id, h[i].id)) {
                rc = fail(err, h[i].id, -COLO_ECONFIG,
                          "$.helpers[%zu].id: duplicate Id \"%s\"", i, h[i].id);
                goto out;
            }
        }
        if (!want_argv)
            continue;
        argc = json_is_array(cmd) ? json_array_size(cmd) : 0;
        if (argc == 0 || argc > ORCH_DBUS_MAX_ARGS) {
            rc = fail(err, h[i].id, -COLO_ECONFIG,
                      "$.helpers[%zu].command: expected 1-%d strings", i,
                      ORCH_DBUS_MAX_ARGS);
            goto out;
        }
        h[i].argv = calloc(argc + 1, sizeof(char *));
        if (!h[i].argv) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t j = 0; j < argc; j++) {
            const json_t *a = json_array_get(cmd, j);

            if (!json_is_string(a) ||
                strlen(json_string_value(a)) > ORCH_CONFIG_MAX_STRING) {
                rc = fail(err, h[i].id, -COLO_ECONFIG,
                          "$.helpers[%zu].command[%zu]: expected string", i, j);
                goto out;
            }
            h[i].argv[j] = strdup(json_string_value(a));
            if (!h[i].argv[j]) {
                rc = -ENOMEM;
                goto out;
            }
        }
    }
    *ret = h;
    *ret_n = n;
    h = NULL;
    rc = 0;
out:
    helpers_free(h, n);
    return rc;
}

/* ---- child processes --------------------------------------------------- */

/*
 * fork + exec argv (PATH search) with envp. In the child: stdin from
 * /dev/null; out_fd (>= 0) becomes stdout; keep_fd (>= 0) becomes fd 3;
 * die with the parent. Everything after fork is async-signal-safe.
 */
static int spawn(char *const argv[], char *const envp[], int out_fd,
                 int keep_fd, bool quiet, pid_t *ret_pid)
{
    pid_t ppid = getpid();
    pid_t pid = fork();

    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != ppid)
            _exit(127);
        if (null < 0 || dup2(null, 0) < 0)
            _exit(127);
        if (quiet && dup2(null, 2) < 0)
            _exit(127);
        if (out_fd >= 0 && dup2(out_fd, 1) < 0)
            _exit(127);
        if (keep_fd >= 0) {
            if (keep_fd == 3) {
                if (fcntl(3, F_SETFD, 0) < 0)
                    _exit(127);
            } else if (dup2(keep_fd, 3) < 0) {
                _exit(127);
            }
        }
        execvpe(argv[0], argv, envp);
        _exit(127);
    }
    *ret_pid = pid;
    return 0;
}

/* SIGKILL and reap (waitpid after SIGKILL returns promptly). */
static void kill_reap(pid_t *pid, int *ret_status)
{
    int st = 0;

    if (*pid <= 0)
        return;
    kill(*pid, SIGKILL);
    while (waitpid(*pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (ret_status)
        *ret_status = st;
    *pid = -1;
}

/*
 * Run argv, capture stdout (at most cap bytes) until EOF or the deadline.
 * 0 with *ret_out (NUL-terminated, malloc'd) and *ret_status;
 * -ETIMEDOUT or -EMSGSIZE (the child is killed).
 */
static int run_capture(char *const argv[], uint64_t deadline, size_t cap,
                       char **ret_out, size_t *ret_len, int *ret_status)
{
    int p[2] = {-1, -1};
    pid_t pid = -1;
    char *buf = NULL;
    size_t len = 0, sz = 0;
    int rc, st = 0;

    *ret_out = NULL;
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    rc = spawn(argv, environ, p[1], -1, true, &pid);
    colo_close(&p[1]);
    if (rc < 0)
        goto out;
    for (;;) {
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        int ms = remaining_ms(deadline);
        ssize_t n;

        if (ms == 0) {
            rc = -ETIMEDOUT;
            goto out;
        }
        n = poll(&pfd, 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0)
            continue; /* the deadline check above ends it */
        if (len + 4096 + 1 > sz) {
            size_t nsz = sz ? sz * 2 : 8192;
            char *nb = realloc(buf, nsz);

            if (!nb) {
                rc = -ENOMEM;
                goto out;
            }
            buf = nb;
            sz = nsz;
        }
        n = read(p[0], buf + len, sz - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > cap) {
            rc = -EMSGSIZE;
            goto out;
        }
    }
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    pid = -1;
    if (!buf && !(buf = malloc(1))) {
        rc = -ENOMEM;
        goto out;
    }
    buf[len] = '\0';
    *ret_out = buf;
    *ret_len = len;
    *ret_status = st;
    buf = NULL;
    rc = 0;
out:
    kill_reap(&pid, NULL);
    colo_close(&p[0]);
    free(buf);
    return rc;
}

/* dbus-send --print-reply=literal; -EIO when it exits non-zero. */
static int dbus_send(const struct orch_dbus *d, uint64_t deadline, size_t cap,
                     const char *dest, const char *path, const char *method,
                     const char *arg1, const char *arg2, char **ret_out,
                     size_t *ret_len)
{
    char bus[ADDRESS_MAX + 16], timeout[48];
    char *argv[10];
    int n = 0, st = 0, rc;

    snprintf(bus, sizeof(bus), "--bus=%s", d->address);
    snprintf(timeout, sizeof(timeout), "--reply-timeout=%d",
             remaining_ms(deadline) > 0 ? remaining_ms(deadline) : 1);
    argv[n++] = (char *)"dbus-send";
    argv[n++] = bus;
    argv[n++] = (char *)"--print-reply=literal";
    argv[n++] = timeout;
    argv[n++] = (char *)dest;
    argv[n++] = (char *)path;
    argv[n++] = (char *)method;
    if (arg1)
        argv[n++] = (char *)arg1;
    if (arg2)
        argv[n++] = (char *)arg2;
    argv[n] = NULL;
    rc = run_capture(argv, deadline, cap, ret_out, ret_len, &st);
    if (rc < 0)
        return rc;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        free(*ret_out);
        *ret_out = NULL;
        /* dbus-send prints "Error ...NoReply" on its reply timeout. */
        return remaining_ms(deadline) == 0 ? -ETIMEDOUT : -EIO;
    }
    return 0;
}

/* ---- bus ----------------------------------------------------------------- */

static int write_conf(struct orch_dbus *d)
{
    char conf[8192];
    int n;

    n = snprintf(conf, sizeof(conf),
                 "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus "
                 "Configuration 1.0//EN\"\n"
                 " \"http://www.freedesktop.org/standards/dbus/1.0/"
                 "busconfig.dtd\">\n"
                 "<busconfig>\n"
                 "  <type>colo-vm</type>\n"
                 "  <listen>unix:path=%s</listen>\n"
                 "  <auth>EXTERNAL</auth>\n"
                 "  <policy context=\"default\">\n"
                 "    <allow user=\"*\"/>\n"
                 "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
                 "    <allow eavesdrop=\"true\"/>\n"
                 "    <allow own=\"*\"/>\n"
                 "  </policy>\n"
                 "</busconfig>\n",
                 d->sock_path);
    if (n < 0 || (size_t)n >= sizeof(conf))
        return -ENAMETOOLONG;
    return colo_write_file(d->conf_path, conf, (size_t)n);
}

static int bus_start(struct orch_dbus *d, uint64_t deadline,
                     struct orch_dbus_error *err)
{
    char cfg_arg[4200];
    char *argv[] = {(char *)"dbus-daemon",
                    cfg_arg,
                    (char *)"--nofork",
                    (char *)"--nopidfile",
                    (char *)"--nosyslog",
                    (char *)"--print-address=3",
                    NULL};
    int p[2] = {-1, -1};
    size_t len = 0;
    int rc, st;

    rc = write_conf(d);
    if (rc < 0)
        return fail(err, NULL, rc, "dbus: writing %s: %s", d->conf_path,
                    colo_strerror(rc));
    snprintf(cfg_arg, sizeof(cfg_arg), "--config-file=%s", d->conf_path);
    if (pipe2(p, O_CLOEXEC) < 0)
        return fail(err, NULL, -errno, "dbus: pipe: %s", strerror(errno));
    rc = spawn(argv, environ, -1, p[1], false, &d->bus_pid);
    colo_close(&p[1]);
    if (rc < 0) {
        fail(err, NULL, rc, "dbus: starting dbus-daemon: %s",
             colo_strerror(rc));
        goto out;
    }
    /* The address is one line on fd 3; EOF means the daemon failed. */
    while (len == 0 || d->address[len - 1] != '\n') {
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        int ms = remaining_ms(deadline);
        ssize_t n;

        if (ms == 0) {
            rc = fail(err, NULL, -ETIMEDOUT,
                      "dbus: dbus-daemon printed no address in time");
            goto out;
        }
        n = poll(&pfd, 1, ms);
        if (n <= 0)
            continue;
        n = read(p[0], d->address + len, sizeof(d->address) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || len + (size_t)n >= sizeof(d->address) - 1) {
            kill_reap(&d->bus_pid, &st);
            rc = fail(err, NULL, -COLO_EHELPER,
                      "dbus: dbus-daemon failed (%s; see its stderr)",
                      n <= 0 ? "exited" : "address too long");
            goto out;
        }
        len += (size_t)n;
    }
    d->address[len - 1] = '\0';
    rc = 0;
out:
    colo_close(&p[0]);
    return rc;
}

/* ---- queries ------------------------------------------------------------- */

/* Reap helpers that exited; -COLO_EHELPER naming the first. */
static int helpers_alive(struct orch_dbus *d, struct orch_dbus_error *err)
{
    for (size_t i = 0; i < d->n_helpers; i++) {
        struct helper *h = &d->helpers[i];
        int st;

        if (h->pid > 0 && waitpid(h->pid, &st, WNOHANG) == h->pid) {
            h->pid = -1;
            h->status = st;
        }
        if (h->pid < 0) {
            if (WIFSIGNALED(h->status))
                return fail(err, h->id, -COLO_EHELPER,
                            "helper \"%s\" was killed by signal %d", h->id,
                            WTERMSIG(h->status));
            return fail(err, h->id, -COLO_EHELPER,
                        "helper \"%s\" exited with status %d", h->id,
                        WEXITSTATUS(h->status));
        }
    }
    return 0;
}

/*
 * Map Id -> unique name: ListQueuedOwners of org.qemu.VMState1, then the
 * Id property of each owner, as QEMU's dbus-vmstate does. owners[i] is
 * the unique name owning d->helpers[i].id, "" when none.
 */
static int find_owners(struct orch_dbus *d, uint64_t deadline,
                       char (*owners)[256], struct orch_dbus_error *err)
{
    char *out = NULL, *save = NULL, *tok;
    size_t len;
    int rc;

    for (size_t i = 0; i < d->n_helpers; i++)
        owners[i][0] = '\0';
    rc = dbus_send(d, deadline, QUERY_OUTPUT_MAX, "--dest=org.freedesktop.DBus",
                   "/org/freedesktop/DBus",
                   "org.freedesktop.DBus.ListQueuedOwners", "string:" BUS_NAME,
                   NULL, &out, &len);
    if (rc == -EIO) /* no owner at all: NameHasNoOwner */
        return 0;
    if (rc < 0)
        return fail(err, NULL, rc, "dbus: ListQueuedOwners: %s",
                    colo_strerror(rc));
    for (tok = strtok_r(out, " \t\n", &save); tok;
         tok = strtok_r(NULL, " \t\n", &save)) {
        char dest[300], *pout = NULL, *p, *e;
        size_t plen;

        if (tok[0] != ':' || strlen(tok) > 255)
            continue;
        snprintf(dest, sizeof(dest), "--dest=%s", tok);
        rc = dbus_send(d, deadline, QUERY_OUTPUT_MAX, dest, VMSTATE_PATH,
                       "org.freedesktop.DBus.Properties.Get",
                       "string:" BUS_NAME, "string:Id", &pout, &plen);
        if (rc == -ETIMEDOUT) {
            free(out);
            return fail(err, NULL, rc,
                        "dbus: %s did not answer for its Id in time", tok);
        }
        if (rc < 0)
            continue; /* gone meanwhile, or no Id: not one of ours */
        /* "   variant       <id>" */
        p = strstr(pout, "variant");
        p = p ? p + strlen("variant") : pout;
        p += strspn(p, " \t\n");
        e = p + strcspn(p, " \t\n");
        *e = '\0';
        for (size_t i = 0; i < d->n_helpers; i++) {
            if (!strcmp(d->helpers[i].id, p) && !owners[i][0])
                snprintf(owners[i], 256, "%s", tok);
        }
        free(pout);
    }
    free(out);
    return 0;
}

/* Count the bytes in dbus-send's "array of bytes [ xx xx ... ]". */
static size_t count_bytes(const char *out)
{
    const char *p = strstr(out, "bytes [");
    const char *e;
    size_t n = 0;

    if (!p) {
        /* dbus-send prints an all-printable array as a string. */
        p = strstr(out, "bytes \"");
        if (!p)
            return 0;
        p += strlen("bytes \"");
        e = strrchr(p, '"');
        return e && e > p ? (size_t)(e - p) : 0;
    }
    p += strlen("bytes [");
    for (;;) {
        p += strspn(p, " \t\n");
        if (*p == '\0' || *p == ']')
            break;
        n++;
        p += strcspn(p, " \t\n");
    }
    return n;
}

static int check_save(struct orch_dbus *d, const struct helper *h,
                      const char *owner, uint64_t deadline, uint32_t total_ms,
                      struct orch_dbus_error *err)
{
    char dest[300], *out = NULL;
    size_t len, n;
    int rc;

    snprintf(dest, sizeof(dest), "--dest=%s", owner);
    rc = dbus_send(d, deadline, SAVE_OUTPUT_MAX, dest, VMSTATE_PATH,
                   BUS_NAME ".Save", NULL, NULL, &out, &len);
    if (rc == -ETIMEDOUT)
        return fail(err, h->id, rc,
                    "helper \"%s\": Save did not answer within %u ms "
                    "(QEMU waits 25 s, then drops its state)",
                    h->id, total_ms);
    if (rc == -EMSGSIZE)
        return fail(err, h->id, rc,
                    "helper \"%s\": Save returned over %u bytes, over "
                    "QEMU's limit of %u",
                    h->id, SAVE_OUTPUT_MAX / 4, ORCH_DBUS_STATE_MAX);
    if (rc < 0)
        return fail(err, h->id, -COLO_EHELPER, "helper \"%s\": Save failed: %s",
                    h->id, colo_strerror(rc));
    n = count_bytes(out);
    free(out);
    if (n > ORCH_DBUS_STATE_MAX)
        return fail(err, h->id, -EMSGSIZE,
                    "helper \"%s\": Save returned %zu bytes, over QEMU's "
                    "limit of %u",
                    h->id, n, ORCH_DBUS_STATE_MAX);
    return 0;
}

static int check(struct orch_dbus *d, unsigned flags, uint64_t deadline,
                 uint32_t total_ms, bool report_missing,
                 struct orch_dbus_error *err)
{
    char(*owners)[256];
    int rc;

    rc = helpers_alive(d, err);
    if (rc < 0)
        return rc;
    owners = calloc(d->n_helpers, sizeof(*owners));
    if (!owners)
        return -ENOMEM;
    rc = find_owners(d, deadline, owners, err);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < d->n_helpers; i++) {
        if (!owners[i][0]) {
            rc = -ENOENT;
            if (report_missing)
                fail(err, d->helpers[i].id, rc,
                     "helper \"%s\" is not on the bus: no owner of " BUS_NAME
                     " has Id \"%s\"",
                     d->helpers[i].id, d->helpers[i].id);
            goto out;
        }
    }
    if (flags & ORCH_DBUS_CHECK_SAVE) {
        for (size_t i = 0; i < d->n_helpers; i++) {
            rc = check_save(d, &d->helpers[i], owners[i], deadline, total_ms,
                            err);
            if (rc < 0)
                goto out;
        }
    }
    rc = 0;
out:
    free(owners);
    return rc;
}

/* ---- public ----------------------------------------------------------------
 */

static int build_qemu_args(struct orch_dbus *d)
{
    char *addr = orch_config_qemu_escape(d->address);
    size_t sz =
        strlen(d->address) * 2 + 128 + d->n_helpers * (ORCH_DBUS_ID_MAX + 1);
    size_t off;

    if (!addr)
        return -ENOMEM;
    d->qemu_arg = malloc(sz);
    if (!d->qemu_arg) {
        free(addr);
        return -ENOMEM;
    }
    off = (size_t)snprintf(
        d->qemu_arg, sz,
        "dbus-vmstate,id=" ORCH_DBUS_OBJECT_ID ",addr=%s,id-list=", addr);
    free(addr);
    for (size_t i = 0; i < d->n_helpers; i++)
        off += (size_t)snprintf(d->qemu_arg + off, sz - off, "%s%s",
                                i ? ",," : "", d->helpers[i].id);
    d->qemu_args[0] = "-object";
    d->qemu_args[1] = d->qemu_arg;
    d->qemu_args[2] = NULL;
    return 0;
}

static char **env_with_address(const char *addr)
{
    size_t n = 0, j = 0;
    char **env;

    while (environ[n])
        n++;
    env = calloc(n + 2, sizeof(char *));
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "DBUS_SESSION_BUS_ADDRESS=", 25))
            env[j++] = environ[i];
    }
    if (asprintf(&env[j], "DBUS_SESSION_BUS_ADDRESS=%s", addr) < 0) {
        free(env);
        return NULL;
    }
    return env;
}

/* New object, helpers parsed; no process yet. */
static int dbus_new(const json_t *helpers, struct orch_dbus **ret,
                    struct orch_dbus_error *err)
{
    struct orch_dbus *d = calloc(1, sizeof(*d));
    int rc;

    *ret = NULL;
    if (!d)
        return -ENOMEM;
    d->bus_pid = -1;
    d->check_pid = -1;
    d->check_fd = -1;
    d->qemu_args[0] = NULL;
    rc = helpers_parse(helpers, true, &d->helpers, &d->n_helpers, err);
    if (rc < 0) {
        orch_dbus_free(d);
        return rc;
    }
    *ret = d;
    return 0;
}

/* Start the bus (bounded wait for its address) and spawn the helpers. */
static int launch(struct orch_dbus *d, const char *state_dir, uint64_t deadline,
                  struct orch_dbus_error *err)
{
    char **env = NULL;
    int rc;

    if ((size_t)snprintf(d->sock_path, sizeof(d->sock_path), "%s/dbus.sock",
                         state_dir) >= sizeof(d->sock_path) ||
        (size_t)snprintf(d->conf_path, sizeof(d->conf_path), "%s/dbus.conf",
                         state_dir) >= sizeof(d->conf_path)) {
        d->sock_path[0] = d->conf_path[0] = '\0';
        return fail(err, NULL, -ENAMETOOLONG,
                    "dbus: state directory %s too long for a socket path",
                    state_dir);
    }
    unlink(d->sock_path);
    rc = bus_start(d, deadline, err);
    if (rc < 0)
        return rc;
    env = env_with_address(d->address);
    if (!env)
        return -ENOMEM;
    for (size_t i = 0; i < d->n_helpers; i++) {
        rc = spawn(d->helpers[i].argv, env, -1, -1, false, &d->helpers[i].pid);
        if (rc < 0) {
            fail(err, d->helpers[i].id, rc, "helper \"%s\": %s: %s",
                 d->helpers[i].id, d->helpers[i].argv[0], colo_strerror(rc));
            break;
        }
    }
    for (size_t j = 0; env[j]; j++) {
        if (!strncmp(env[j], "DBUS_SESSION_BUS_ADDRESS=", 25))
            free(env[j]);
    }
    free(env);
    return rc;
}

/*
 * Wait until every Id is on the bus. dbus-send cannot wait for
 * NameOwnerChanged, so this retries with a growing pause (5..100 ms)
 * spent in poll() on the helpers' pidfds: a helper that exits ends the
 * wait at once (-COLO_EHELPER; the parent knows the exit status). Runs in
 * the caller (orch_dbus_start) or in the job child (orch_dbus_start_async).
 */
static int wait_ids(struct orch_dbus *d, uint64_t deadline, uint32_t timeout_ms,
                    struct orch_dbus_error *err)
{
    unsigned backoff = 5;
    int rc;

    for (;;) {
        struct pollfd pfds[ORCH_DBUS_MAX_HELPERS];
        int ms, n;

        rc = check(d, 0, deadline, timeout_ms, false, err);
        /* A query cut by the overall deadline: the final check decides. */
        if (rc != -ENOENT && !(rc == -ETIMEDOUT && remaining_ms(deadline) == 0))
            return rc;
        ms = remaining_ms(deadline);
        if (ms == 0) {
            rc = check(d, 0, now_ms() + 2000, timeout_ms, true, err);
            if (rc == -ENOENT && err)
                snprintf(err->text + strlen(err->text),
                         sizeof(err->text) - strlen(err->text),
                         " (after %u ms)", timeout_ms);
            return rc;
        }
        for (size_t i = 0; i < d->n_helpers; i++) {
            pfds[i].fd = (int)syscall(SYS_pidfd_open, d->helpers[i].pid, 0);
            pfds[i].events = POLLIN;
        }
        n = poll(pfds, d->n_helpers, ms < (int)backoff ? ms : (int)backoff);
        rc = 0;
        for (size_t i = 0; i < d->n_helpers; i++) {
            if (n > 0 && (pfds[i].revents & POLLIN) && rc == 0)
                rc = fail(err, d->helpers[i].id, -COLO_EHELPER,
                          "helper \"%s\" exited", d->helpers[i].id);
            colo_close(&pfds[i].fd);
        }
        if (rc < 0)
            return rc;
        if (backoff < 100)
            backoff *= 2;
    }
}

int orch_dbus_start(const char *state_dir, const json_t *helpers,
                    uint32_t timeout_ms, struct orch_dbus **ret,
                    struct orch_dbus_error *err)
{
    struct orch_dbus *d = NULL;
    uint64_t deadline;
    int rc;

    *ret = NULL;
    if (err)
        err->helper[0] = err->text[0] = '\0';
    if (!timeout_ms)
        timeout_ms = 10000;
    deadline = now_ms() + timeout_ms;
    rc = dbus_new(helpers, &d, err);
    if (rc < 0)
        return rc;
    if (d->n_helpers == 0) {
        *ret = d;
        return 0;
    }
    rc = launch(d, state_dir, deadline, err);
    if (rc < 0)
        goto out;
    rc = wait_ids(d, deadline, timeout_ms, err);
    if (rc == -COLO_EHELPER)
        helpers_alive(d, err); /* with the exit status */
    if (rc < 0)
        goto out;
    rc = build_qemu_args(d);
    if (rc < 0)
        goto out;
    *ret = d;
    d = NULL;
out:
    orch_dbus_free(d);
    return rc;
}

void orch_dbus_free(struct orch_dbus *d)
{
    if (!d)
        return;
    if (d->check_ev)
        event_free(d->check_ev);
    kill_reap(&d->check_pid, NULL);
    colo_close(&d->check_fd);
    for (size_t i = 0; i < d->n_helpers; i++)
        kill_reap(&d->helpers[i].pid, NULL);
    kill_reap(&d->bus_pid, NULL);
    if (d->sock_path[0])
        unlink(d->sock_path);
    if (d->conf_path[0])
        unlink(d->conf_path);
    helpers_free(d->helpers, d->n_helpers);
    free(d->qemu_arg);
    free(d);
}

int orch_dbus_active(const struct orch_dbus *d)
{
    return d && d->n_helpers > 0;
}

const char *orch_dbus_address(const struct orch_dbus *d)
{
    return orch_dbus_active(d) ? d->address : NULL;
}

const char *const *orch_dbus_qemu_args(const struct orch_dbus *d)
{
    return d->qemu_args;
}

size_t orch_dbus_id_count(const struct orch_dbus *d)
{
    return d ? d->n_helpers : 0;
}

const char *orch_dbus_id(const struct orch_dbus *d, size_t i)
{
    return d && i < d->n_helpers ? d->helpers[i].id : NULL;
}

int orch_dbus_compare(const struct orch_dbus *d, const json_t *peer_helpers,
                      struct orch_dbus_error *err)
{
    struct helper *peer = NULL;
    size_t n = 0, i, j;
    int rc;

    if (err)
        err->helper[0] = err->text[0] = '\0';
    rc = helpers_parse(peer_helpers, false, &peer, &n, err);
    if (rc < 0)
        return rc;
    for (i = 0; i < d->n_helpers; i++) {
        for (j = 0; j < n && strcmp(peer[j].id, d->helpers[i].id); j++)
            ;
        if (j == n) {
            rc = fail(err, d->helpers[i].id, -ENOENT,
                      "helper \"%s\" is missing on the peer", d->helpers[i].id);
            goto out;
        }
    }
    for (j = 0; j < n; j++) {
        for (i = 0; i < d->n_helpers && strcmp(peer[j].id, d->helpers[i].id);
             i++)
            ;
        if (i == d->n_helpers) {
            rc = fail(err, peer[j].id, -ENOENT,
                      "helper \"%s\" is missing here (the peer has it)",
                      peer[j].id);
            goto out;
        }
    }
    rc = 0;
out:
    helpers_free(peer, n);
    return rc;
}

int orch_dbus_check(struct orch_dbus *d, unsigned flags, uint32_t timeout_ms,
                    struct orch_dbus_error *err)
{
    if (err)
        err->helper[0] = err->text[0] = '\0';
    if (!orch_dbus_active(d))
        return 0;
    if (!timeout_ms)
        timeout_ms = 5000;
    return check(d, flags, now_ms() + timeout_ms, timeout_ms, true, err);
}

/* ---- asynchronous check ----------------------------------------------------
 */

struct check_result {
    int rc;
    struct orch_dbus_error err;
};

/* The result arrived (EV_READ), the child died (EOF) or the deadline
 * passed (EV_TIMEOUT). */
static void check_done(evutil_socket_t fd, short what, void *arg)
{
    struct orch_dbus *d = arg;
    struct check_result res = {0};
    orch_dbus_check_cb cb = d->check_cb;
    void *cb_arg = d->check_arg;
    struct orch_dbus_error alive_err;

    (void)fd;
    if (what & EV_TIMEOUT) {
        res.rc = fail(&res.err, NULL, -ETIMEDOUT,
                      "dbus: the helper check did not finish in time");
    } else if (d->n_helpers == 0) {
        res.rc = 0;
    } else if (colo_read_all(d->check_fd, &res, sizeof(res)) < 0) {
        res.rc = fail(&res.err, NULL, -COLO_EHELPER,
                      "dbus: the helper check process died");
    }
    res.err.helper[sizeof(res.err.helper) - 1] = '\0';
    res.err.text[sizeof(res.err.text) - 1] = '\0';
    event_free(d->check_ev);
    d->check_ev = NULL;
    kill_reap(&d->check_pid, NULL); /* it is exiting or done */
    colo_close(&d->check_fd);
    d->check_cb = NULL;
    /* The child cannot reap our helpers: see whether one exited. */
    if (res.rc != 0 && helpers_alive(d, &alive_err) < 0) {
        res.rc = -COLO_EHELPER;
        res.err = alive_err;
    }
    if (d->check_is_start && res.rc == 0 && d->n_helpers > 0)
        res.rc = build_qemu_args(d);
    d->check_is_start = false;
    cb(d, res.rc, &res.err, cb_arg);
}

static int job_start(struct orch_dbus *d, struct event_base *base,
                     bool is_start, unsigned flags, uint32_t timeout_ms,
                     orch_dbus_check_cb cb, void *arg)
{
    struct timeval tv;
    int p[2] = {-1, -1};
    pid_t ppid = getpid(), pid;

    if (d->check_cb)
        return -EBUSY;
    if (d->n_helpers == 0) {
        /* Nothing to check: answer from the loop all the same. */
        d->check_ev = event_new(base, -1, 0, check_done, d);
        if (!d->check_ev)
            return -ENOMEM;
        event_active(d->check_ev, EV_READ, 0);
        d->check_cb = cb;
        d->check_arg = arg;
        d->check_is_start = is_start;
        return 0;
    }
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    pid = fork();
    if (pid < 0) {
        int rc = -errno;

        colo_close(&p[0]);
        colo_close(&p[1]);
        return rc;
    }
    if (pid == 0) {
        struct check_result res = {0};

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != ppid)
            _exit(127);
        if (is_start)
            res.rc = wait_ids(d, now_ms() + timeout_ms, timeout_ms, &res.err);
        else
            res.rc = check(d, flags, now_ms() + timeout_ms, timeout_ms, true,
                           &res.err);
        /* < PIPE_BUF: one atomic write */
        _exit(colo_write_all(p[1], &res, sizeof(res)) < 0 ? 1 : 0);
    }
    colo_close(&p[1]);
    d->check_pid = pid;
    d->check_fd = p[0];
    d->check_ev = event_new(base, p[0], EV_READ, check_done, d);
    if (!d->check_ev) {
        kill_reap(&d->check_pid, NULL);
        colo_close(&d->check_fd);
        return -ENOMEM;
    }
    /* The child has its own deadline; this one is for a stuck child
     * (wait_ids() may add a final 2 s query). */
    tv = colo_ms_to_tv(timeout_ms + 4000);
    event_add(d->check_ev, &tv);
    d->check_cb = cb;
    d->check_arg = arg;
    d->check_is_start = is_start;
    return 0;
}

int orch_dbus_check_start(struct orch_dbus *d, struct event_base *base,
                          unsigned flags, uint32_t timeout_ms,
                          orch_dbus_check_cb cb, void *arg)
{
    if (!timeout_ms)
        timeout_ms = 5000;
    return job_start(d, base, false, flags, timeout_ms, cb, arg);
}

int orch_dbus_start_async(struct event_base *base, const char *state_dir,
                          const json_t *helpers, uint32_t timeout_ms,
                          orch_dbus_check_cb cb, void *arg,
                          struct orch_dbus **ret, struct orch_dbus_error *err)
{
    struct orch_dbus *d = NULL;
    int rc;

    *ret = NULL;
    if (err)
        err->helper[0] = err->text[0] = '\0';
    if (!timeout_ms)
        timeout_ms = 10000;
    rc = dbus_new(helpers, &d, err);
    if (rc < 0)
        return rc;
    if (d->n_helpers > 0) {
        /* dbus-daemon prints its address within milliseconds */
        rc = launch(d, state_dir,
                    now_ms() + (timeout_ms < 5000 ? timeout_ms : 5000), err);
        if (rc < 0)
            goto out;
    }
    rc = job_start(d, base, true, 0, timeout_ms, cb, arg);
    if (rc < 0) {
        fail(err, NULL, rc, "dbus: cannot wait for the helpers: %s",
             colo_strerror(rc));
        goto out;
    }
    *ret = d;
    d = NULL;
out:
    orch_dbus_free(d);
    return rc;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/*
 * The dbus-vmstate section of a QEMU 7.2 device-state stream (measured):
 *   idstr "dbus-vmstate/dbus-vmstate" (length byte 0x19), instance u32,
 *   version u32, data_size u32 BE, then data_size bytes:
 *   u32 header, then entries {u32 id_len, id, u32 len, len bytes}
 *   until id_len 0 or the end (the buffer is zero-padded).
 */
int orch_dbus_check_blob(const struct orch_dbus *d, const uint8_t *blob,
                         size_t len, struct orch_dbus_error *err)
{
    static const char idstr[] = "\x19"
                                "dbus-vmstate/dbus-vmstate";
    const size_t idlen = sizeof(idstr) - 1;
    const uint8_t *p = NULL, *end;
    bool *seen = NULL;
    uint32_t size;
    int rc;

    if (err)
        err->helper[0] = err->text[0] = '\0';
    if (!orch_dbus_active(d))
        return 0;
    for (size_t i = 0; i + idlen <= len; i++) {
        if (blob[i] == 0x19 && !memcmp(blob + i, idstr, idlen)) {
            p = blob + i + idlen;
            break;
        }
    }
    if (!p || (size_t)(blob + len - p) < 12)
        return fail(err, NULL, -COLO_ESTREAM_CORRUPT,
                    "dbus: the device state has no dbus-vmstate section");
    size = get_be32(p + 8);
    p += 12;
    if (size > (size_t)(blob + len - p) || size < 4)
        return fail(err, NULL, -COLO_ESTREAM_CORRUPT,
                    "dbus: bad dbus-vmstate section size %u", size);
    end = p + size;
    p += 4;
    seen = calloc(d->n_helpers, sizeof(*seen));
    if (!seen)
        return -ENOMEM;
    while (end - p >= 4) {
        uint32_t n = get_be32(p), dlen;

        p += 4;
        if (n == 0)
            break;
        if (n > (size_t)(end - p) || (size_t)(end - p) - n < 4) {
            rc = fail(err, NULL, -COLO_ESTREAM_CORRUPT,
                      "dbus: truncated dbus-vmstate entry");
            goto out;
        }
        for (size_t i = 0; i < d->n_helpers; i++) {
            if (strlen(d->helpers[i].id) == n &&
                !memcmp(d->helpers[i].id, p, n))
                seen[i] = true;
        }
        p += n;
        dlen = get_be32(p);
        p += 4;
        if (dlen > (size_t)(end - p)) {
            rc = fail(err, NULL, -COLO_ESTREAM_CORRUPT,
                      "dbus: truncated dbus-vmstate data");
            goto out;
        }
        p += dlen;
    }
    for (size_t i = 0; i < d->n_helpers; i++) {
        if (!seen[i]) {
            rc = fail(err, d->helpers[i].id, -ENOENT,
                      "helper \"%s\": its state is not in the device state "
                      "(QEMU dropped it: Save too slow or over %u bytes)",
                      d->helpers[i].id, ORCH_DBUS_STATE_MAX);
            goto out;
        }
    }
    rc = 0;
out:
    free(seen);
    return rc;
}
