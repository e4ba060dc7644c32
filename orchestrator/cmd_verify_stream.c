/*
 * colo verify-stream FILE|- : check a stream or save file (xl save file,
 * libxl v2 stream, bare libxc stream, colo stream, COLO back channel) and
 * say exactly where and why it is bad. Uses only transport/ and common/.
 *
 * Exit: 0 valid, 6 corrupt (ORCH_EXIT_STREAM), 1 cannot read, 2 usage.
 */
#include "orch.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "transport/verify.h"

int orch_cmd_verify_stream(int argc, char **argv);

static void usage(FILE *f)
{
    fprintf(f, "Usage: colo verify-stream [--format F] [--max-record BYTES] "
               "FILE|-\n"
               "Check a stream or save file: headers, lengths, padding, layer\n"
               "tracking (libxl/libxc), checkpoint numbering, record bodies.\n"
               "  --format F   auto (default), xl, libxl, libxc, colo,\n"
               "               backchannel, records\n"
               "  --quiet      no summary, only errors\n"
               "Exit codes: 0 valid, 6 corrupt, 1 unreadable, 2 usage.\n");
}

static int parse_format(const char *s, enum xprt_format *ret)
{
    static const struct {
        const char *name;
        enum xprt_format fmt;
    } map[] = {
        {"auto", XPRT_FMT_AUTO},       {"xl", XPRT_FMT_XL},
        {"libxl", XPRT_FMT_LIBXL},     {"libxc", XPRT_FMT_LIBXC},
        {"colo", XPRT_FMT_COLO},       {"backchannel", XPRT_FMT_BACKCHANNEL},
        {"records", XPRT_FMT_RECORDS},
    };

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (!strcmp(s, map[i].name)) {
            *ret = map[i].fmt;
            return 0;
        }
    return -EINVAL;
}

static void summary(const char *name, const struct xprt_verify_summary *s)
{
    printf("%s: valid %s stream, %llu bytes, %llu records", name,
           xprt_format_name(s->fmt), (unsigned long long)s->bytes,
           (unsigned long long)s->records);
    if (s->records_libxl || s->records_libxc)
        printf(" (libxl %llu, libxc %llu)",
               (unsigned long long)s->records_libxl,
               (unsigned long long)s->records_libxc);
    printf("\n");
    if (s->vm_name[0] || s->page_size)
        printf("  vm \"%s\", page size %u\n", s->vm_name, s->page_size);
    printf("  checkpoints %llu", (unsigned long long)s->checkpoints);
    if (s->fmt == XPRT_FMT_COLO && s->checkpoints)
        printf(" (#%llu..#%llu)", (unsigned long long)s->first_ckpt,
               (unsigned long long)s->last_ckpt);
    printf(", pages %llu, device state %llu bytes, config %llu bytes\n",
           (unsigned long long)s->pages, (unsigned long long)s->devstate_bytes,
           (unsigned long long)s->config_bytes);
    if (s->disk_writes)
        printf("  disk writes %llu, %llu bytes\n",
               (unsigned long long)s->disk_writes,
               (unsigned long long)s->disk_bytes);
}

int orch_cmd_verify_stream(int argc, char **argv)
{
    static const struct option opts[] = {
        {"format", required_argument, NULL, 'f'},
        {"max-record", required_argument, NULL, 'm'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    enum xprt_format fmt = XPRT_FMT_AUTO;
    unsigned long max_record = 0;
    struct xprt_verifier v;
    const char *path;
    int c, fd = -1, quiet = 0, rc, ret;
    uint8_t *buf = NULL;
    const size_t bufsz = 1u << 20;

    optind = 1;
    while ((c = getopt_long(argc, argv, "f:m:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (parse_format(optarg, &fmt) < 0)
                return orch_usage_error("verify-stream", "unknown format '%s'",
                                        optarg);
            break;
        case 'm': {
            char *end;

            errno = 0;
            max_record = strtoul(optarg, &end, 0);
            if (errno || *end || max_record > UINT32_MAX)
                return orch_usage_error("verify-stream",
                                        "bad --max-record '%s'", optarg);
            break;
        }
        case 'q':
            quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return ORCH_EXIT_OK;
        default:
            usage(stderr);
            return ORCH_EXIT_USAGE;
        }
    }
    if (optind != argc - 1)
        return orch_usage_error("verify-stream", "expected one FILE or -");
    path = argv[optind];
    if (!strcmp(path, "-")) {
        fd = dup(0);
    } else {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        fprintf(stderr, "colo: verify-stream: %s: %s\n", path, strerror(errno));
        return ORCH_EXIT_FAIL;
    }
    buf = malloc(bufsz);
    if (!buf) {
        colo_close(&fd);
        return ORCH_EXIT_FAIL;
    }
    xprt_verifier_init(&v, fmt, (uint32_t)max_record);
    rc = 0;
    for (;;) {
        ssize_t n = read(fd, buf, bufsz);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "colo: verify-stream: %s: read: %s\n", path,
                    strerror(errno));
            ret = ORCH_EXIT_FAIL;
            goto out;
        }
        if (n == 0)
            break;
        rc = xprt_verifier_push(&v, buf, (size_t)n);
        if (rc < 0)
            break;
    }
    if (rc == 0)
        rc = xprt_verifier_finish(&v);
    if (rc < 0) {
        fprintf(stderr, "colo: verify-stream: %s: %s: %s\n", path,
                colo_strerror(rc), xprt_verifier_why(&v));
        ret = ORCH_EXIT_STREAM;
        goto out;
    }
    if (!quiet)
        summary(path, &v.sum);
    ret = ORCH_EXIT_OK;
out:
    xprt_verifier_dispose(&v);
    free(buf);
    colo_close(&fd);
    return ret;
}
