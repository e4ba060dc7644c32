/*
 * The QEMU memory backend on plain files (no QEMU needed): dirty scan,
 * full capture with zero elision, staging, apply-only-on-commit, discard,
 * COLO revert, and the caps on peer-controlled counts.
 */
#include "checkpoint/memory.h"

#include "common/error.h"
#include "common/timeutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG CKPT_PAGE_SIZE

static char dir[] = "/tmp/colo-memtest-XXXXXX";
static char path_p[300], path_s[300];

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path_p, sizeof(path_p), "%s/ram-p", dir);
    snprintf(path_s, sizeof(path_s), "%s/ram-s", dir);
}

static void teardown(void)
{
    unlink(path_p);
    unlink(path_s);
    rmdir(dir);
}

TestSuite(memory, .init = setup, .fini = teardown);

/* Writable view of the RAM of a backend (the test plays the guest). */
static uint8_t *ram(struct ckpt_memory *m)
{
    return (uint8_t *)ckpt_mem_qemu_ram(m);
}

static void transfer(struct ckpt_memory *p, struct ckpt_memory *s, uint64_t n,
                     unsigned flags, size_t *ret_pages)
{
    struct ckpt_pageset ps;
    uint8_t *buf = malloc((size_t)CKPT_MAX_PAGES_PER_RECORD * PG);

    ckpt_pageset_init(&ps);
    cr_assert_eq(p->ops->capture(p, flags, &ps, NULL), 0);
    for (size_t i = 0; i < ps.count; i += CKPT_MAX_PAGES_PER_RECORD) {
        size_t k = ps.count - i;

        if (k > CKPT_MAX_PAGES_PER_RECORD)
            k = CKPT_MAX_PAGES_PER_RECORD;
        /* What the link does: gather the pages into one record. */
        for (size_t j = 0; j < k; j++)
            memcpy(buf + j * PG, ckpt_pageset_page(&ps, i + j), PG);
        cr_assert_eq(s->ops->stage(s, n, ps.pfns + i, buf, k), 0);
    }
    free(buf);
    cr_assert_eq(s->ops->commit(s, n, ps.full), 0);
    if (ret_pages)
        *ret_pages = ps.count;
    ckpt_pageset_dispose(&ps);
}

Test(memory, capture_finds_exactly_the_dirty_pages)
{
    struct ckpt_memory *m;
    struct ckpt_pageset ps;
    struct ckpt_capture_stats st;
    size_t size = 4 << 20;

    cr_assert_eq(ckpt_mem_qemu_open(path_p, size,
                                    CKPT_MEM_PRIMARY | CKPT_MEM_CREATE, &m),
                 0);
    ckpt_pageset_init(&ps);
    ram(m)[5 * PG + 17] = 1;
    ram(m)[900 * PG] = 2;
    /* First capture: full, zero pages elided. */
    cr_assert_eq(m->ops->capture(m, 0, &ps, &st), 0);
    cr_assert(ps.full);
    cr_assert_eq(ps.count, 2);
    cr_assert_eq(ps.pfns[0], 5);
    cr_assert_eq(ps.pfns[1], 900);
    cr_assert_eq(st.zero_pages, size / PG - 2);
    cr_assert_eq(ckpt_pageset_page(&ps, 0)[17], 1);
    cr_assert_eq(ckpt_pageset_page(&ps, 1)[0], 2);
    /* Nothing changed: nothing dirty. */
    cr_assert_eq(m->ops->capture(m, 0, &ps, &st), 0);
    cr_assert_not(ps.full);
    cr_assert_eq(ps.count, 0);
    /* One byte in the last word of a page, and a page zeroed. */
    ram(m)[77 * PG + PG - 1] = 9;
    ram(m)[5 * PG + 17] = 0;
    cr_assert_eq(m->ops->capture(m, 0, &ps, &st), 0);
    cr_assert_eq(ps.count, 2);
    cr_assert_eq(ps.pfns[0], 5);
    cr_assert_eq(ps.pfns[1], 77);
    cr_assert_eq(st.dirty_pages, 2);
    /* reset_shadow: the next capture is full again. */
    m->ops->reset_shadow(m);
    cr_assert_eq(m->ops->capture(m, 0, &ps, &st), 0);
    cr_assert(ps.full);
    cr_assert_eq(ps.count, 2); /* pages 77 and 900 */
    ckpt_pageset_dispose(&ps);
    ckpt_memory_free(m);
}

