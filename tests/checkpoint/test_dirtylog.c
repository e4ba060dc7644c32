/*
 * Dirty tracking of the QEMU backend against a real QEMU running the test
 * guest: the soft-dirty bits of QEMU's mapping of the RAM file
 * (ckpt_mem_qemu_track) must name every page the compare scan finds, and
 * where the kernel has no soft-dirty the backend says so and keeps the
 * scan. The soft-dirty cases SKIP on such a kernel (this CI machine's);
 * nested.dirtylog runs this binary on a nested host whose kernel has it.
 */
#include "checkpoint/memory.h"

#include "common/error.h"
#include "common/timeutil.h"
#include "tguest.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG CKPT_PAGE_SIZE

static struct tguest *g;

static void need_guest(size_t dirty_mb)
{
    struct tguest_opts o = tguest_opts_default();

    if (access(tguest_kernel_path(), R_OK) != 0)
        cr_skip_test("test guest kernel not built");
    o.ram_mb = 64;
    o.dirty_mb = dirty_mb;
    cr_assert_eq(tguest_start(&o, &g), 0);
    cr_assert_eq(tguest_wait_counter_above(g, 100, 30000), 0);
}

static void fini(void)
{
    if (g)
        tguest_free(g);
    g = NULL;
}

TestSuite(dirtylog, .fini = fini, .timeout = 240);

/* Every thread of pid stopped ('T' in /proc/pid/task/N/stat)? */
static bool all_stopped(pid_t pid)
{
    char path[64], line[256];
    struct dirent *de;
    bool all = true;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    d = opendir(path);
    if (!d)
        return false;
    while (all && (de = readdir(d))) {
        FILE *f;
        char *p;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%.20s/stat", (int)pid,
                 de->d_name);
        f = fopen(path, "re");
        if (!f)
            continue; /* the thread ended */
        p = fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL;
        fclose(f);
        if (p && p[1] == ' ' && p[2] != 'T' && p[2] != 't')
            all = false;
    }
    closedir(d);
    return all;
}

/* Pause the guest the hard way: every thread of QEMU stopped, nothing
 * writes guest RAM. */
static void pause_qemu(void)
{
    uint64_t end = colo_now_ns() + 10000000000ull;

    cr_assert_eq(kill(g->pid, SIGSTOP), 0);
    while (!all_stopped(g->pid)) {
        cr_assert_lt(colo_now_ns(), end, "QEMU did not stop in 10 s");
        usleep(1000);
    }
}

static void resume_qemu(void)
{
    cr_assert_eq(kill(g->pid, SIGCONT), 0);
}

Test(dirtylog, probe_answers_the_same_and_says_why)
{
    char why1[256] = "", why2[256] = "";
    int a = ckpt_mem_softdirty_available(why1, sizeof(why1));
    int b = ckpt_mem_softdirty_available(why2, sizeof(why2));

    cr_assert(a == 0 || a == 1);
    cr_assert_eq(a, b);
    if (!a) {
        cr_assert_neq(why1[0], 0, "no reason given");
        cr_assert_str_eq(why1, why2);
    }
    printf("soft-dirty on this kernel: %s%s%s\n", a ? "yes" : "no",
           a ? "" : ": ", a ? "" : why1);
}

