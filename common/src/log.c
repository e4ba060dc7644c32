#include "common/log.h"
#include "common/timeutil.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The log configuration: the only mutable global state in colo. */
static struct {
    enum colo_log_level level;
    int json;
    int fd;
    char vm[64];
    int64_t ckpt;
} log_cfg = {.level = COLO_LOG_INFO, .fd = 2, .ckpt = -1};

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void colo_log_set_level(enum colo_log_level level)
{
    log_cfg.level = level;
}

enum colo_log_level colo_log_get_level(void)
{
    return log_cfg.level;
}

int colo_log_level_parse(const char *s, enum colo_log_level *ret_level)
{
    for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]);
         i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *ret_level = (enum colo_log_level)i;
            return 0;
        }
    }
    return -1;
}

void colo_log_set_json(int on)
{
    log_cfg.json = !!on;
}

int colo_log_get_json(void)
{
    return log_cfg.json;
}

void colo_log_set_fd(int fd)
{
    log_cfg.fd = fd;
}

void colo_log_set_vm(const char *vm)
{
    snprintf(log_cfg.vm, sizeof(log_cfg.vm), "%s", vm ? vm : "");
}

void colo_log_set_checkpoint(int64_t ckpt)
{
    log_cfg.ckpt = ckpt;
}

size_t colo_json_escape(char *out, size_t outsz, const char *s)
{
    size_t n = 0;

    if (outsz == 0)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        size_t len;

        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            len = 2;
        } else if (c == '\n') {
            memcpy(tmp, "\\n", 2);
            len = 2;
        } else if (c < 0x20) {
            len = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", c);
        } else {
            tmp[0] = (char)c;
            len = 1;
        }
        if (n + len >= outsz)
            break;
        memcpy(out + n, tmp, len);
        n += len;
    }
    out[n] = '\0';
    return n;
}

void colo_logv(enum colo_log_level level, const char *fmt, va_list ap)
{
    char msg[2048], line[4096];
    int n;

    if (level > log_cfg.level)
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);

    if (log_cfg.json) {
        char emsg[3072], evm[160];
        char ckpt[32] = "";

        colo_json_escape(emsg, sizeof(emsg), msg);
        colo_json_escape(evm, sizeof(evm), log_cfg.vm);
        if (log_cfg.ckpt >= 0)
            snprintf(ckpt, sizeof(ckpt), ",\"ckpt\":%lld",
                     (long long)log_cfg.ckpt);
        n = snprintf(line, sizeof(line),
                     "{\"ts\":%.6f,\"level\":\"%s\",\"vm\":\"%s\"%s,"
                     "\"msg\":\"%s\"}\n",
                     (double)colo_now_realtime_ns() / 1e9, level_names[level],
                     evm, ckpt, emsg);
    } else {
        char ctx[128] = "";

        if (log_cfg.vm[0] && log_cfg.ckpt >= 0)
            snprintf(ctx, sizeof(ctx), "[%s] #%lld", log_cfg.vm,
                     (long long)log_cfg.ckpt);
        else if (log_cfg.vm[0])
            snprintf(ctx, sizeof(ctx), "[%s]", log_cfg.vm);
        n = snprintf(line, sizeof(line), "colo%s %s: %s\n", ctx,
                     level_names[level], msg);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    /* One write per line, so lines from several processes do not mix. */
    if (write(log_cfg.fd, line, (size_t)n) < 0) {
        /* Nowhere left to report it. */
    }
}

void colo_log(enum colo_log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    colo_logv(level, fmt, ap);
    va_end(ap);
}
