#include "qsave.h"

#include "common/buf.h"
#include "common/error.h"
#include "common/fd.h"
#include "transport/colo_rec.h"
#include "transport/record.h"

#include <errno.h>
#include <openssl/evp.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define PAGE_SHIFT 12u
#define PAGE_SIZE  (1u << PAGE_SHIFT)
#define BATCH      512u /* pages per RAM_PAGES record */

/* An optional colo record (readers that do not know it skip it): SHA-256
 * over the configuration, the whole RAM image and the device state, so a
 * corrupt page is caught before a restored VM runs on it. */
#define QSAVE_REC_DIGEST (XPRT_COLO_REC_BASE | XPRT_COLO_OPTIONAL_BIT | 0x0001u)
#define DIGEST_LEN       32u

/* SHA-256 of config || ram || dev; ram from memory or, when ram is NULL,
 * read from ram_fd. */
static int image_digest(const char *config, const uint8_t *ram, int ram_fd,
                        uint64_t ram_size, const uint8_t *dev, size_t dev_len,
                        uint8_t out[DIGEST_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *buf = NULL;
    unsigned int len = 0;
    int rc = -ENOMEM;

    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        goto out;
    EVP_DigestUpdate(ctx, config, strlen(config));
    if (ram) {
        EVP_DigestUpdate(ctx, ram, ram_size);
    } else {
        buf = malloc(1u << 20);
        if (!buf)
            goto out;
        for (uint64_t off = 0; off < ram_size;) {
            size_t want =
                ram_size - off < (1u << 20) ? ram_size - off : (1u << 20);
            ssize_t n = pread(ram_fd, buf, want, (off_t)off);

            if (n <= 0) {
                rc = n < 0 ? -errno : -EIO;
                goto out;
            }
            EVP_DigestUpdate(ctx, buf, (size_t)n);
            off += (uint64_t)n;
        }
    }
    EVP_DigestUpdate(ctx, dev, dev_len);
    rc = EVP_DigestFinal_ex(ctx, out, &len) && len == DIGEST_LEN ? 0 : -EIO;
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    return rc;
}

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;

    for (size_t i = 0; i < PAGE_SIZE / 8; i++)
        if (w[i])
            return false;
    return true;
}

static int write_buf_rec(int fd, struct colo_buf *b)
{
    int rc = colo_write_all(fd, b->data, b->len);

    colo_buf_reset(b);
    return rc;
}

static int write_pages(int fd, const uint8_t *ram, size_t ram_size)
{
    uint64_t pfns[BATCH];
    uint8_t head[XPRT_RAM_PAGES_HEAD_SIZE(BATCH)];
    struct iovec iov[1 + BATCH];
    uint32_t n = 0;
    int rc;

    for (size_t pfn = 0;; pfn++) {
        bool end = (pfn << PAGE_SHIFT) >= ram_size;

        if (!end && !page_is_zero(ram + (pfn << PAGE_SHIFT))) {
            pfns[n] = pfn;
            iov[1 + n].iov_base = (void *)(ram + (pfn << PAGE_SHIFT));
            iov[1 + n].iov_len = PAGE_SIZE;
            n++;
        }
        if (n && (n == BATCH || end)) {
            rc = xprt_ram_pages_head_encode(head, n, PAGE_SHIFT, pfns);
            if (rc < 0)
                return rc;
            iov[0].iov_base = head;
            iov[0].iov_len = XPRT_RAM_PAGES_HEAD_SIZE(n);
            rc = xprt_rec_writev_fd(fd, XPRT_COLO_RAM_PAGES, iov, (int)(1 + n));
            if (rc < 0)
                return rc;
            n = 0;
        }
        if (end)
            return 0;
    }
}

int orch_qsave_write(const char *path, const char *vm_name,
                     const char *config_json, const uint8_t *ram,
                     size_t ram_size, const uint8_t *dev, size_t dev_len)
{
    struct xprt_colo_hello hello = {
        .version = XPRT_COLO_VERSION,
        .role = XPRT_ROLE_SAVEFILE,
        .page_size = PAGE_SIZE,
        .ram_size = ram_size,
    };
    uint8_t hdr[XPRT_COLO_HDR_SIZE], digest[DIGEST_LEN];
    struct colo_buf b;
    char *tmp = NULL;
    int fd = -1, rc;

    if (ram_size % PAGE_SIZE || strlen(vm_name) > XPRT_COLO_NAME_MAX)
        return -EINVAL;
    snprintf(hello.vm_name, sizeof(hello.vm_name), "%s", vm_name);
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return -ENOMEM;
    colo_buf_init(&b, 0);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    xprt_colo_hdr_encode(hdr);
    rc = colo_write_all(fd, hdr, sizeof(hdr));
    if (rc == 0)
        rc = xprt_colo_hello_write(&b, &hello);
    if (rc == 0)
        rc = xprt_colo_config_write(&b, config_json, strlen(config_json));
    if (rc == 0)
        rc = xprt_ckpt_begin_write(&b, 1, XPRT_CKPT_FLAG_FULL);
    if (rc == 0)
        rc = write_buf_rec(fd, &b);
    if (rc == 0)
        rc = write_pages(fd, ram, ram_size);
    if (rc == 0)
        rc = xprt_devstate_write(&b, XPRT_DEVSTATE_QEMU_XEN_SAVE, dev, dev_len);
    if (rc == 0)
        rc = xprt_ckpt_end_write(&b, 1);
    if (rc == 0)
        rc = image_digest(config_json, ram, -1, ram_size, dev, dev_len, digest);
    if (rc == 0)
        rc = xprt_rec_write_buf(&b, QSAVE_REC_DIGEST, digest, DIGEST_LEN);
    if (rc == 0)
        rc = xprt_rec_write_buf(&b, XPRT_COLO_END, NULL, 0);
    if (rc == 0)
        rc = write_buf_rec(fd, &b);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (rc == 0 && close(fd) < 0)
        rc = -errno;
    fd = -1;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
out:
    colo_close(&fd);
    if (rc < 0)
        unlink(tmp);
    colo_buf_dispose(&b);
    free(tmp);
    return rc;
}

