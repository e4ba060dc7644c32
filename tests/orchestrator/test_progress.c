/*
 * The progress bar of `colo migrate` (orchestrator/progress.h): drawn on a
 * terminal (a pseudo-terminal here, forkpty), absent when the output is a
 * pipe and with --json. One guest migrates three times between real colo
 * processes and real QEMU on 127.0.0.1: pty, pipe, pty with --json. Every
 * wait has a deadline. And the bar's numbers from synthetic events.
 */
#include "fproc.h"
#include "progress.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int start_receiver(struct fproc *s, const char *dir, const char *key)
{
    char *argv[] = {COLO_EXE,      "receive",     "--listen",
                    "127.0.0.1:0", "--state-dir", (char *)dir,
                    "--key-file",  (char *)key,   NULL};
    long off;

    cr_assert_eq(fproc_spawn(s, argv, NULL), 0);
    off = fproc_wait_out(s, "waiting for a primary on 127.0.0.1:", 0, 20000);
    cr_assert_geq(off, 0, "receiver did not listen:\n%s", s->buf);
    return atoi(s->buf + off);
}

/* Run argv on a pseudo-terminal (120 columns) until it exits or
 * timeout_ms passes (then it is killed); out gets everything it wrote.
 * Returns the exit code, -1 past the deadline. */