Test(memory, roundtrip_matches_page_by_page)
{
    struct ckpt_memory *p, *s;
    size_t size = 8 << 20, npg;

    cr_assert_eq(ckpt_mem_qemu_open(path_p, size,
                                    CKPT_MEM_PRIMARY | CKPT_MEM_CREATE, &p),
                 0);
    /* The secondary's file holds garbage: a full sync must zero it. */
    cr_assert_eq(ckpt_mem_qemu_open(path_s, size,
                                    CKPT_MEM_SECONDARY | CKPT_MEM_CREATE, &s),
                 0);
    memset(ram(s), 0xee, size);
    srand(42);
    for (int i = 0; i < 300; i++)
        ram(p)[(size_t)rand() % size] = (uint8_t)(rand() | 1);
    transfer(p, s, 1, 0, NULL);
    cr_assert_eq(memcmp(ram(p), ram(s), size), 0);
    for (int n = 2; n < 10; n++) {
        for (int i = 0; i < 50; i++)
            ram(p)[(size_t)rand() % size] = (uint8_t)rand();
        transfer(p, s, (uint64_t)n, 0, &npg);
        cr_assert_leq(npg, 50);
        cr_assert_eq(memcmp(ram(p), ram(s), size), 0, "checkpoint %d", n);
    }
    ckpt_memory_free(p);
    ckpt_memory_free(s);
}

Test(memory, begin_full_clears_garbage_before_pages_arrive)
{
    struct ckpt_memory *p, *s;
    size_t size = 2 << 20;

    cr_assert_eq(ckpt_mem_qemu_open(path_p, size,
                                    CKPT_MEM_PRIMARY | CKPT_MEM_CREATE, &p),
                 0);
    cr_assert_eq(ckpt_mem_qemu_open(path_s, size,
                                    CKPT_MEM_SECONDARY | CKPT_MEM_CREATE, &s),
                 0);
    memset(ram(s), 0x5a, size);
    ram(p)[3 * PG] = 1;
    cr_assert_not_null(s->ops->begin);
    cr_assert_eq(s->ops->begin(s, 1, true), 0);
    /* Cleared at BEGIN already, before any page or END. */
    cr_assert_eq(ram(s)[0], 0);
    cr_assert_eq(ram(s)[size - 1], 0);
    transfer(p, s, 1, 0, NULL);
    cr_assert_eq(memcmp(ram(p), ram(s), size), 0);
    ckpt_memory_free(p);
    ckpt_memory_free(s);
}

Test(memory, staged_pages_apply_only_on_commit)
{
    struct ckpt_memory *s;
    size_t size = 1 << 20;
    uint8_t page[PG];
    uint64_t pfn;

    cr_assert_eq(ckpt_mem_qemu_open(path_s, size,
                                    CKPT_MEM_SECONDARY | CKPT_MEM_CREATE, &s),
                 0);
    memset(page, 0xaa, PG);
    pfn = 3;
    cr_assert_eq(s->ops->stage(s, 1, &pfn, page, 1), 0);
    cr_assert_eq(s->ops->commit(s, 1, true), 0);
    cr_assert_eq(ram(s)[3 * PG], 0xaa);

    /* Checkpoint 2 arrives in part, then the stream ends: untouched. */
    memset(page, 0xbb, PG);
    cr_assert_eq(s->ops->stage(s, 2, &pfn, page, 1), 0);
    cr_assert_eq(ckpt_mem_qemu_staged(s), 1);
    cr_assert_eq(ram(s)[3 * PG], 0xaa);
    s->ops->discard(s);
    cr_assert_eq(ckpt_mem_qemu_staged(s), 0);
    cr_assert_eq(ram(s)[3 * PG], 0xaa);

    /* Checkpoint 3 whole: applied; a later copy of a pfn wins. */
    uint64_t pfns[2] = {3, 3};
    uint8_t two[2 * PG];

    memset(two, 0xcc, PG);
    memset(two + PG, 0xdd, PG);
    cr_assert_eq(s->ops->stage(s, 3, pfns, two, 2), 0);
    cr_assert_eq(ram(s)[3 * PG], 0xaa);
    cr_assert_eq(s->ops->commit(s, 3, false), 0);
    cr_assert_eq(ram(s)[3 * PG], 0xdd);
    /* Staging for another checkpoint than the one staged is corrupt. */
    cr_assert_eq(s->ops->stage(s, 4, &pfn, page, 1), 0);
    cr_assert_eq(s->ops->stage(s, 5, &pfn, page, 1), -COLO_ESTREAM_CORRUPT);
    ckpt_memory_free(s);
}

