/*
 * Logging. One line per message, to stderr (or a chosen fd):
 *   - human form on a TTY or by default:  "colo[vm1] #42 error: text"
 *   - JSON lines with colo_log_set_json(1):
 *       {"ts":..., "level":"error", "vm":"vm1", "ckpt":42, "msg":"text"}
 *
 * The log configuration is the one mutable global colo allows. The VM name
 * and checkpoint number are context set by the owner of the job, so every
 * line says which VM and which checkpoint it is about.
 */
#ifndef COLO_COMMON_LOG_H
#define COLO_COMMON_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum colo_log_level {
    COLO_LOG_ERROR = 0,
    COLO_LOG_WARN,
    COLO_LOG_INFO,
    COLO_LOG_DEBUG,
};

void colo_log_set_level(enum colo_log_level level);
enum colo_log_level colo_log_get_level(void);
/* Parse "error", "warn", "info", "debug"; returns < 0 if unknown. */
int colo_log_level_parse(const char *s, enum colo_log_level *ret_level);
void colo_log_set_json(int on);
int colo_log_get_json(void);
/* Where lines go; default 2 (stderr). The fd is borrowed. */
void colo_log_set_fd(int fd);
/* Context printed on each line; NULL / -1 clears. The string is copied. */
void colo_log_set_vm(const char *vm);
void colo_log_set_checkpoint(int64_t ckpt);

void colo_log(enum colo_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void colo_logv(enum colo_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define colo_err(...)   colo_log(COLO_LOG_ERROR, __VA_ARGS__)
#define colo_warn(...)  colo_log(COLO_LOG_WARN, __VA_ARGS__)
#define colo_info(...)  colo_log(COLO_LOG_INFO, __VA_ARGS__)
#define colo_debug(...) colo_log(COLO_LOG_DEBUG, __VA_ARGS__)

/* Append s to out as a JSON string body (escaped, no quotes). Returns
 * bytes written (without NUL), truncating safely at outsz. */
size_t colo_json_escape(char *out, size_t outsz, const char *s);

#endif
