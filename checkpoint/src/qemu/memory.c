/*
 * The QEMU memory backend: guest RAM is a memory-backend-file (share=on)
 * that colo maps MAP_SHARED. See checkpoint/memory.h for the contract.
 */
#include "checkpoint/memory.h"

#include "softdirty.h"

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Page sets                                                            */

void ckpt_pageset_init(struct ckpt_pageset *ps)
{
    memset(ps, 0, sizeof(*ps));
}

void ckpt_pageset_reset(struct ckpt_pageset *ps)
{
    ps->count = 0;
    ps->full = false;
    ps->base = NULL;
}

void ckpt_pageset_dispose(struct ckpt_pageset *ps)
{
    free(ps->pfns);
    free(ps->data);
    ckpt_pageset_init(ps);
}

/* Room for extra pages; with_data false: pfns only (by reference). */
static int pageset_reserve_ex(struct ckpt_pageset *ps, size_t extra,
                              bool with_data)
{
    size_t ncap;
    uint64_t *np;
    uint8_t *nd;

    if (ps->count + extra <= ps->cap && (!with_data || ps->data))
        return 0;
    if (!with_data) {
        if (ps->count + extra <= ps->cap)
            return 0;
        ncap = ps->cap ? ps->cap : 64;
        while (ncap < ps->count + extra)
            ncap *= 2;
        np = realloc(ps->pfns, ncap * sizeof(*np));
        if (!np)
            return -ENOMEM;
        ps->pfns = np;
        /* data (if any) is now smaller than cap: drop it. */
        free(ps->data);
        ps->data = NULL;
        ps->cap = ncap;
        return 0;
    }
    ncap = ps->cap ? ps->cap : 64;
    while (ncap < ps->count + extra)
        ncap *= 2;
    np = realloc(ps->pfns, ncap * sizeof(*np));
    if (!np)
        return -ENOMEM;
    ps->pfns = np;
    nd = realloc(ps->data, ncap * (size_t)CKPT_PAGE_SIZE);
    if (!nd)
        return -ENOMEM;
    ps->data = nd;
    ps->cap = ncap;
    return 0;
}

static int pageset_reserve(struct ckpt_pageset *ps, size_t extra)
{
    return pageset_reserve_ex(ps, extra, true);
}

int ckpt_pageset_add(struct ckpt_pageset *ps, uint64_t pfn, const void *src)
{
    int rc;

    if (ps->base)
        return -EINVAL; /* a by-reference set */
    rc = pageset_reserve(ps, 1);
    if (rc < 0)
        return rc;
    ps->pfns[ps->count] = pfn;
    memcpy(ps->data + ps->count * (size_t)CKPT_PAGE_SIZE, src, CKPT_PAGE_SIZE);
    ps->count++;
    return 0;
}

void ckpt_memory_free(struct ckpt_memory *m)
{
    if (m)
        m->ops->free(m);
}

/* ------------------------------------------------------------------ */
/* The QEMU RAM-file backend                                            */

struct qmem {
    struct ckpt_memory base;
    unsigned flags;
    size_t size;
    uint64_t npages;
    uint8_t *ram;        /* MAP_SHARED view of the RAM file */
    uint8_t *shadow;     /* primary: what the peer has; COLO secondary: the
                            committed image. NULL otherwise. */
    bool shadow_valid;   /* primary: false until the first capture */
    uint64_t *scratch;   /* primary: dirty pfn lists, per chunk */
    uint32_t *chunk_cnt; /* primary: per capture chunk */
    uint8_t *zero_map;   /* primary: bit per page, the shadow page is 0 */
    uint64_t *chunk_off;

    /* Primary with soft-dirty tracking (ckpt_mem_qemu_track). */
    dev_t dev; /* the RAM file, to find QEMU's mapping of it */
    ino_t ino;
    struct ckpt_sd *sd; /* NULL: the compare scan */
    bool sd_verify;     /* keep the shadow, check the bits against it */
    bool locked;        /* ram is mlock()ed */
    uint64_t *sd_map;   /* npages bits: the pages of this capture */
    uint64_t sd_missed; /* verify: pages the scan found, the bits not */
    unsigned sd_small;  /* captures in a row far below the set's size */

    /* Primary: one worker thread for the scan and copy (run_pair). */
    bool w_init; /* w_mu and w_cv exist */
    bool w_started;
    bool w_quit;
    pthread_t w_th;
    pthread_mutex_t w_mu;
    pthread_cond_t w_cv;
    uint64_t w_posted, w_done;
    void (*w_fn)(void *);
    void *w_arg;

