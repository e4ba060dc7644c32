/* Names, parsing and the digest shared by both engines. */
#include "checkpoint/ckpt.h"

#include "common/buf.h"

#include <errno.h>
#include <string.h>

const char *ckpt_mode_name(enum ckpt_mode m)
{
    switch (m) {
    case CKPT_MODE_MIGRATE:
        return "migrate";
    case CKPT_MODE_REMUS:
        return "remus";
    case CKPT_MODE_COLO:
        return "colo";
    }
    return "unknown";
}

int ckpt_mode_parse(const char *s, enum ckpt_mode *ret)
{
    static const enum ckpt_mode all[] = {CKPT_MODE_MIGRATE, CKPT_MODE_REMUS,
                                         CKPT_MODE_COLO};

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (s && strcmp(s, ckpt_mode_name(all[i])) == 0) {
            *ret = all[i];
            return 0;
        }
    }
    return -EINVAL;
}

const char *ckpt_role_name(enum ckpt_role r)
{
    return r == CKPT_ROLE_PRIMARY ? "primary" : "secondary";
}

const char *ckpt_event_name(enum ckpt_event_type t)
{
    switch (t) {
    case CKPT_EV_PAIRED:
        return "paired";
    case CKPT_EV_ROUND:
        return "round";
    case CKPT_EV_CHECKPOINT:
        return "checkpoint";
    case CKPT_EV_UNPROTECTED:
        return "unprotected";
    case CKPT_EV_PRIMARY_LOST:
        return "primary-lost";
    case CKPT_EV_TAKEOVER:
        return "takeover";
    }
    return "unknown";
}

static uint64_t fnv_words(uint64_t h, const uint8_t *p, size_t len)
{
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t w;

        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

uint64_t ckpt_digest(const uint8_t *ram, size_t ram_len, const uint8_t *dev,
                     size_t dev_len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    h = fnv_words(h, ram, ram_len);
    h = (h ^ dev_len) * 0x100000001b3ull;
    return fnv_words(h, dev, dev_len);
}
