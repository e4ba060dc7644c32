/*
 * main() of every Criterion test binary (colo_add_criterion_test links it
 * in; it replaces Criterion's weak default main).
 *
 * Skips are per case: a case that cannot run here calls cr_skip_test()
 * with the reason. After the run:
 *   - each skipped case is listed with its reason ("skipped: ...");
 *   - a binary in which every case was skipped, and none failed, prints
 *     one "SKIP: ..." line and exits 77, which ctest counts as skipped
 *     (SKIP_RETURN_CODE 77, tests/CMakeLists.txt);
 *   - otherwise the exit status is Criterion's: 0 only when no case failed
 *     or crashed. A failing binary is never counted as skipped, whatever
 *     it printed.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#define TMAIN_SKIP_EXIT 77

static struct {
    bool seen;
    size_t tests, skipped, bad;
    char first_reason[256];
} S;

ReportHook(POST_ALL)(struct criterion_global_stats *st)
{
    S.seen = true;
    S.tests = st->nb_tests;
    S.skipped = st->tests_skipped;
    S.bad = st->tests_failed + st->tests_crashed;
    for (struct criterion_suite_stats *ss = st->suites; ss; ss = ss->next)
        for (struct criterion_test_stats *ts = ss->tests; ts; ts = ts->next) {
            const char *why;

            /* Cases left out by --filter are "skipped" without a reason. */
            if (ts->test_status != CR_STATUS_SKIPPED || !ts->message ||
                !*ts->message)
                continue;
            why = ts->message;
            printf("skipped: %s::%s: %s\n", ss->suite->name, ts->test->name,
                   why);
            if (!S.first_reason[0])
                snprintf(S.first_reason, sizeof(S.first_reason), "%s", why);
        }
    fflush(stdout);
}

int main(int argc, char *argv[])
{
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;

    /* The links' contract (transport/link.h): the process ignores SIGPIPE,
     * as colo's main does. Every test process inherits it, so a write to a
     * peer that just died (the secondary's ACK after a primary's fault,
     * OpenSSL's socket BIO writes without MSG_NOSIGNAL) is an EPIPE error,
     * not a crash. engine::failover_after_end crashed that way under load. */
    signal(SIGPIPE, SIG_IGN);
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    if (result == 0 && S.seen && S.bad == 0 && S.tests > 0 &&
        S.skipped == S.tests) {
        printf("SKIP: all %zu cases skipped (%s)\n", S.tests,
               S.first_reason[0] ? S.first_reason : "filtered out");
        return TMAIN_SKIP_EXIT;
    }
    return result;
}