    /* Secondary staging for one checkpoint. */
    struct ckpt_pageset staged;
    uint64_t staged_ckpt;
    bool committed_once; /* a checkpoint was committed */
    bool prezeroed;      /* begin(full) cleared the image already */
    uint8_t *written;    /* before the first commit: bitmap of pages
                            written straight into RAM */
};

static struct qmem *to_qmem(struct ckpt_memory *m)
{
    return (struct qmem *)m;
}

/* A zero page to compare with: glibc's vectorised memcmp against a page
 * that stays in the cache beats a plain loop. */
static const uint8_t zero_page[CKPT_PAGE_SIZE] __attribute__((aligned(64)));

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;

    /* Most non-zero pages fail on the first words. */
    if (w[0] | w[1] | w[2] | w[3])
        return false;
    return memcmp(p, zero_page, CKPT_PAGE_SIZE) == 0;
}

static uint64_t qmem_page_count(struct ckpt_memory *m)
{
    return to_qmem(m)->npages;
}

/*
 * Capture runs in two phases, each shared by the calling thread and one
 * worker thread (the guest is paused, its vCPUs leave the cores free):
 *   1. scan: compare each page against the shadow (full: test for zero),
 *      listing the dirty pfns of each chunk of CAPTURE_CHUNK pages;
 *   2. copy: each chunk's pages go RAM -> output -> shadow, into the
 *      chunk's slice of the output set (pfn order is kept).
 * Chunks are claimed from an atomic counter, so a worker that the kernel
 * does not schedule (a busy machine) costs at most one chunk: the calling
 * thread does the rest. The pause is bounded by memory bandwidth.
 */
#define CAPTURE_CHUNK 1024u /* pages */

enum job_phase {
    JOB_SCAN = 0, /* compare: find the dirty pages */
    JOB_COPY,     /* compare: copy them into the shadow */
    JOB_SD_COUNT, /* soft-dirty: count the marked pages per chunk (full:
                     unmark the zero pages first) */
    JOB_SD_COPY,  /* soft-dirty: copy them into the output set */
};

struct capture_job {
    struct qmem *q;
    bool full;
    enum job_phase phase;
    uint64_t nchunks;
    atomic_uint_fast64_t next;
    atomic_uint_fast64_t zero;
    uint32_t *cnt;  /* per chunk: dirty pages found */
    uint64_t *off;  /* per chunk: first slot in the output */
    uint64_t *pfns; /* output pfns */
    uint8_t *data;  /* soft-dirty: output pages (by value) */
};

static void scan_chunk(struct capture_job *j, uint64_t c)
{
    struct qmem *q = j->q;
    uint64_t lo = c * CAPTURE_CHUNK, hi = lo + CAPTURE_CHUNK;
    uint64_t *list = q->scratch + lo;
    uint32_t n = 0, zero = 0;

    if (hi > q->npages)
        hi = q->npages;
    for (uint64_t pfn = lo; pfn < hi; pfn++) {
        const uint8_t *p = q->ram + (pfn << CKPT_PAGE_SHIFT);
        uint8_t *sh = q->shadow + (pfn << CKPT_PAGE_SHIFT);

        uint8_t bit = (uint8_t)(1u << (pfn % 8));

        if (j->full) {
            if (page_is_zero(p)) {
                memset(sh, 0, CKPT_PAGE_SIZE);
                q->zero_map[pfn / 8] |= bit;
                zero++;
                continue;
            }
        } else if (q->zero_map[pfn / 8] & bit) {
            /* The shadow page is zero: reading RAM alone decides (half
             * the memory traffic of a compare; most idle RAM is zero). */
            if (page_is_zero(p))
                continue;
        } else if (memcmp(p, sh, CKPT_PAGE_SIZE) == 0) {
            continue;
        }
        list[n++] = pfn;
    }
    j->cnt[c] = n;
    if (zero)
        atomic_fetch_add(&j->zero, zero);
}