Test(memory, caps_on_peer_controlled_counts)
{
    struct ckpt_memory *s;
    size_t size = 4 << 20, npages = size / PG;
    uint64_t *pfns = calloc(CKPT_MAX_PAGES_PER_RECORD + 1, sizeof(*pfns));
    uint8_t *data = calloc(CKPT_MAX_PAGES_PER_RECORD + 1, PG);
    uint64_t bad;

    cr_assert_eq(ckpt_mem_qemu_open(path_s, size,
                                    CKPT_MEM_SECONDARY | CKPT_MEM_CREATE, &s),
                 0);
    for (size_t i = 0; i <= CKPT_MAX_PAGES_PER_RECORD; i++)
        pfns[i] = i;
    /* At the cap: fine. One over: refused before anything is written. */
    cr_assert_eq(s->ops->stage(s, 1, pfns, data, CKPT_MAX_PAGES_PER_RECORD), 0);
    cr_assert_eq(s->ops->stage(s, 1, pfns, data, CKPT_MAX_PAGES_PER_RECORD + 1),
                 -COLO_ESTREAM_TOO_BIG);
    /* pfn at the last page is fine, one past the end is not. */
    bad = npages - 1;
    cr_assert_eq(s->ops->stage(s, 1, &bad, data, 1), 0);
    bad = npages;
    cr_assert_eq(s->ops->stage(s, 1, &bad, data, 1), -COLO_ESTREAM_CORRUPT);
    bad = UINT64_MAX;
    cr_assert_eq(s->ops->stage(s, 1, &bad, data, 1), -COLO_ESTREAM_CORRUPT);
    cr_assert_eq(s->ops->commit(s, 1, true), 0);
    /* Staging a checkpoint beyond one RAM's worth of pages is refused. */
    size_t staged = 0;
    int rc = 0;

    while (rc == 0 && staged <= npages) {
        rc = s->ops->stage(s, 2, pfns, data, CKPT_MAX_PAGES_PER_RECORD);
        if (rc == 0)
            staged += CKPT_MAX_PAGES_PER_RECORD;
    }
    cr_assert_eq(rc, -COLO_ESTREAM_TOO_BIG);
    cr_assert_eq(staged, npages);
    /* Bad sizes at open. */
    struct ckpt_memory *x;

    cr_assert_eq(ckpt_mem_qemu_open(path_s, 1000, CKPT_MEM_SECONDARY, &x),
                 -EINVAL);
    cr_assert_eq(ckpt_mem_qemu_open(path_s, 8 << 20, CKPT_MEM_SECONDARY, &x),
                 -EINVAL); /* the file is 4 MiB */
    cr_assert_eq(ckpt_mem_qemu_open(path_s, CKPT_MAX_RAM_BYTES + PG,
                                    CKPT_MEM_SECONDARY, &x),
                 -EINVAL);
    free(pfns);
    free(data);
    ckpt_memory_free(s);
}

Test(memory, colo_revert_restores_secondary_writes)
{
    struct ckpt_memory *p, *s;
    size_t size = 2 << 20;

    cr_assert_eq(ckpt_mem_qemu_open(path_p, size,
                                    CKPT_MEM_PRIMARY | CKPT_MEM_CREATE, &p),
                 0);
    cr_assert_eq(ckpt_mem_qemu_open(
                     path_s, size,
                     CKPT_MEM_SECONDARY | CKPT_MEM_COLO | CKPT_MEM_CREATE, &s),
                 0);
    ram(p)[10 * PG] = 1;
    transfer(p, s, 1, 0, NULL);
    /* The secondary's own guest runs and writes. */
    ram(s)[10 * PG] = 7;
    ram(s)[20 * PG + 5] = 7;
    cr_assert_eq(s->ops->revert(s), 2);
    cr_assert_eq(memcmp(ram(p), ram(s), size), 0);
    ram(p)[30 * PG] = 3;
    ram(s)[40 * PG] = 4;
    cr_assert_eq(s->ops->revert(s), 1);
    transfer(p, s, 2, 0, NULL);
    cr_assert_eq(memcmp(ram(p), ram(s), size), 0);
    ckpt_memory_free(p);
    ckpt_memory_free(s);
}

Test(memory, dirty_scan_speed_64mib)
{
    struct ckpt_memory *m;
    struct ckpt_pageset ps;
    struct ckpt_capture_stats st;
    size_t size = 64 << 20;
    uint64_t best = UINT64_MAX;

    cr_assert_eq(ckpt_mem_qemu_open(path_p, size,
                                    CKPT_MEM_PRIMARY | CKPT_MEM_CREATE, &m),
                 0);
    ckpt_pageset_init(&ps);
    memset(ram(m), 1, size);
    cr_assert_eq(m->ops->capture(m, 0, &ps, &st), 0);
    cr_assert_eq(ps.count, size / PG);
    for (int i = 0; i < 5; i++) {
        ram(m)[(size_t)i * 997 * PG] = 2;
        cr_assert_eq(m->ops->capture(m, 0, &ps, &st), 0);
        cr_assert_eq(ps.count, 1);
        if (st.scan_ns < best)
            best = st.scan_ns;
    }
    /* Not a hard limit (sanitizers, a busy machine): a generous bound. */
    printf("dirty scan of 64 MiB: %.2f ms\n", (double)best / 1e6);
    cr_assert_lt(best, 500000000ull);
    ckpt_pageset_dispose(&ps);
    ckpt_memory_free(m);
}