Test(dirtylog, track_picks_a_method_and_captures_keep_working)
{
    struct ckpt_memory *m, *s;
    struct ckpt_pageset ps;
    char why[256];
    int rc, avail = ckpt_mem_softdirty_available(NULL, 0);

    need_guest(0);
    cr_assert_eq(
        ckpt_mem_qemu_open(g->ram_path, g->ram_size, CKPT_MEM_PRIMARY, &m), 0);
    cr_assert_str_eq(ckpt_mem_dirty_method(m), "compare");
    /* Bad arguments. */
    cr_assert_eq(ckpt_mem_qemu_track(m, 0, 0, why, sizeof(why)), -EINVAL);
    cr_assert_eq(
        ckpt_mem_qemu_open(g->ram_path, g->ram_size, CKPT_MEM_SECONDARY, &s),
        0);
    cr_assert_eq(ckpt_mem_qemu_track(s, g->pid, 0, why, sizeof(why)), -EINVAL);
    cr_assert_str_eq(ckpt_mem_dirty_method(s), "none");
    ckpt_memory_free(s);
    /* A process that does not map the file (this one maps it, but not
     * QEMU's way: only where soft-dirty exists does that get checked). */
    cr_assert_eq(ckpt_mem_qemu_track(m, 999999999, 0, why, sizeof(why)), 0);
    cr_assert_neq(why[0], 0);
    cr_assert_str_eq(ckpt_mem_dirty_method(m), "compare");
    /* Asked for the scan. */
    cr_assert_eq(
        ckpt_mem_qemu_track(m, g->pid, CKPT_TRACK_COMPARE, why, sizeof(why)),
        0);
    cr_assert_str_eq(ckpt_mem_dirty_method(m), "compare");

    rc = ckpt_mem_qemu_track(m, g->pid, 0, why, sizeof(why));
    cr_assert_eq(rc, avail, "track %d, probe %d (%s)", rc, avail, why);
    if (rc) {
        cr_assert_str_eq(ckpt_mem_dirty_method(m), "soft-dirty");
        cr_assert_null(ckpt_mem_qemu_shadow(m), "the shadow was kept");
    } else {
        cr_assert_str_eq(ckpt_mem_dirty_method(m), "compare");
        cr_assert_not_null(ckpt_mem_qemu_shadow(m));
        cr_assert_neq(why[0], 0);
    }
    ckpt_pageset_init(&ps);
    pause_qemu();
    cr_assert_eq(m->ops->capture(m, 0, &ps, NULL), 0);
    cr_assert(ps.full);
    cr_assert_gt(ps.count, 0); /* the guest's kernel is not zero */
    /* A full set holds every non-zero page, with RAM's bytes. */
    for (size_t i = 0; i < ps.count; i++)
        cr_assert_eq(memcmp(ckpt_pageset_page(&ps, i),
                            g->ram + (ps.pfns[i] << CKPT_PAGE_SHIFT), PG),
                     0);
    resume_qemu();
    ckpt_pageset_dispose(&ps);
    ckpt_memory_free(m);
}

static bool in_set(const uint64_t *bits, uint64_t pfn)
{
    return bits[pfn / 64] & (1ull << (pfn % 64));
}