static void copy_chunk(struct capture_job *j, uint64_t c)
{
    struct qmem *q = j->q;
    const uint64_t *list = q->scratch + c * CAPTURE_CHUNK;

    for (uint32_t i = 0; i < j->cnt[c]; i++) {
        size_t off = list[i] << CKPT_PAGE_SHIFT;
        uint8_t *dst = q->shadow + off;

        /* One copy from RAM into the shadow; the set points at it, so the
         * bytes sent are exactly the shadow's. */
        memcpy(dst, q->ram + off, CKPT_PAGE_SIZE);
        j->pfns[j->off[c] + i] = list[i];
        /* Chunks are whole bytes of the map: no two threads share one. */
        if (page_is_zero(dst))
            q->zero_map[list[i] / 8] |= (uint8_t)(1u << (list[i] % 8));
        else
            q->zero_map[list[i] / 8] &= (uint8_t) ~(1u << (list[i] % 8));
    }
}

/* Soft-dirty, phase 1: the chunk's marked pages (CAPTURE_CHUNK is a
 * multiple of 64: a chunk is whole words of the map). */
static void sd_count_chunk(struct capture_job *j, uint64_t c)
{
    struct qmem *q = j->q;
    uint64_t lo = c * CAPTURE_CHUNK, hi = lo + CAPTURE_CHUNK;
    uint32_t n = 0, zero = 0;

    if (hi > q->npages)
        hi = q->npages;
    for (uint64_t w = lo / 64; w < (hi + 63) / 64; w++) {
        uint64_t bits = q->sd_map[w];

        if (j->full) {
            for (uint64_t b = bits; b; b &= b - 1) {
                uint64_t pfn = w * 64 + (uint64_t)__builtin_ctzll(b);

                if (page_is_zero(q->ram + (pfn << CKPT_PAGE_SHIFT))) {
                    bits &= ~(1ull << (pfn % 64));
                    zero++;
                }
            }
            q->sd_map[w] = bits;
        }
        n += (uint32_t)__builtin_popcountll(bits);
    }
    j->cnt[c] = n;
    if (zero)
        atomic_fetch_add(&j->zero, zero);
}

/* Soft-dirty, phase 2: RAM -> the output set (by value: the copy the link
 * sends; the guest may run again once capture returns). */
static void sd_copy_chunk(struct capture_job *j, uint64_t c)
{
    struct qmem *q = j->q;
    uint64_t lo = c * CAPTURE_CHUNK, hi = lo + CAPTURE_CHUNK;
    uint64_t slot = j->off[c];

    if (hi > q->npages)
        hi = q->npages;
    for (uint64_t w = lo / 64; w < (hi + 63) / 64; w++) {
        for (uint64_t b = q->sd_map[w]; b; b &= b - 1) {
            uint64_t pfn = w * 64 + (uint64_t)__builtin_ctzll(b);

            memcpy(j->data + slot * CKPT_PAGE_SIZE,
                   q->ram + (pfn << CKPT_PAGE_SHIFT), CKPT_PAGE_SIZE);
            j->pfns[slot++] = pfn;
        }
    }
}

static void job_run(void *arg)
{
    struct capture_job *j = arg;
    uint64_t c;

    while ((c = atomic_fetch_add(&j->next, 1)) < j->nchunks) {
        switch (j->phase) {
        case JOB_SCAN:
            scan_chunk(j, c);
            break;
        case JOB_COPY:
            copy_chunk(j, c);
            break;
        case JOB_SD_COUNT:
            sd_count_chunk(j, c);
            break;
        case JOB_SD_COPY:
            sd_copy_chunk(j, c);
            break;
        }
    }
}

static void *worker_main(void *arg)
{
    struct qmem *q = arg;

    pthread_mutex_lock(&q->w_mu);
    for (;;) {
        while (!q->w_quit && q->w_posted == q->w_done)
            pthread_cond_wait(&q->w_cv, &q->w_mu);
        if (q->w_quit)
            break;
        pthread_mutex_unlock(&q->w_mu);
        q->w_fn(q->w_arg);
        pthread_mutex_lock(&q->w_mu);
        q->w_done++;
        pthread_cond_broadcast(&q->w_cv);
    }
    pthread_mutex_unlock(&q->w_mu);
    return NULL;
}

/* Run job j on this thread and the worker together; return when both
 * are done. */
static void run_job(struct qmem *q, struct capture_job *j)
{
    atomic_store(&j->next, 0);
    if (!q->w_started) {
        job_run(j);
        return;
    }
    pthread_mutex_lock(&q->w_mu);
    q->w_fn = job_run;
    q->w_arg = j;
    q->w_posted++;
    pthread_cond_broadcast(&q->w_cv);
    pthread_mutex_unlock(&q->w_mu);
    job_run(j);
    pthread_mutex_lock(&q->w_mu);
    while (q->w_done != q->w_posted)
        pthread_cond_wait(&q->w_cv, &q->w_mu);
    pthread_mutex_unlock(&q->w_mu);
}

