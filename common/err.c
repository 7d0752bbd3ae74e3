/* common/err.c : status strings and the per-thread detail buffer. */
#include "err.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[1024];

const char *seg_strerror(int rc)
{
    switch (rc) {
    case SEG_OK:        return "success";
    case SEG_EIO:       return "I/O error";
    case SEG_EFORMAT:   return "bad or corrupt format";
    case SEG_ENOMEM:    return "out of memory or over a size limit";
    case SEG_EDB:       return "LMDB error";
    case SEG_EZSTD:     return "zstd error";
    case SEG_EGPU:      return "GPU error";
    case SEG_EARG:      return "invalid argument";
    case SEG_EMISMATCH: return "inputs do not match";
    default:            return "unknown error";
    }
}

int seg_err(int rc, const char *fmt, ...)
{
    /* format into a copy first: callers may pass seg_errmsg() itself as an argument */
    char tmp[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(g_msg, tmp, sizeof g_msg);
    return rc;
}

const char *seg_errmsg(void)
{
    return g_msg;
}