int orch_qsave_is_colo(const char *path)
{
    uint8_t hdr[XPRT_COLO_HDR_SIZE];
    int fd = open(path, O_RDONLY | O_CLOEXEC), ok;

    if (fd < 0)
        return 0;
    ok = colo_read_all(fd, hdr, sizeof(hdr)) == 0 &&
         xprt_colo_hdr_check(hdr) == 0;
    close(fd);
    return ok;
}

void orch_qsave_image_dispose(struct orch_qsave_image *img)
{
    free(img->config_json);
    free(img->dev);
    memset(img, 0, sizeof(*img));
}

/* What the reader expects next. */
enum qs_step {
    QS_HELLO,
    QS_CONFIG,
    QS_BEGIN,
    QS_BODY, /* pages, then the device state */
    QS_END_CKPT,
    QS_DIGEST,
    QS_END,
    QS_DONE,
};

struct qs_reader {
    enum qs_step step;
    struct orch_qsave_image *img;
    int (*open_ram)(void *, uint64_t);
    void *arg;
    int ram_fd;
    uint8_t digest[DIGEST_LEN];
    char *why;
    size_t whysz;
};

static int qs_bad(struct qs_reader *q, const struct xprt_item *it,
                  const char *what)
{
    snprintf(q->why, q->whysz, "record #%llu at offset %llu: %s",
             (unsigned long long)it->index, (unsigned long long)it->offset,
             what);
    return -COLO_ESTREAM_CORRUPT;
}