static int run_on_pty(char *const argv[], char *out, size_t outsz,
                      int timeout_ms)
{
    struct winsize ws = {.ws_row = 24, .ws_col = 120};
    uint64_t end = fproc_now_ms() + (uint64_t)timeout_ms;
    size_t len = 0;
    int fd, status = -1;
    pid_t pid = forkpty(&fd, NULL, NULL, &ws);

    if (pid == 0) {
        /* No Criterion call here: it would report from a process the
         * runner does not know. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(argv[0], argv);
        _exit(127);
    }
    cr_assert_geq(pid, 0, "forkpty: %s", strerror(errno));
    for (;;) {
        uint64_t now = fproc_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (now >= end)
            break;
        if (poll(&p, 1, (int)(end - now)) <= 0)
            continue;
        n = read(fd, out + len, outsz - 1 - len);
        if (n <= 0) /* EIO: the child closed the terminal */
            break;
        len += (size_t)n;
        if (len == outsz - 1)
            break;
    }
    out[len] = '\0';
    close(fd);
    while (fproc_now_ms() < end + 5000) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        poll(NULL, 0, 10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static void migrate_on_pty(const char *from_dir, int port, bool json, char *out,
                           size_t outsz)
{
    char target[64];
    char *argv[] = {COLO_EXE,         json ? "--json" : "--quiet",
                    "migrate",        "jobvm",
                    target,           "--state-dir",
                    (char *)from_dir, NULL};
    int rc;

    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    rc = run_on_pty(argv, out, outsz, 90000);
    cr_assert_eq(rc, 0, "migrate on a terminal failed (%d):\n%s", rc, out);
}

/* The bar's marks: a line redrawn in place (\r, erase to end of line)
 * with the rate, the ETA, the dirty rate and the round. */
static bool has_bar(const char *out)
{
    return strstr(out, "\r[") && strstr(out, "\033[K") &&
           strstr(out, " MiB/s") && strstr(out, "ETA ") &&
           strstr(out, "dirty ") && strstr(out, "round ");
}

Test(progress, bar_on_terminal_not_in_pipe_or_json, .timeout = 300)
{
    static char out[256 * 1024];
    struct fenv e;
    struct fproc p, s1, p2, s2;
    char tdir[160];
    char args[512];
    const char *line;
    int port, rc;

    /* fenv boots the guest with qboot when it is there. */
    cr_assert_eq(fenv_setup_ex(&e, "dirty=4 rate=20", NULL), 0);
    snprintf(tdir, sizeof(tdir), "%s/t", e.dir);
    {
        char *argv[] = {COLO_EXE, "start",      e.cfg, "--state-dir",
                        e.pdir,   "--key-file", e.key, NULL};

        cr_assert_eq(fproc_spawn(&p, argv, NULL), 0);
    }
    cr_assert_geq(fproc_wait_out(&p, "running (QEMU pid", 0, 30000), 0,
                  "primary did not start:\n%s", p.buf);
    cr_assert(fproc_counter_above(e.pram, 0, 20000), "guest not running");

    /* 1. On a terminal: the bar, then the result line below it. */
    port = start_receiver(&s1, e.sdir, e.key);
    migrate_on_pty(e.pdir, port, false, out, sizeof(out));
    cr_expect(has_bar(out), "no progress bar on a terminal:\n%s", out);
    cr_expect(strstr(out, "\r\n") != NULL && strstr(out, "migrated to"), "%s",
              out);
    cr_assert_geq(fproc_wait_out(&s1, "now runs here", 0, 20000), 0, "%s",
                  s1.buf);
    cr_expect_eq(fproc_wait_exit(&p, 20000), 0, "%s", p.buf);

    /* 2. Into a pipe: plain lines, no bar. */
    port = start_receiver(&p2, tdir, e.key);
    snprintf(args, sizeof(args), "migrate jobvm 127.0.0.1:%d --state-dir %s",
             port, e.sdir);
    rc = fproc_colo(args, out, sizeof(out), 90000);
    cr_assert_eq(rc, 0, "migrate into a pipe failed (%d):\n%s", rc, out);
    cr_expect(strstr(out, "migrated to") != NULL, "%s", out);
    cr_expect(!strchr(out, '\r') && !strstr(out, "\033[") &&
                  !strstr(out, "ETA "),
              "a bar in a pipe:\n%s", out);
    cr_assert_geq(fproc_wait_out(&p2, "now runs here", 0, 20000), 0, "%s",
                  p2.buf);
    cr_expect_eq(fproc_wait_exit(&s1, 20000), 0, "%s", s1.buf);

    /* 3. --json on a terminal: JSON lines only. */
    port = start_receiver(&s2, e.sdir, e.key);
    migrate_on_pty(tdir, port, true, out, sizeof(out));
    cr_expect(!strstr(out, "\033[") && !strstr(out, "ETA "),
              "a bar with --json:\n%s", out);
    for (line = out; *line; line = strchr(line, '\n') + 1) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);

        /* The terminal turns \n into \r\n. */
        if (n && line[n - 1] == '\r')
            n--;
        if (n && strncmp(line, "colo[", 5) != 0)
            cr_expect(line[0] == '{' && line[n - 1] == '}',
                      "not a JSON line: '%.*s'", (int)n, line);
        if (!nl)
            break;
    }
    cr_assert_geq(fproc_wait_out(&s2, "now runs here", 0, 20000), 0, "%s",
                  s2.buf);
    cr_expect_eq(fproc_wait_exit(&p2, 20000), 0, "%s", p2.buf);

    snprintf(args, sizeof(args), "stop jobvm --state-dir %s", e.sdir);
    cr_expect_eq(fproc_colo(args, out, sizeof(out), 30000), 0, "%s", out);
    cr_expect_eq(fproc_wait_exit(&s2, 20000), 0, "%s", s2.buf);
    fproc_free(&p);
    fproc_free(&s1);
    fproc_free(&p2);
    fproc_free(&s2);
    fenv_teardown(&e);
}

/* The bar's numbers from synthetic events (no QEMU): rate between
 * samples, dirty rate from a round's pages over the previous round's
 * duration, ETA = what is left / (rate - dirty rate). */
static json_t *ev(const char *name, long long bytes, long long pages,
                  long long rounds)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I}", "event", name, "bytes_sent",
                     (json_int_t)bytes, "dirty_pages_last", (json_int_t)pages,
                     "rounds", (json_int_t)rounds, "ram_bytes",
                     (json_int_t)(64 << 20));
}

static bool feed(struct orch_progress *pg, json_t *e, uint64_t ms)
{
    bool r = orch_progress_event(pg, e, ms * 1000000ull);

    json_decref(e);
    return r;
}

