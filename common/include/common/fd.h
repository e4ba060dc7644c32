/*
 * File descriptors. Every fd colo opens is O_CLOEXEC; an fd variable that
 * owns nothing holds -1; fds are closed through colo_close(), which resets
 * the variable so a second close is harmless.
 */
#ifndef COLO_COMMON_FD_H
#define COLO_COMMON_FD_H

#include <stddef.h>
#include <sys/types.h>

/* Close *fd if >= 0 and set it to -1. Keeps errno. */
void colo_close(int *fd);
int colo_fd_set_cloexec(int fd, int on);
int colo_fd_set_nonblock(int fd, int on);
/* A blocking socket's receive and send timeouts (SO_RCVTIMEO/SO_SNDTIMEO)
 * in ms; 0 leaves that direction as it is. Returns 0 or -errno. */
int colo_fd_set_timeouts(int fd, unsigned rcv_ms, unsigned snd_ms);
/* Write/read exactly len bytes on a blocking fd, retrying EINTR.
 * read_all returns -COLO_ESTREAM_TRUNCATED on EOF after some bytes and
 * -COLO_EPEER_CLOSED on EOF before any. */
int colo_write_all(int fd, const void *buf, size_t len);
int colo_read_all(int fd, void *buf, size_t len);
/* Whole file helpers: read up to max bytes (fails with -EFBIG beyond). */
int colo_read_file(const char *path, size_t max, char **ret_buf,
                   size_t *ret_len);
int colo_write_file(const char *path, const void *buf, size_t len);
/* Count open fds of this process (for leak checks in tests). */
int colo_count_open_fds(void);

#endif
