/* common/fsutil.c : read whole files, atomic writes, mkdir -p. */
#define _POSIX_C_SOURCE 200809L
#include "fsutil.h"
#include "err.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_read_all(const char *path, char **buf, size_t *n, size_t max_bytes)
{
    *buf = NULL; *n = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return seg_err(SEG_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { int e = errno; close(fd); return seg_err(SEG_EIO, "%s: %s", path, strerror(e)); }
    if (!S_ISREG(st.st_mode)) { close(fd); return seg_err(SEG_EIO, "%s: not a regular file", path); }
    size_t size = (size_t)st.st_size;
    if (max_bytes && size > max_bytes) {
        close(fd);
        return seg_err(SEG_ENOMEM, "%s: %zu bytes, over the limit of %zu", path, size, max_bytes);
    }
    char *b = malloc(size + 1);
    if (!b) { close(fd); return seg_err(SEG_ENOMEM, "%s: cannot allocate %zu bytes", path, size + 1); }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, b + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(b); close(fd);
            return seg_err(SEG_EIO, "%s: read failed at byte %zu: %s", path, got, e ? strerror(e) : "file shrank");
        }
        got += (size_t)r;
    }
    close(fd);
    b[size] = 0;
    *buf = b; *n = size;
    return SEG_OK;
}

int fs_sync_parent(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == path) strcpy(dir, "/");
    else {
        size_t len = (size_t)(slash - path);
        if (len >= sizeof dir) return seg_err(SEG_EARG, "%s: path too long", path);
        memcpy(dir, path, len); dir[len] = 0;
    }
    int fd = open(dir, O_RDONLY);
    if (fd < 0) return seg_err(SEG_EIO, "%s: %s", dir, strerror(errno));
    fsync(fd);   /* some file systems refuse fsync on directories; the rename is still durable enough */
    close(fd);
    return SEG_OK;
}

int fs_write_atomic(const char *path, const void *data, size_t n)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return seg_err(SEG_EARG, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return seg_err(SEG_EIO, "%s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            int e = errno; close(fd); unlink(tmp);
            return seg_err(SEG_EIO, "%s: write failed: %s", path, strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno; close(fd); unlink(tmp);
        return seg_err(SEG_EIO, "%s: fsync failed: %s", path, strerror(e));
    }
    if (close(fd) != 0) { int e = errno; unlink(tmp); return seg_err(SEG_EIO, "%s: close failed: %s", path, strerror(e)); }
    if (rename(tmp, path) != 0) {
        int e = errno; unlink(tmp);
        return seg_err(SEG_EIO, "%s: rename failed: %s", path, strerror(e));
    }
    return fs_sync_parent(path);
}

int fs_mkdirs(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) return seg_err(SEG_EARG, "bad directory path '%s'", path);
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return seg_err(SEG_EIO, "mkdir %s: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    if (!fs_is_dir(path)) return seg_err(SEG_EIO, "%s: exists and is not a directory", path);
    return SEG_OK;
}

int fs_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int fs_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int fs_join(char *out, size_t cap, const char *a, const char *b)
{
    int n = snprintf(out, cap, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= cap) return seg_err(SEG_EARG, "path too long: %s/%s", a, b);
    return SEG_OK;
}