/* Verify mode: every page that differs from what the peer has (the
 * shadow) must be in this capture's set; then the shadow takes the set. */
static int sd_verify(struct qmem *q, const struct ckpt_pageset *out)
{
    uint64_t missed = 0;

    if (!out->full) {
        for (uint64_t pfn = 0; pfn < q->npages; pfn++) {
            size_t off = pfn << CKPT_PAGE_SHIFT;

            if (q->sd_map[pfn / 64] & (1ull << (pfn % 64)))
                continue;
            if (memcmp(q->ram + off, q->shadow + off, CKPT_PAGE_SIZE) != 0) {
                if (!missed)
                    colo_err("memory: soft-dirty missed page %llu (the "
                             "compare scan found it changed)",
                             (unsigned long long)pfn);
                missed++;
            }
        }
    } else {
        memset(q->shadow, 0, q->size);
    }
    for (size_t i = 0; i < out->count; i++)
        memcpy(q->shadow + (out->pfns[i] << CKPT_PAGE_SHIFT),
               ckpt_pageset_page(out, i), CKPT_PAGE_SIZE);
    q->sd_missed += missed;
    if (missed) {
        colo_err("memory: soft-dirty missed %llu pages of this capture",
                 (unsigned long long)missed);
        return -COLO_EINTERNAL;
    }
    return 0;
}

/*
 * Capture with soft-dirty bits: no scan of RAM. Full: clear the bits, then
 * every non-zero page (a page written meanwhile, guest running, is marked
 * for the next capture). Otherwise the guest is paused (see
 * ckpt_mem_capture_needs_pause): read the bits, clear them, copy the
 * marked pages into the set.
 */
static int sd_capture(struct qmem *q, bool full, struct ckpt_pageset *out,
                      struct ckpt_capture_stats *st)
{
    struct capture_job j = {.q = q, .full = full};
    uint64_t t0 = colo_now_ns(), t1, t2, total = 0;
    size_t words = (q->npages + 63) / 64;
    int64_t n;
    int rc;

    j.nchunks = (q->npages + CAPTURE_CHUNK - 1) / CAPTURE_CHUNK;
    j.cnt = q->chunk_cnt;
    j.off = q->chunk_off;
    atomic_init(&j.zero, 0);
    ckpt_pageset_reset(out);
    out->full = full;
    if (full) {
        memset(q->sd_map, 0xff, words * sizeof(*q->sd_map));
        if (q->npages % 64)
            q->sd_map[words - 1] = (1ull << (q->npages % 64)) - 1;
    } else {
        memset(q->sd_map, 0, words * sizeof(*q->sd_map));
        n = ckpt_sd_read(q->sd, q->sd_map);
        if (n < 0) {
            colo_err("memory: reading QEMU's soft-dirty bits: %s",
                     colo_strerror((int)n));
            return (int)n;
        }
    }
    rc = ckpt_sd_clear(q->sd);
    if (rc < 0) {
        colo_err("memory: clearing QEMU's soft-dirty bits: %s",
                 colo_strerror(rc));
        q->shadow_valid = false;
        return rc;
    }
    t1 = colo_now_ns();
    j.phase = JOB_SD_COUNT;
    run_job(q, &j);
    for (uint64_t c = 0; c < j.nchunks; c++) {
        j.off[c] = total;
        total += j.cnt[c];
    }
    /* After a large set (the full sync) give the memory back, once the
     * sets have stayed small for a while (not at every swing). */
    if (out->cap > 4 * total && out->cap > 8192) {
        if (++q->sd_small >= 8) {
            ckpt_pageset_dispose(out);
            q->sd_small = 0;
        }
    } else {
        q->sd_small = 0;
    }
    rc = pageset_reserve(out, total);
    if (rc < 0) {
        q->shadow_valid = false; /* the bits are gone: full next time */
        return rc;
    }
    out->full = full;
    j.phase = JOB_SD_COPY;
    j.pfns = out->pfns;
    j.data = out->data;
    run_job(q, &j);
    out->count = total;
    t2 = colo_now_ns();
    if (st) {
        st->scan_ns = t1 - t0;
        st->copy_ns = t2 - t1;
        st->dirty_pages = total;
        st->zero_pages = atomic_load(&j.zero);
    }
    if (q->sd_verify) {
        rc = sd_verify(q, out);
        if (rc < 0) {
            q->shadow_valid = false;
            return rc;
        }
    }
    q->shadow_valid = true;
    return 0;
}