Test(progress, numbers_from_events)
{
    char *buf = NULL, line[256];
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    struct orch_progress pg;

    cr_assert_not_null(f);
    orch_progress_init(&pg, f, false);
    /* Round 1: 16384 pages (64 MiB), 0 .. 32 MiB in 320 ms (100 MiB/s). */
    cr_assert(feed(&pg, ev("paired", 0, 16384, 1), 1000));
    cr_assert(feed(&pg, ev("progress", 32 << 20, 16384, 1), 1320));
    orch_progress_format(&pg, 0, line, sizeof(line));
    cr_expect(strstr(line, "[########--------]") != NULL, "%s", line);
    cr_expect(strstr(line, "32.0 MiB  100.0 MiB/s  ETA 0:00") != NULL, "%s",
              line);
    cr_expect(strstr(line, "dirty -- MiB/s  round 1") != NULL, "%s", line);
    /* Round 2 at 2000 ms: 2560 pages (10 MiB) dirtied in the 1 s round 1
     * took: 10 MiB/s. Nothing of it sent yet. */
    cr_assert(feed(&pg, ev("round", 64 << 20, 2560, 2), 2000));
    orch_progress_format(&pg, 0, line, sizeof(line));
    cr_expect(strstr(line, "[----------------] 64.0 MiB") != NULL, "%s", line);
    cr_expect(strstr(line, "dirty 10.0 MiB/s  round 2") != NULL, "%s", line);
    /* 10 MiB left at 100 - 10 MiB/s: 0.11 s. */
    cr_expect(strstr(line, "ETA 0:00") != NULL, "%s", line);
    /* The guest dirties faster than the link sends: no ETA. */
    pg.dirty_bps = 200.0 * 1048576;
    orch_progress_format(&pg, 0, line, sizeof(line));
    cr_expect(strstr(line, "ETA --:--") != NULL, "%s", line);
    /* Other events are the caller's to print; the bar line ends. */
    cr_expect(!feed(&pg, ev("checkpoint", 0, 0, 0), 3000));
    orch_progress_end(&pg);
    fclose(f);
    cr_expect(buf[0] == '\r' && buf[len - 1] == '\n', "%s", buf);
    cr_expect(strstr(buf, "\033[K") != NULL);
    free(buf);
}

/* protect's full sync: all of RAM until the engine says how many pages
 * the first checkpoint captured; its ack ends the bar. */
Test(progress, protect_full_sync)
{
    char *buf = NULL, line[256];
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    struct orch_progress pg;

    cr_assert_not_null(f);
    orch_progress_init(&pg, f, true);
    cr_assert(feed(&pg, ev("paired", 0, 0, 0), 1000));
    cr_assert(feed(&pg, ev("progress", 8 << 20, 0, 0), 1250));
    orch_progress_format(&pg, 0, line, sizeof(line));
    /* 8 of 64 MiB of RAM. */
    cr_expect(strstr(line, "[##--------------] 8.0 MiB") != NULL, "%s", line);
    cr_expect(strstr(line, "full sync") != NULL, "%s", line);
    /* Captured: 4096 pages (16 MiB) to send, 8 of them sent. */
    cr_assert(feed(&pg, ev("progress", 8 << 20, 4096, 0), 1500));
    orch_progress_format(&pg, 0, line, sizeof(line));
    cr_expect(strstr(line, "[########--------]") != NULL, "%s", line);
    /* The first checkpoint: the bar is erased, the caller prints it. */
    cr_expect(!feed(&pg, ev("checkpoint", 16 << 20, 4096, 0), 1600));
    cr_expect(!feed(&pg, ev("progress", 16 << 20, 4096, 0), 1700));
    orch_progress_end(&pg);
    fclose(f);
    cr_expect(len > 4 && strcmp(buf + len - 4, "\r\033[K") == 0,
              "the bar is not erased: %s", buf);
    free(buf);
}