Test(dirtylog, softdirty_contains_every_page_the_scan_finds)
{
    struct ckpt_memory *sd, *cmp;
    struct ckpt_pageset a, b;
    char why[256];
    uint64_t *bits;
    size_t extra = 0, found = 0;

    if (!ckpt_mem_softdirty_available(why, sizeof(why)))
        cr_skip_test("%s", why);
    need_guest(4); /* the guest rewrites 4 MiB over and over */
    cr_assert_eq(
        ckpt_mem_qemu_open(g->ram_path, g->ram_size, CKPT_MEM_PRIMARY, &sd), 0);
    cr_assert_eq(
        ckpt_mem_qemu_open(g->ram_path, g->ram_size, CKPT_MEM_PRIMARY, &cmp),
        0);
    cr_assert_eq(ckpt_mem_qemu_track(sd, g->pid, 0, why, sizeof(why)), 1, "%s",
                 why);
    ckpt_pageset_init(&a);
    ckpt_pageset_init(&b);
    bits = calloc((g->ram_size / PG + 63) / 64, sizeof(*bits));
    cr_assert_not_null(bits);
    pause_qemu();
    cr_assert_eq(sd->ops->capture(sd, 0, &a, NULL), 0);
    cr_assert_eq(cmp->ops->capture(cmp, 0, &b, NULL), 0);
    cr_assert(a.full && b.full);
    cr_assert_eq(a.count, b.count, "full sets differ: %zu vs %zu", a.count,
                 b.count);
    resume_qemu();
    for (int round = 0; round < 8; round++) {
        uint32_t passes = tguest_passes(g);

        cr_assert_eq(tguest_wait_passes_above(g, passes, 30000), 0);
        pause_qemu();
        cr_assert_eq(sd->ops->capture(sd, 0, &a, NULL), 0);
        cr_assert_eq(cmp->ops->capture(cmp, 0, &b, NULL), 0);
        cr_assert(!a.full && !b.full);
        memset(bits, 0, (g->ram_size / PG + 63) / 64 * sizeof(*bits));
        for (size_t i = 0; i < a.count; i++) {
            bits[a.pfns[i] / 64] |= 1ull << (a.pfns[i] % 64);
            /* by value: what the guest had at the pause */
            cr_assert_eq(memcmp(ckpt_pageset_page(&a, i),
                                g->ram + (a.pfns[i] << CKPT_PAGE_SHIFT), PG),
                         0);
        }
        for (size_t i = 0; i < b.count; i++)
            cr_assert(in_set(bits, b.pfns[i]),
                      "round %d: page %llu changed (scan) but is not "
                      "soft-dirty",
                      round, (unsigned long long)b.pfns[i]);
        cr_assert_geq(a.count, b.count);
        extra += a.count - b.count;
        found += b.count;
        resume_qemu();
    }
    cr_assert_gt(found, 0, "the guest wrote nothing the scan found");
    printf("soft-dirty: %zu pages the scan found, %zu more (rewritten with "
           "the same bytes)\n",
           found, extra);
    free(bits);
    ckpt_pageset_dispose(&a);
    ckpt_pageset_dispose(&b);
    ckpt_memory_free(sd);
    ckpt_memory_free(cmp);
}

/* Verify mode checks each capture against the scan, and it can fail: a
 * write through colo's own mapping (not QEMU's page tables) is a page the
 * bits cannot see. */
Test(dirtylog, verify_mode_passes_and_catches_a_write_the_bits_miss)
{
    struct ckpt_memory *m;
    struct ckpt_pageset ps;
    char why[256];

    if (!ckpt_mem_softdirty_available(why, sizeof(why)))
        cr_skip_test("%s", why);
    need_guest(4);
    cr_assert_eq(
        ckpt_mem_qemu_open(g->ram_path, g->ram_size, CKPT_MEM_PRIMARY, &m), 0);
    cr_assert_eq(
        ckpt_mem_qemu_track(m, g->pid, CKPT_TRACK_VERIFY, why, sizeof(why)), 1,
        "%s", why);
    cr_assert_str_eq(ckpt_mem_dirty_method(m), "soft-dirty+verify");
    cr_assert(ckpt_mem_capture_needs_pause(m) == false); /* full next */
    ckpt_pageset_init(&ps);
    pause_qemu();
    cr_assert_eq(m->ops->capture(m, 0, &ps, NULL), 0);
    resume_qemu();
    cr_assert(ckpt_mem_capture_needs_pause(m));
    for (int round = 0; round < 5; round++) {
        uint32_t passes = tguest_passes(g);

        cr_assert_eq(tguest_wait_passes_above(g, passes, 30000), 0);
        pause_qemu();
        cr_assert_eq(m->ops->capture(m, 0, &ps, NULL), 0);
        cr_assert_gt(ps.count, 0);
        resume_qemu();
    }
    cr_assert_eq(ckpt_mem_qemu_missed(m), 0);
    pause_qemu();
    /* The last page of RAM: the guest's dirty loop stays below it. */
    g->ram[g->ram_size - PG] ^= 0x5a;
    cr_assert_eq(m->ops->capture(m, 0, &ps, NULL), -COLO_EINTERNAL);
    resume_qemu();
    cr_assert_eq(ckpt_mem_qemu_missed(m), 1);
    ckpt_pageset_dispose(&ps);
    ckpt_memory_free(m);
}