static int qs_item(struct qs_reader *q, const struct xprt_item *it)
{
    struct orch_qsave_image *img = q->img;
    uint64_t n = 0;
    uint32_t flags = 0;
    int rc;

    if (it->kind != XPRT_ITEM_RECORD)
        return 0; /* the stream header */
    switch (q->step) {
    case QS_HELLO: {
        struct xprt_colo_hello h;

        if (it->type != XPRT_COLO_HELLO)
            return qs_bad(q, it, "expected HELLO");
        rc = xprt_colo_hello_decode(it->body, it->length, &h);
        if (rc < 0)
            return qs_bad(q, it, "bad HELLO");
        if (h.role != XPRT_ROLE_SAVEFILE || h.page_size != PAGE_SIZE ||
            h.ram_size == 0 || h.ram_size % PAGE_SIZE ||
            h.ram_size > (64ull << 30))
            return qs_bad(q, it,
                          "not a save file of a QEMU guest (role, "
                          "page size or RAM size)");
        snprintf(img->vm_name, sizeof(img->vm_name), "%s", h.vm_name);
        img->ram_size = h.ram_size;
        q->step = QS_CONFIG;
        return 0;
    }
    case QS_CONFIG: {
        const char *json;
        size_t len;

        if (it->type != XPRT_COLO_VM_CONFIG ||
            xprt_colo_config_decode(it->body, it->length, &json, &len) < 0)
            return qs_bad(q, it, "expected VM_CONFIG");
        img->config_json = strndup(json, len);
        if (!img->config_json)
            return -ENOMEM;
        q->step = QS_BEGIN;
        return 0;
    }
    case QS_BEGIN:
        if (it->type != XPRT_COLO_CHECKPOINT_BEGIN ||
            xprt_ckpt_begin_decode(it->body, it->length, &n, &flags) < 0 ||
            n != 1 || !(flags & XPRT_CKPT_FLAG_FULL))
            return qs_bad(q, it, "expected CHECKPOINT_BEGIN(1, full)");
        rc = q->open_ram(q->arg, img->ram_size);
        if (rc < 0) {
            snprintf(q->why, q->whysz, "cannot create the RAM file: %s",
                     colo_strerror(rc));
            return rc;
        }
        q->ram_fd = rc;
        q->step = QS_BODY;
        return 0;
    case QS_BODY:
        if (it->type == XPRT_COLO_RAM_PAGES) {
            struct xprt_ram_pages_view v;

            if (xprt_ram_pages_decode(it->body, it->length, 0, PAGE_SHIFT, &v) <
                0)
                return qs_bad(q, it, "bad RAM_PAGES");
            for (uint32_t i = 0; i < v.count; i++) {
                uint64_t pfn = xprt_ram_pages_pfn(&v, i);

                if (pfn >= img->ram_size / PAGE_SIZE)
                    return qs_bad(q, it, "page beyond the end of RAM");
                if (pwrite(q->ram_fd, xprt_ram_pages_page(&v, i), PAGE_SIZE,
                           (off_t)(pfn * PAGE_SIZE)) != PAGE_SIZE) {
                    snprintf(q->why, q->whysz, "writing the RAM file: %s",
                             strerror(errno));
                    return -EIO;
                }
                img->pages++;
            }
            return 0;
        }
        if (it->type == XPRT_COLO_DEVICE_STATE) {
            const uint8_t *blob;
            uint32_t fmt;
            size_t len;

            if (xprt_devstate_decode(it->body, it->length, &fmt, &blob, &len) <
                    0 ||
                fmt != XPRT_DEVSTATE_QEMU_XEN_SAVE || len == 0)
                return qs_bad(q, it, "bad DEVICE_STATE");
            img->dev = malloc(len);
            if (!img->dev)
                return -ENOMEM;
            memcpy(img->dev, blob, len);
            img->dev_len = len;
            q->step = QS_END_CKPT;
            return 0;
        }
        return qs_bad(q, it, "expected RAM_PAGES or DEVICE_STATE");
    case QS_END_CKPT:
        if (it->type != XPRT_COLO_CHECKPOINT_END ||
            xprt_ckpt_end_decode(it->body, it->length, &n) < 0 || n != 1)
            return qs_bad(q, it, "expected CHECKPOINT_END(1)");
        q->step = QS_DIGEST;
        return 0;
    case QS_DIGEST:
        if (it->type != QSAVE_REC_DIGEST || it->length != DIGEST_LEN)
            return qs_bad(q, it, "expected the image digest");
        memcpy(q->digest, it->body, DIGEST_LEN);
        q->step = QS_END;
        return 0;
    case QS_END:
        if (it->type != XPRT_COLO_END)
            return qs_bad(q, it, "expected END");
        q->step = QS_DONE;
        return 0;
    case QS_DONE:
        break;
    }
    return qs_bad(q, it, "data after END");
}

int orch_qsave_read(const char *path, int (*open_ram)(void *, uint64_t),
                    void *arg, struct orch_qsave_image *ret, char *why,
                    size_t whysz)
{
    struct qs_reader q = {.img = ret,
                          .open_ram = open_ram,
                          .arg = arg,
                          .ram_fd = -1,
                          .why = why,
                          .whysz = whysz};
    struct xprt_reader r;
    uint8_t buf[65536];
    int fd, rc = 0;

    memset(ret, 0, sizeof(*ret));
    why[0] = '\0';
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        snprintf(why, whysz, "%s", strerror(errno));
        return rc;
    }
    /* The biggest record is a RAM_PAGES batch of XPRT_COLO_RAM_PAGES_MAX
     * pages, or a 64 MiB device state. */
    xprt_reader_init(&r, XPRT_FMT_COLO, 64u << 20);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        size_t off = 0;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            snprintf(why, whysz, "read: %s", strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        while (off < (size_t)n) {
            struct xprt_item it;
            ssize_t used =
                xprt_reader_push(&r, buf + off, (size_t)n - off, &it);

            if (used < 0) {
                rc = (int)used;
                snprintf(why, whysz, "%s", xprt_reader_why(&r));
                goto out;
            }
            off += (size_t)used;
            if (it.kind != XPRT_ITEM_NONE) {
                rc = qs_item(&q, &it);
                if (rc < 0)
                    goto out;
            }
        }
    }
    rc = xprt_reader_eof(&r);
    if (rc < 0)
        snprintf(why, whysz, "%s", xprt_reader_why(&r));
    else if (q.step != QS_DONE) {
        rc = -COLO_ESTREAM_TRUNCATED;
        snprintf(why, whysz, "the file ends before the image is complete");
    } else {
        uint8_t d[DIGEST_LEN];

        rc = image_digest(ret->config_json, NULL, q.ram_fd, ret->ram_size,
                          ret->dev, ret->dev_len, d);
        if (rc == 0 && memcmp(d, q.digest, DIGEST_LEN) != 0) {
            rc = -COLO_ESTREAM_CORRUPT;
            snprintf(why, whysz,
                     "the image digest does not match: the "
                     "file is corrupt");
        } else if (rc < 0) {
            snprintf(why, whysz, "reading the RAM file back: %s",
                     colo_strerror(rc));
        }
    }
out:
    xprt_reader_dispose(&r);
    colo_close(&fd);
    colo_close(&q.ram_fd);
    if (rc < 0)
        orch_qsave_image_dispose(ret);
    return rc;
}
