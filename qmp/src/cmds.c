/* Convenience wrappers around qmp_send(): query-status, stop, cont,
 * add-fd, remove-fd, getfd, closefd. */
#include "qmp/qmp.h"

#include <errno.h>
#include <stdlib.h>

struct wrap {
    void (*cb)(void);
    void *arg;
};

static struct wrap *wrap_new(void (*cb)(void), void *arg)
{
    struct wrap *w = malloc(sizeof(*w));

    if (w) {
        w->cb = cb;
        w->arg = arg;
    }
    return w;
}

static int send_wrapped(struct qmp_client *c, const char *cmd, json_t *args,
                        int fd, qmp_reply_cb reply, struct wrap *w)
{
    int rc;

    if (!w) {
        json_decref(args);
        return -ENOMEM;
    }
    rc = qmp_send_ex(c, cmd, args, fd, 0, reply, w, free, NULL);
    json_decref(args);
    if (rc < 0)
        free(w);
    return rc;
}

static void status_reply(struct qmp_client *c, int rc, json_t *ret,
                         const char *desc, void *arg)
{
    struct wrap *w = arg;
    qmp_status_cb cb = (qmp_status_cb)w->cb;
    const char *st = json_string_value(json_object_get(ret, "status"));
    bool running = json_is_true(json_object_get(ret, "running"));

    (void)desc;
    if (rc == 0 && !st)
        rc = -EPROTO;
    cb(c, rc, rc == 0 ? st : NULL, running, w->arg);
}

int qmp_query_status(struct qmp_client *c, qmp_status_cb cb, void *arg)
{
    return send_wrapped(c, "query-status", NULL, -1, status_reply,
                        wrap_new((void (*)(void))cb, arg));
}

int qmp_stop(struct qmp_client *c, qmp_reply_cb cb, void *arg)
{
    return qmp_send(c, "stop", NULL, -1, 0, cb, arg, NULL);
}

int qmp_cont(struct qmp_client *c, qmp_reply_cb cb, void *arg)
{
    return qmp_send(c, "cont", NULL, -1, 0, cb, arg, NULL);
}

static void addfd_reply(struct qmp_client *c, int rc, json_t *ret,
                        const char *desc, void *arg)
{
    struct wrap *w = arg;
    qmp_addfd_cb cb = (qmp_addfd_cb)w->cb;
    json_t *set = json_object_get(ret, "fdset-id");
    json_t *fd = json_object_get(ret, "fd");

    (void)desc;
    if (rc == 0 && (!json_is_integer(set) || !json_is_integer(fd)))
        rc = -EPROTO;
    if (rc < 0) {
        cb(c, rc, -1, -1, w->arg);
        return;
    }
    cb(c, 0, (int)json_integer_value(set), (int)json_integer_value(fd), w->arg);
}

int qmp_add_fd(struct qmp_client *c, int fd, int fdset_id, qmp_addfd_cb cb,
               void *arg)
{
    json_t *args = json_object();

    if (fd < 0) {
        json_decref(args);
        return -EBADF;
    }
    if (args && fdset_id >= 0)
        json_object_set_new(args, "fdset-id", json_integer(fdset_id));
    return send_wrapped(c, "add-fd", args, fd, addfd_reply,
                        wrap_new((void (*)(void))cb, arg));
}

int qmp_remove_fd(struct qmp_client *c, int fdset_id, int qemu_fd,
                  qmp_reply_cb cb, void *arg)
{
    json_t *args = json_pack("{s:i}", "fdset-id", fdset_id);
    int rc;

    if (!args)
        return -ENOMEM;
    if (qemu_fd >= 0)
        json_object_set_new(args, "fd", json_integer(qemu_fd));
    rc = qmp_send(c, "remove-fd", args, -1, 0, cb, arg, NULL);
    json_decref(args);
    return rc;
}

int qmp_getfd(struct qmp_client *c, int fd, const char *name, qmp_reply_cb cb,
              void *arg)
{
    json_t *args = json_pack("{s:s}", "fdname", name);
    int rc;

    if (!args)
        return -ENOMEM;
    if (fd < 0) {
        json_decref(args);
        return -EBADF;
    }
    rc = qmp_send(c, "getfd", args, fd, 0, cb, arg, NULL);
    json_decref(args);
    return rc;
}

int qmp_closefd(struct qmp_client *c, const char *name, qmp_reply_cb cb,
                void *arg)
{
    json_t *args = json_pack("{s:s}", "fdname", name);
    int rc;

    if (!args)
        return -ENOMEM;
    rc = qmp_send(c, "closefd", args, -1, 0, cb, arg, NULL);
    json_decref(args);
    return rc;
}
