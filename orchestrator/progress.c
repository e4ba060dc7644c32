/* The progress bar of migrate and of protect's first checkpoint
 * (progress.h). */
#include "progress.h"

#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BAR_WIDTH 16
#define PAGE      4096u

void orch_progress_init(struct orch_progress *pg, FILE *out, bool protect)
{
    struct winsize ws;

    memset(pg, 0, sizeof(*pg));
    pg->out = out;
    pg->protect = protect;
    if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        pg->cols = ws.ws_col;
}

static uint64_t jint(json_t *ev, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(ev, key));

    return v > 0 ? (uint64_t)v : 0;
}

static void fmt_mib(char *buf, size_t size, double bytes, const char *suffix)
{
    if (bytes >= 10240.0 * 1048576.0)
        snprintf(buf, size, "%.1f GiB%s", bytes / 1073741824.0, suffix);
    else
        snprintf(buf, size, "%.1f MiB%s", bytes / 1048576.0, suffix);
}

void orch_progress_format(const struct orch_progress *pg, uint64_t now_ns,
                          char *buf, size_t size)
{
    uint64_t in_round = pg->bytes_sent > pg->round_bytes0
                            ? pg->bytes_sent - pg->round_bytes0
                            : 0;
    char bar[BAR_WIDTH + 1], sent[32], rate[32], dirty[32], eta[16];
    double frac = 0, left;
    int fill;

    (void)now_ns;
    if (pg->round_total)
        frac = (double)in_round / (double)pg->round_total;
    if (frac > 1)
        frac = 1;
    fill = (int)(frac * BAR_WIDTH + 0.5);
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '-', (size_t)(BAR_WIDTH - fill));
    bar[BAR_WIDTH] = '\0';

    fmt_mib(sent, sizeof(sent), (double)pg->bytes_sent, "");
    if (pg->rate_bps > 0) {
        fmt_mib(rate, sizeof(rate), pg->rate_bps, "/s");
    } else {
        snprintf(rate, sizeof(rate), "-- MiB/s");
    }
    if (pg->dirty_bps > 0) {
        fmt_mib(dirty, sizeof(dirty), pg->dirty_bps, "/s");
    } else {
        snprintf(dirty, sizeof(dirty), "-- MiB/s");
    }
    /* What is left of this round, sent at the rate the link outruns the
     * guest's dirtying. */
    left =
        pg->round_total > in_round ? (double)(pg->round_total - in_round) : 0;
    if (pg->rate_bps > pg->dirty_bps && pg->round_total) {
        double s = left / (pg->rate_bps - pg->dirty_bps);

        if (s > 359999)
            s = 359999;
        if (s >= 3600)
            snprintf(eta, sizeof(eta), "%u:%02u:%02u", (unsigned)s / 3600,
                     (unsigned)s / 60 % 60, (unsigned)s % 60);
        else
            snprintf(eta, sizeof(eta), "%u:%02u", (unsigned)s / 60,
                     (unsigned)s % 60);
    } else {
        snprintf(eta, sizeof(eta), "--:--");
    }
    if (pg->protect)
        snprintf(buf, size, "[%s] %s  %s  ETA %s  dirty %s  full sync", bar,
                 sent, rate, eta, dirty);
    else if (pg->round)
        snprintf(buf, size, "[%s] %s  %s  ETA %s  dirty %s  round %u", bar,
                 sent, rate, eta, dirty, pg->round);
    else
        snprintf(buf, size, "[%s] %s  waiting for the peer", bar, sent);
}

static void draw(struct orch_progress *pg, uint64_t now_ns)
{
    char line[256];
    size_t cols = pg->cols > 1 ? (size_t)pg->cols - 1 : 79;

    orch_progress_format(pg, now_ns, line, sizeof(line));
    if (strlen(line) > cols && cols < sizeof(line))
        line[cols] = '\0';
    /* \r, the line, erase what a longer earlier line left. */
    fprintf(pg->out, "\r%s\033[K", line);
    fflush(pg->out);
    pg->open = true;
}

static void sample(struct orch_progress *pg, json_t *ev, uint64_t now_ns)
{
    uint64_t bytes = jint(ev, "bytes_sent");
    uint64_t ram = jint(ev, "ram_bytes");

    if (ram)
        pg->ram_bytes = ram;
    /* The first round (migrate) or the full sync (protect): all of RAM,
     * until the engine says how many pages it captured (protect: once the
     * first checkpoint is captured; pages never touched are not sent). */
    if (pg->protect && jint(ev, "dirty_pages_last"))
        pg->round_total = jint(ev, "dirty_pages_last") * PAGE;
    if (!pg->round_total && pg->round <= 1)
        pg->round_total = pg->ram_bytes;
    if (!pg->sample_t_ns) {
        pg->sample_t_ns = now_ns;
        pg->sample_bytes = bytes;
    } else if (now_ns - pg->sample_t_ns >= 200000000ull) {
        double r = (double)(bytes - (bytes > pg->sample_bytes ? pg->sample_bytes
                                                              : bytes)) *
                   1e9 / (double)(now_ns - pg->sample_t_ns);

        /* Smoothed, but a first measurement counts in full. */
        pg->rate_bps = pg->rate_bps > 0 ? 0.5 * pg->rate_bps + 0.5 * r : r;
        pg->sample_t_ns = now_ns;
        pg->sample_bytes = bytes;
    }
    pg->bytes_sent = bytes;
}

static void new_round(struct orch_progress *pg, json_t *ev, uint64_t now_ns)
{
    uint64_t pages = jint(ev, "dirty_pages_last");
    unsigned round = (unsigned)jint(ev, "rounds");

    /* The pages of this round were dirtied during the previous one. */
    if (pg->round && pg->round_t0_ns && now_ns > pg->round_t0_ns)
        pg->dirty_bps =
            (double)pages * PAGE * 1e9 / (double)(now_ns - pg->round_t0_ns);
    pg->round = round ? round : pg->round + 1;
    pg->round_t0_ns = now_ns;
    pg->round_bytes0 = jint(ev, "bytes_sent");
    pg->round_total = pages ? pages * PAGE : pg->ram_bytes;
}

bool orch_progress_event(struct orch_progress *pg, json_t *ev, uint64_t now_ns)
{
    const char *name = json_string_value(json_object_get(ev, "event"));

    if (!name || pg->done)
        return false;
    if (strcmp(name, "progress") == 0) {
        sample(pg, ev, now_ns);
        draw(pg, now_ns);
        return true;
    }
    if (strcmp(name, "paired") == 0) {
        sample(pg, ev, now_ns);
        if (!pg->protect)
            new_round(pg, ev, now_ns);
        else
            pg->round_bytes0 = pg->bytes_sent;
        draw(pg, now_ns);
        return true;
    }
    if (strcmp(name, "round") == 0 && !pg->protect) {
        sample(pg, ev, now_ns);
        new_round(pg, ev, now_ns);
        draw(pg, now_ns);
        return true;
    }
    if (strcmp(name, "checkpoint") == 0 && pg->protect) {
        /* The full sync is through: the bar goes, checkpoints follow. */
        if (pg->open)
            fprintf(pg->out, "\r\033[K");
        fflush(pg->out);
        pg->open = false;
        pg->done = true;
    }
    return false;
}

void orch_progress_end(struct orch_progress *pg)
{
    if (pg->open) {
        fprintf(pg->out, "\n");
        fflush(pg->out);
    }
    pg->open = false;
}
