#include "common/fd.h"
#include "common/error.h"
#include "common/timeutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

void colo_close(int *fd)
{
    int saved = errno;

    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    errno = saved;
}

static int fd_flag(int fd, int get, int set, int flag, int on)
{
    int flags = fcntl(fd, get);

    if (flags < 0)
        return -errno;
    flags = on ? (flags | flag) : (flags & ~flag);
    if (fcntl(fd, set, flags) < 0)
        return -errno;
    return 0;
}

int colo_fd_set_cloexec(int fd, int on)
{
    return fd_flag(fd, F_GETFD, F_SETFD, FD_CLOEXEC, on);
}

int colo_fd_set_nonblock(int fd, int on)
{
    return fd_flag(fd, F_GETFL, F_SETFL, O_NONBLOCK, on);
}

int colo_fd_set_timeouts(int fd, unsigned rcv_ms, unsigned snd_ms)
{
    struct timeval tv;

    if (rcv_ms) {
        tv = colo_ms_to_tv(rcv_ms);
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
            return -errno;
    }
    if (snd_ms) {
        tv = colo_ms_to_tv(snd_ms);
        if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
            return -errno;
    }
    return 0;
}

int colo_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int colo_read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return got ? -COLO_ESTREAM_TRUNCATED : -COLO_EPEER_CLOSED;
        got += (size_t)n;
    }
    return 0;
}

int colo_read_file(const char *path, size_t max, char **ret_buf,
                   size_t *ret_len)
{
    int fd = -1, rc;
    char *buf = NULL;
    size_t len = 0, cap = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    for (;;) {
        ssize_t n;

        if (len + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            char *nbuf;

            if (ncap > max + 1)
                ncap = max + 1;
            if (ncap <= len + 1) {
                /* Exactly max bytes so far: fine if the file ends here. */
                char probe;
                ssize_t n2;

                do {
                    n2 = read(fd, &probe, 1);
                } while (n2 < 0 && errno == EINTR);
                if (n2 == 0)
                    break;
                rc = n2 < 0 ? -errno : -EFBIG;
                goto out;
            }
            nbuf = realloc(buf, ncap);
            if (!nbuf) {
                rc = -ENOMEM;
                goto out;
            }
            buf = nbuf;
            cap = ncap;
        }
        n = read(fd, buf + len, cap - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (!buf) {
        buf = malloc(1);
        if (!buf) {
            rc = -ENOMEM;
            goto out;
        }
    }
    buf[len] = '\0';
    *ret_buf = buf;
    *ret_len = len;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    colo_close(&fd);
    return rc;
}

int colo_write_file(const char *path, const void *buf, size_t len)
{
    int fd, rc;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    rc = colo_write_all(fd, buf, len);
    colo_close(&fd);
    return rc;
}

int colo_count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    if (!d)
        return -errno;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the DIR's own fd */
}
