/* common/fsutil.h : small file-system helpers shared by all programs. */
#ifndef SEG_FSUTIL_H
#define SEG_FSUTIL_H
#include <stddef.h>

/* Read a whole file into a malloc'd buffer (NUL-terminated, *n excludes the NUL).
 * SEG_EIO naming the path on failure; SEG_ENOMEM if larger than max_bytes (0: no limit). */
int fs_read_all(const char *path, char **buf, size_t *n, size_t max_bytes);
/* Write data to path atomically: "<path>.tmp.<pid>", fsync, rename, fsync dir. */
int fs_write_atomic(const char *path, const void *data, size_t n);
/* mkdir -p. */
int fs_mkdirs(const char *path);
/* 1 if path exists and is a directory / regular file. */
int fs_is_dir(const char *path);
int fs_is_file(const char *path);
/* fsync the directory that contains path (after a rename). */
int fs_sync_parent(const char *path);
/* Join a and b with '/', into out[cap]; SEG_EARG if it does not fit. */
int fs_join(char *out, size_t cap, const char *a, const char *b);

#endif
