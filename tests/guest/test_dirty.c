/*
 * guest.dirty: the test guest's dirty mode (multiboot cmdline "dirty=<MiB>
 * rate=<MiB/s>") rewrites its region with non-zero data that changes every
 * pass, counts passes, keeps the counter going, and honours the rate.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/timeutil.h"
#include "tguest.h"

#define PAGE 4096

/* The inverse of TGUEST_DIRTY_KEY_MUL mod 2^32 (Newton's iteration). */
static uint32_t key_mul_inverse(void)
{
    uint32_t m = TGUEST_DIRTY_KEY_MUL, x = m;

    for (int i = 0; i < 5; i++)
        x *= 2 - m * x;
    return x;
}

/* The pass number whose pattern fills the page at guest address a, or -1
 * when its u32s do not share one pass. */
static int page_pass(const uint8_t *page, uint32_t a)
{
    uint32_t v, key, inv = key_mul_inverse();

    memcpy(&v, page, 4);
    key = (v ^ a) & ~1u;
    for (uint32_t off = 0; off < PAGE; off += 4) {
        memcpy(&v, page + off, 4);
        if (!(v & 1) || ((v ^ (a + off)) & ~1u) != key)
            return -1;
    }
    /* Bit 0 of the key is lost to the "| 1": p is key*inv or (key|1)*inv;
     * the even/odd choice follows from the key's bit 0 = p's bit 0. */
    for (uint32_t k = key; k <= (key | 1); k++) {
        uint32_t p = k * inv;
        if ((p & 1) == (k & 1) && p < 0x10000000)
            return (int)p;
    }
    return -1;
}

static void dirty_changes_pages(bool force_tcg, size_t mb)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = NULL;
    size_t len = mb << 20;
    uint8_t *snap;
    uint32_t pb, p0, c0;
    size_t changed = 0, zero_at = SIZE_MAX, split = 0, bad = 0;

    o.force_tcg = force_tcg;
    o.dirty_mb = mb;
    cr_assert_eq(tguest_start(&o, &g), 0);
    cr_log_info("accel %s", g->kvm ? "kvm" : "tcg");
    cr_assert_eq(tguest_wait_passes_above(g, 0, 8000), 0);
    cr_assert_eq(tguest_magic(g), TGUEST_MAGIC);
    cr_assert_eq(tguest_mode(g), 1);
    cr_assert_eq(tguest_wait_serial(g, "colo-test-guest mode=00000001\n", 5000),
                 0);

    snap = malloc(len);
    cr_assert_not_null(snap);
    memcpy(snap, g->ram + TGUEST_DIRTY_GPA, len);
    p0 = tguest_passes(g);
    c0 = tguest_counter(g);
    /* Two more passes: every page was rewritten after the snapshot. */
    cr_assert_eq(tguest_wait_passes_above(g, p0 + 1, 8000), 0);
    cr_assert_gt(tguest_counter(g), c0);
    for (size_t off = 0; off < len; off += PAGE) {
        if (memcmp(snap + off, g->ram + TGUEST_DIRTY_GPA + off, PAGE))
            changed++;
    }
    cr_assert_eq(changed, len / PAGE, "only %zu of %zu pages changed", changed,
                 len / PAGE);
    /* Non-zero data everywhere in the region (the snapshot was taken after
     * a full pass). */
    /* (One assertion, not one per dword: --full-stats records each.) */
    for (size_t off = 0; off < len; off += 4) {
        uint32_t v;
        memcpy(&v, snap + off, 4);
        if (v == 0) {
            zero_at = off;
            break;
        }
    }
    cr_assert_eq(zero_at, SIZE_MAX, "zero dword at region offset %zu", zero_at);
    /* Stopped, each page holds one pass's pattern (see guest_abi.h): the
     * current pass P+1 below the write front, pass P above it; only the
     * page being written when the vCPU stopped mixes the two. */
    cr_assert_eq(tguest_qmp(g, "{\"execute\":\"stop\"}", 5000), 0);
    pb = tguest_passes(g);
    for (size_t off = 0; off < len; off += PAGE) {
        int pass = page_pass(g->ram + TGUEST_DIRTY_GPA + off,
                             TGUEST_DIRTY_GPA + (uint32_t)off);

        if (pass == -1)
            split++;
        else if ((uint32_t)pass < pb || (uint32_t)pass > pb + 1)
            bad++;
    }
    cr_assert_eq(bad, 0, "%zu pages hold a pass outside [%u, %u]", bad, pb,
                 pb + 1);
    cr_assert_leq(split, 1, "%zu pages mix passes", split);
    cr_assert_eq(tguest_passes(g), pb, "passes went on while stopped");
    /* Nothing beyond the region is touched. */
    cr_assert_eq(
        memcmp(g->ram + TGUEST_DIRTY_GPA + len, (uint8_t[PAGE]){0}, PAGE), 0);
    free(snap);
    tguest_free(g);
}

Test(dirty, changes_pages_default_accel, .timeout = 30)
{
    dirty_changes_pages(false, 2);
}

Test(dirty, changes_pages_tcg, .timeout = 30)
{
    dirty_changes_pages(true, 8);
}

/* rate=R MiB/s over an N MiB region gives about R/N passes per second. */
static void dirty_rate(bool force_tcg)
{
    struct tguest_opts o = tguest_opts_default();
    struct tguest *g = NULL;
    uint32_t p0, p1;
    uint64_t t0, t1;
    double mbs;

    o.force_tcg = force_tcg;
    o.dirty_mb = 1;
    o.dirty_rate_mbs = 8;
    cr_assert_eq(tguest_start(&o, &g), 0);
    cr_assert_eq(tguest_wait_passes_above(g, 0, 5000), 0);
    p0 = tguest_passes(g);
    t0 = colo_now_ns();
    cr_assert_eq(tguest_wait_passes_above(g, p0 + 7, 5000), 0);
    p1 = tguest_passes(g);
    t1 = colo_now_ns();
    mbs = (double)(p1 - p0) / ((double)(t1 - t0) / 1e9);
    cr_log_info("%s: rate=8 measured %.1f MiB/s", g->kvm ? "kvm" : "tcg", mbs);
    /* The cap is the point; the floor only says it is not stuck (a busy
     * host may slow TCG down). */
    cr_assert_lt(mbs, 12.0);
    cr_assert_gt(mbs, 1.0);
    tguest_free(g);
}

Test(dirty, rate_limited_tcg, .timeout = 30)
{
    dirty_rate(true);
}

Test(dirty, rate_limited_default_accel, .timeout = 30)
{
    dirty_rate(false);
}