static int scan_capture(struct qmem *q, unsigned flags,
                        struct ckpt_pageset *out, struct ckpt_capture_stats *st)
{
    struct capture_job j = {.q = q};
    uint64_t t0 = colo_now_ns(), t1, t2, total = 0;
    int rc;

    if (!q->shadow)
        return -EINVAL;
    j.full = (flags & CKPT_CAPTURE_FULL) || !q->shadow_valid;
    j.nchunks = (q->npages + CAPTURE_CHUNK - 1) / CAPTURE_CHUNK;
    j.cnt = q->chunk_cnt;
    j.off = q->chunk_off;
    atomic_init(&j.zero, 0);
    ckpt_pageset_reset(out);
    out->full = j.full;
    run_job(q, &j);
    t1 = colo_now_ns();
    for (uint64_t c = 0; c < j.nchunks; c++) {
        j.off[c] = total;
        total += j.cnt[c];
    }
    rc = pageset_reserve_ex(out, total, false);
    if (rc < 0) {
        q->shadow_valid = false; /* full: zero pages already cleared */
        return rc;
    }
    j.phase = JOB_COPY;
    j.pfns = out->pfns;
    out->base = q->shadow;
    run_job(q, &j);
    out->count = total;
    q->shadow_valid = true;
    t2 = colo_now_ns();
    if (st) {
        st->scan_ns = t1 - t0;
        st->copy_ns = t2 - t1;
        st->dirty_pages = total;
        st->zero_pages = atomic_load(&j.zero);
    }
    return 0;
}

static int qmem_capture(struct ckpt_memory *m, unsigned flags,
                        struct ckpt_pageset *out, struct ckpt_capture_stats *st)
{
    struct qmem *q = to_qmem(m);

    if (q->sd)
        return sd_capture(q, (flags & CKPT_CAPTURE_FULL) || !q->shadow_valid,
                          out, st);
    return scan_capture(q, flags, out, st);
}

static void qmem_reset_shadow(struct ckpt_memory *m)
{
    to_qmem(m)->shadow_valid = false;
}

static int check_pages(struct qmem *q, const uint64_t *pfns, size_t n)
{
    if (n > CKPT_MAX_PAGES_PER_RECORD)
        return -COLO_ESTREAM_TOO_BIG;
    for (size_t i = 0; i < n; i++)
        if (pfns[i] >= q->npages)
            return -COLO_ESTREAM_CORRUPT;
    return 0;
}

static int qmem_stage(struct ckpt_memory *m, uint64_t ckpt,
                      const uint64_t *pfns, const uint8_t *data, size_t n)
{
    struct qmem *q = to_qmem(m);
    int rc;

    if (!(q->flags & CKPT_MEM_SECONDARY))
        return -EINVAL;
    rc = check_pages(q, pfns, n);
    if (rc < 0)
        return rc;
    if (!q->committed_once) {
        /* Nothing committed yet: no image to protect, write through. */
        for (size_t i = 0; i < n; i++) {
            memcpy(q->ram + (pfns[i] << CKPT_PAGE_SHIFT),
                   data + i * (size_t)CKPT_PAGE_SIZE, CKPT_PAGE_SIZE);
            q->written[pfns[i] / 8] |= (uint8_t)(1u << (pfns[i] % 8));
        }
        return 0;
    }
    if (q->staged.count && q->staged_ckpt != ckpt)
        return -COLO_ESTREAM_CORRUPT;
    /* A peer repeating pfns must not grow staging beyond one RAM. */
    if (q->staged.count + n > q->npages)
        return -COLO_ESTREAM_TOO_BIG;
    q->staged_ckpt = ckpt;
    rc = pageset_reserve(&q->staged, n);
    if (rc < 0)
        return rc;
    memcpy(q->staged.pfns + q->staged.count, pfns, n * sizeof(*pfns));
    memcpy(q->staged.data + q->staged.count * (size_t)CKPT_PAGE_SIZE, data,
           n * (size_t)CKPT_PAGE_SIZE);
    q->staged.count += n;
    return 0;
}

