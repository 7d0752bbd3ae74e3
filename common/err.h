/* common/err.h : segkit status codes and the per-thread error message.
 * Every library function returns int: 0 (SEG_OK) or a negative SEG_E* code.
 * The detail goes into a _Thread_local buffer, read with seg_errmsg(). */
#ifndef SEG_ERR_H
#define SEG_ERR_H

enum {
    SEG_OK      = 0,
    SEG_EIO     = -1,  /* open/read/write/rename failed, missing file */
    SEG_EFORMAT = -2,  /* bad magic, version, header, corrupt data */
    SEG_ENOMEM  = -3,  /* allocation failed or a size limit was hit */
    SEG_EDB     = -4,  /* LMDB error */
    SEG_EZSTD   = -5,  /* zstd error */
    SEG_EGPU    = -6,  /* CUDA / cuDNN / cuBLAS error or no usable GPU */
    SEG_EARG    = -7,  /* invalid argument or option */
    SEG_EMISMATCH = -8 /* inputs that must agree do not (shape, affine, labels) */
};

/* Static description of a code; never NULL. */
const char *seg_strerror(int rc);
/* Format a detail message into this thread's buffer and return rc. seg_errmsg() may be
 * one of the arguments (to prefix context to an inner error). */
int seg_err(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* This thread's last detail message ("" if none). */
const char *seg_errmsg(void);

/* Forward a negative status to the caller. */
#define TRY(x) do { int rc_ = (x); if (rc_ < 0) return rc_; } while (0)

/* Turn a foreign status into ours with the expression text and file:line. */
#define CHECK_GEN(T, x, ok, strfn, code) do { T s_ = (x); if (s_ != (ok)) return seg_err(code, \
    "%s:%d: %s -> %s", __FILE__, __LINE__, #x, strfn(s_)); } while (0)
#define MDB_TRY(x) CHECK_GEN(int, x, MDB_SUCCESS, mdb_strerror, SEG_EDB)

#endif
