/*
 * fuzz-qmp: the QMP client's receive path (line framing, JSON parsing,
 * greeting, replies, events, errors) through the qmp_client_feed() seam.
 * The first input byte picks the chunk size, so framing across reads is
 * exercised too. Commands are queued before and after the greeting so
 * replies can match ids.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <event2/event.h>

#include "common/log.h"
#include "qmp/qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void reply_cb(struct qmp_client *c, int rc, json_t *ret,
                     const char *desc, void *arg)
{
    (void)c;
    (void)arg;
    if (rc == 0 && ret)
        (void)json_typeof(ret);
    if (desc)
        (void)strlen(desc);
}

static void event_cb(struct qmp_client *c, const char *event, json_t *data,
                     int64_t sec, int64_t usec, void *arg)
{
    (void)c;
    (void)data;
    (void)sec;
    (void)usec;
    (void)arg;
    (void)strlen(event);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct event_base *base;
    struct qmp_client *c;
    size_t chunk;

    if (!base) {
        base = event_base_new();
        colo_log_set_level(COLO_LOG_ERROR);
        colo_log_set_fd(-1);
    }
    if (size == 0)
        return 0;
    chunk = (size_t)data[0] % 17 + 1;
    if (data[0] >= 0xf0)
        chunk = size;
    data++;
    size--;
    c = qmp_client_new_fake(base);
    if (!c)
        return 0;
    qmp_client_set_event_cb(c, event_cb, NULL);
    qmp_send(c, "query-status", NULL, -1, 0, reply_cb, NULL, NULL);
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;

        if (qmp_client_feed(c, data + off, n) < 0)
            break;
        if (qmp_client_state(c) == QMP_CONNECTED && qmp_pending(c) < 4)
            qmp_send(c, "stop", NULL, -1, 0, reply_cb, NULL, NULL);
    }
    qmp_client_free(c);
    /* Run anything deferred (nothing may touch the freed client). */
    event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}