static int qmem_begin(struct ckpt_memory *m, uint64_t ckpt, bool full)
{
    struct qmem *q = to_qmem(m);

    if (!(q->flags & CKPT_MEM_SECONDARY))
        return -EINVAL;
    if (full && !q->committed_once && !q->prezeroed) {
        /* Nothing written yet: clear the image now, while the primary
         * still sends (a migration's precopy), not at END (downtime). A
         * fresh RAM file is all zero: this only reads. */
        for (uint64_t pfn = 0; pfn < q->npages; pfn++) {
            uint8_t *p = q->ram + (pfn << CKPT_PAGE_SHIFT);

            if (!(q->written[pfn / 8] & (1u << (pfn % 8))) && !page_is_zero(p))
                memset(p, 0, CKPT_PAGE_SIZE);
        }
        q->prezeroed = true;
    }
    return 0;
}

static int qmem_commit(struct ckpt_memory *m, uint64_t ckpt, bool full)
{
    struct qmem *q = to_qmem(m);

    if (!(q->flags & CKPT_MEM_SECONDARY))
        return -EINVAL;
    if (!q->committed_once) {
        if (full && !q->prezeroed) {
            for (uint64_t pfn = 0; pfn < q->npages; pfn++) {
                uint8_t *p = q->ram + (pfn << CKPT_PAGE_SHIFT);

                if (!(q->written[pfn / 8] & (1u << (pfn % 8))) &&
                    !page_is_zero(p))
                    memset(p, 0, CKPT_PAGE_SIZE);
            }
        }
        if (q->shadow)
            memcpy(q->shadow, q->ram, q->size);
        free(q->written);
        q->written = NULL;
        q->committed_once = true;
        return 0;
    }
    if (q->staged.count && q->staged_ckpt != ckpt)
        return -COLO_ESTREAM_CORRUPT;
    if (full) {
        /* A full set after the first commit: a page it lacks is zero.
         * Build the image: zero all, then apply (pages are in RAM order
         * only by convention, so mark what the set has). */
        uint8_t *have = calloc((q->npages + 7) / 8, 1);

        if (!have)
            return -ENOMEM;
        for (size_t i = 0; i < q->staged.count; i++)
            have[q->staged.pfns[i] / 8] |=
                (uint8_t)(1u << (q->staged.pfns[i] % 8));
        for (uint64_t pfn = 0; pfn < q->npages; pfn++)
            if (!(have[pfn / 8] & (1u << (pfn % 8))))
                memset(q->ram + (pfn << CKPT_PAGE_SHIFT), 0, CKPT_PAGE_SIZE);
        free(have);
    }
    for (size_t i = 0; i < q->staged.count; i++) {
        size_t off = q->staged.pfns[i] << CKPT_PAGE_SHIFT;
        const uint8_t *src = q->staged.data + i * (size_t)CKPT_PAGE_SIZE;

        memcpy(q->ram + off, src, CKPT_PAGE_SIZE);
        if (q->shadow)
            memcpy(q->shadow + off, src, CKPT_PAGE_SIZE);
    }
    if (full && q->shadow)
        memcpy(q->shadow, q->ram, q->size);
    ckpt_pageset_reset(&q->staged);
    return 0;
}

static void qmem_discard(struct ckpt_memory *m)
{
    struct qmem *q = to_qmem(m);

    ckpt_pageset_reset(&q->staged);
    if (!q->committed_once && q->written) {
        memset(q->written, 0, (q->npages + 7) / 8);
        q->prezeroed = false; /* the dropped pages are in RAM */
    }
}

static int qmem_revert(struct ckpt_memory *m)
{
    struct qmem *q = to_qmem(m);
    int n = 0;

    if (!q->shadow || !(q->flags & CKPT_MEM_SECONDARY) || !q->committed_once)
        return -EINVAL;
    for (uint64_t pfn = 0; pfn < q->npages; pfn++) {
        size_t off = pfn << CKPT_PAGE_SHIFT;

        if (memcmp(q->ram + off, q->shadow + off, CKPT_PAGE_SIZE) != 0) {
            memcpy(q->ram + off, q->shadow + off, CKPT_PAGE_SIZE);
            n++;
        }
    }
    return n;
}

static void qmem_free(struct ckpt_memory *m)
{
    struct qmem *q = to_qmem(m);

    if (q->w_started) {
        pthread_mutex_lock(&q->w_mu);
        q->w_quit = true;
        pthread_cond_broadcast(&q->w_cv);
        pthread_mutex_unlock(&q->w_mu);
        pthread_join(q->w_th, NULL);
    }
    if (q->w_init) {
        pthread_mutex_destroy(&q->w_mu);
        pthread_cond_destroy(&q->w_cv);
    }
    free(q->scratch);
    free(q->chunk_cnt);
    free(q->chunk_off);
    free(q->zero_map);
    ckpt_sd_free(q->sd);
    free(q->sd_map);
    if (q->ram)
        munmap(q->ram, q->size);
    if (q->shadow)
        munmap(q->shadow, q->size);
    ckpt_pageset_dispose(&q->staged);
    free(q->written);
    free(q);
}

