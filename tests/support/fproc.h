/*
 * Test support for real colo processes (fault suite, job tests): run real colo
 * processes and watch their output with deadlines (poll(), never sleeps as
 * synchronization), read the test guest's counter from a RAM file, and track
 * every descendant process (QEMU) so a test can prove none is leaked.
 *
 * Every child gets PR_SET_PDEATHSIG(SIGKILL); fproc_init() also makes the
 * test a child subreaper, so a QEMU orphaned by a dying colo is reparented
 * to the test and can be seen (and reaped) here.
 */
#ifndef COLO_TESTS_FPROC_H
#define COLO_TESTS_FPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FPROC_BUF      (256 * 1024)
#define FPROC_MAX_PIDS 64

struct fproc {
    pid_t pid;  /* -1 once reaped */
    int status; /* exit code (or 128+signal) once reaped, else -1 */
    int out;    /* stdout+stderr of the child, -1 when closed */
    char *buf;  /* FPROC_BUF bytes, NUL-terminated */
    size_t len;
};

struct fenv {
    char dir[64];
    char cfg[128], key[128], pdir[128], sdir[128];
    char pram[160], sram[160];
};

uint64_t fproc_now_ms(void);
void fproc_init(void);
/* Spawn argv with extra "K=V" environment entries (NULL-terminated, may be
 * NULL). Optional netns: run under "ip netns exec NS". Returns 0 or -1. */
int fproc_spawn(struct fproc *p, char *const argv[], char *const envp_extra[]);
/* Offset just past the first match of s at or after from, or -1 on
 * deadline/EOF. */
long fproc_wait_out(struct fproc *p, const char *s, size_t from,
                    int timeout_ms);
/* Drain output for up to ms (the clock of the observation loops). */
void fproc_pump(struct fproc *p, int ms);
/* Non-blocking: true while the child runs (reaps it otherwise). */
bool fproc_alive(struct fproc *p);
/* Exit code, or -1 past the deadline. */
int fproc_wait_exit(struct fproc *p, int timeout_ms);
void fproc_reap(struct fproc *p);
void fproc_free(struct fproc *p);

/* Run "colo ARGS" to completion within timeout_ms (killed after);
 * returns the exit code, -1 on deadline. out gets stdout+stderr. */
int fproc_colo(const char *args, char *out, size_t outsz, int timeout_ms);

/* The guest counter in a RAM file (0 when unreadable). */
uint32_t fproc_counter(const char *ram_path);
/* JSON int field "key": in text, or def. */
long long fproc_json_int(const char *text, const char *key, long long def);

/* Descendants of pid (via /proc/<pid>/task/<tid>/children), added to
 * set (no duplicates); returns the new count. */
int fproc_add_descendants(pid_t pid, pid_t *set, int n, int max);
/* True if pid still exists and is not a zombie (reaps our zombies). */
bool fproc_pid_running(pid_t pid);
/* Reap any orphan zombies reparented to us (subreaper). */
void fproc_reap_orphans(void);
/* RSS in KiB and open fd count of pid; -1 on error. */
long fproc_rss_kb(pid_t pid);
int fproc_fd_count(pid_t pid);

/* Replace the line starting with prefix in $COLO_FAULTS_SUMMARY (default
 * ./faults-summary.txt) by line; other lines are kept. */
void fproc_summary(const char *prefix, const char *line);

/* Temp dir with config (name "jobvm", guest args), key and state dirs.
 * extra_json: more top-level members of the VM configuration, e.g.
 * "\"devices\": [...]" (NULL: none). */
int fenv_setup(struct fenv *e, const char *guest_cmdline);
int fenv_setup_ex(struct fenv *e, const char *guest_cmdline,
                  const char *extra_json);
/* Wait (bounded) until the guest counter in ram_path exceeds v. */
bool fproc_counter_above(const char *ram_path, uint32_t v, int timeout_ms);
void fenv_teardown(struct fenv *e);

/* COLO_EXE and the guest kernel come from the build (compile
 * definitions). */
const char *fproc_colo_exe(void);

#endif
