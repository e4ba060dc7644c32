/* The colo binary's command line: help, version, usage errors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int run(const char *args, char *out, size_t outsz)
{
    char cmd[512];
    FILE *p;
    size_t n;
    int st;

    snprintf(cmd, sizeof(cmd), "%s %s 2>&1", COLO_EXE, args);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    n = fread(out, 1, outsz - 1, p);
    out[n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(cli, help)
{
    char out[8192];

    cr_expect_eq(run("--help", out, sizeof(out)), 0);
    cr_expect(strstr(out, "Usage: colo") != NULL);
    cr_expect(strstr(out, "Exit codes") != NULL);
}

Test(cli, version)
{
    char out[256];

    cr_expect_eq(run("--version", out, sizeof(out)), 0);
    cr_expect(strncmp(out, "colo ", 5) == 0, "%s", out);
}

Test(cli, unknown_option_is_usage_error)
{
    char out[1024];

    cr_expect_eq(run("--no-such-option", out, sizeof(out)), 2);
    cr_expect(strstr(out, "unknown option") != NULL, "%s", out);
}

Test(cli, unknown_command_is_usage_error)
{
    char out[1024];

    cr_expect_eq(run("frobnicate", out, sizeof(out)), 2);
    cr_expect(strstr(out, "unknown command 'frobnicate'") != NULL, "%s", out);
}

Test(cli, no_command_is_usage_error)
{
    char out[8192];

    cr_expect_eq(run("", out, sizeof(out)), 2);
}