static const struct ckpt_memory_ops qmem_ops = {
    .name = "qemu-ramfile",
    .page_count = qmem_page_count,
    .capture = qmem_capture,
    .reset_shadow = qmem_reset_shadow,
    .begin = qmem_begin,
    .stage = qmem_stage,
    .commit = qmem_commit,
    .discard = qmem_discard,
    .revert = qmem_revert,
    .free = qmem_free,
};

static int map_anon(size_t size, uint8_t **ret)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

    if (p == MAP_FAILED)
        return -errno;
    *ret = p;
    return 0;
}

int ckpt_mem_qemu_open(const char *path, size_t size, unsigned flags,
                       struct ckpt_memory **ret)
{
    struct qmem *q = NULL;
    struct stat st;
    int fd = -1, rc;
    void *p;

    *ret = NULL;
    if (!size || size % CKPT_PAGE_SIZE || size > CKPT_MAX_RAM_BYTES)
        return -EINVAL;
    fd = open(path,
              O_RDWR | O_CLOEXEC | ((flags & CKPT_MEM_CREATE) ? O_CREAT : 0),
              0600);
    if (fd < 0) {
        rc = -errno;
        colo_err("RAM file %s: %s", path, colo_strerror(rc));
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if ((size_t)st.st_size != size) {
        if (!(flags & CKPT_MEM_CREATE) || st.st_size != 0) {
            colo_err("RAM file %s is %lld bytes, expected %zu", path,
                     (long long)st.st_size, size);
            rc = -EINVAL;
            goto out;
        }
        if (ftruncate(fd, (off_t)size) < 0) {
            rc = -errno;
            goto out;
        }
    }
    q = calloc(1, sizeof(*q));
    if (!q) {
        rc = -ENOMEM;
        goto out;
    }
    q->base.ops = &qmem_ops;
    q->flags = flags;
    q->size = size;
    q->npages = size / CKPT_PAGE_SIZE;
    q->dev = st.st_dev;
    q->ino = st.st_ino;
    ckpt_pageset_init(&q->staged);
    /* Pre-fault: the first touch of 64 MiB costs ~0.3 s, not in a pause. */
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
             0);
    if (p == MAP_FAILED) {
        rc = -errno;
        goto out;
    }
    q->ram = p;
    if ((flags & CKPT_MEM_PRIMARY) ||
        ((flags & CKPT_MEM_SECONDARY) && (flags & CKPT_MEM_COLO))) {
        rc = map_anon(size, &q->shadow);
        if (rc < 0)
            goto out;
    }
    if (flags & CKPT_MEM_PRIMARY) {
        uint64_t nch = (q->npages + CAPTURE_CHUNK - 1) / CAPTURE_CHUNK;

        q->scratch = malloc(q->npages * sizeof(*q->scratch));
        q->chunk_cnt = calloc(nch, sizeof(*q->chunk_cnt));
        q->chunk_off = calloc(nch, sizeof(*q->chunk_off));
        q->zero_map = calloc((q->npages + 7) / 8, 1);
        if (!q->scratch || !q->chunk_cnt || !q->chunk_off || !q->zero_map) {
            free(q->scratch);
            q->scratch = NULL;
            rc = -ENOMEM;
            goto out;
        }
        pthread_mutex_init(&q->w_mu, NULL);
        pthread_cond_init(&q->w_cv, NULL);
        q->w_init = true;
        /* Without the worker, run_pair() runs both halves here. */
        if (pthread_create(&q->w_th, NULL, worker_main, q) == 0)
            q->w_started = true;
        else
            colo_warn("memory: no scan worker thread; scanning alone");
    }
    if (flags & CKPT_MEM_SECONDARY) {
        q->written = calloc((q->npages + 7) / 8, 1);
        if (!q->written) {
            rc = -ENOMEM;
            goto out;
        }
    }
    *ret = &q->base;
    q = NULL;
    rc = 0;
out:
    colo_close(&fd);
    if (q)
        qmem_free(&q->base);
    return rc;
}

static bool is_qmem(struct ckpt_memory *m)
{
    return m && m->ops == &qmem_ops;
}

const uint8_t *ckpt_mem_qemu_ram(struct ckpt_memory *m)
{
    return is_qmem(m) ? to_qmem(m)->ram : NULL;
}

const uint8_t *ckpt_mem_qemu_shadow(struct ckpt_memory *m)
{
    return is_qmem(m) ? to_qmem(m)->shadow : NULL;
}

size_t ckpt_mem_qemu_size(struct ckpt_memory *m)
{
    return is_qmem(m) ? to_qmem(m)->size : 0;
}

size_t ckpt_mem_qemu_staged(struct ckpt_memory *m)
{
    return is_qmem(m) ? to_qmem(m)->staged.count : 0;
}

/* ------------------------------------------------------------------ */
/* Dirty tracking                                                       */

/* The probe forks: once per process. */
static pthread_mutex_t probe_mu = PTHREAD_MUTEX_INITIALIZER;
static int probe_rc = -1; /* -1: not yet; 0 no; 1 yes */
static char probe_why[256];

int ckpt_mem_softdirty_available(char *why, size_t why_len)
{
    int rc;

    pthread_mutex_lock(&probe_mu);
    if (probe_rc < 0) {
        rc = ckpt_sd_probe(probe_why, sizeof(probe_why));
        probe_rc = rc > 0 ? 1 : 0;
    }
    rc = probe_rc;
    if (!rc && why && why_len)
        snprintf(why, why_len, "%s", probe_why);
    pthread_mutex_unlock(&probe_mu);
    return rc;
}

int ckpt_mem_qemu_track(struct ckpt_memory *m, pid_t pid, unsigned flags,
                        char *why, size_t why_len)
{
    struct qmem *q = is_qmem(m) ? to_qmem(m) : NULL;
    struct ckpt_sd *sd = NULL;
    uint64_t *map;
    int rc;

    if (why && why_len)
        why[0] = 0;
    if (!q || !(q->flags & CKPT_MEM_PRIMARY) || pid <= 0)
        return -EINVAL;
    if (q->sd)
        return 1;
    if (flags & CKPT_TRACK_COMPARE) {
        if (why && why_len)
            snprintf(why, why_len, "the compare scan was asked for");
        return 0;
    }
    if (!ckpt_mem_softdirty_available(why, why_len))
        return 0;
    rc = ckpt_sd_open(pid, q->dev, q->ino, q->size, &sd, why, why_len);
    if (rc < 0)
        return 0;
    /* A page of the RAM file reclaimed (swapped) and faulted in again
     * comes back to QEMU's page table without its soft-dirty bit: keep
     * the file's pages in memory while colo maps them. */
    if (!q->locked && mlock(q->ram, q->size) < 0) {
        rc = -errno;
        if (why && why_len)
            snprintf(why, why_len,
                     "cannot lock guest RAM in memory (mlock: %s; "
                     "RLIMIT_MEMLOCK?)",
                     colo_strerror(rc));
        ckpt_sd_free(sd);
        return 0;
    }
    q->locked = true;
    map = calloc((q->npages + 63) / 64, sizeof(*map));
    if (!map) {
        ckpt_sd_free(sd);
        return -ENOMEM;
    }
    q->sd = sd;
    q->sd_map = map;
    q->sd_verify = (flags & CKPT_TRACK_VERIFY) != 0;
    q->shadow_valid = false; /* tracking starts with a full capture */
    if (!q->sd_verify) {
        /* No compare any more: the RAM-sized shadow and the scan's
         * lists go. */
        munmap(q->shadow, q->size);
        q->shadow = NULL;
        free(q->scratch);
        q->scratch = NULL;
        free(q->zero_map);
        q->zero_map = NULL;
    }
    return 1;
}

const char *ckpt_mem_dirty_method(struct ckpt_memory *m)
{
    struct qmem *q;

    if (!m)
        return "none";
    if (!is_qmem(m))
        return m->ops->name;
    q = to_qmem(m);
    if (q->sd)
        return q->sd_verify ? "soft-dirty+verify" : "soft-dirty";
    return (q->flags & CKPT_MEM_PRIMARY) ? "compare" : "none";
}

bool ckpt_mem_capture_needs_pause(struct ckpt_memory *m)
{
    return is_qmem(m) && to_qmem(m)->sd && to_qmem(m)->shadow_valid;
}

uint64_t ckpt_mem_qemu_missed(struct ckpt_memory *m)
{
    return is_qmem(m) ? to_qmem(m)->sd_missed : 0;
}
