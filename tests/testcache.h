/* tests/testcache.h : build a one-subject cache (split test) of the real example subject
 * in a fresh temp dir, for tests and benchmarks that need real cached slices.
 * tmp is a mkdtemp template the caller removes afterwards. Returns 77 when the example
 * is not there, else SEG_OK or a SEG_E* code (seg_errmsg says why). */
#ifndef SEG_TESTCACHE_H
#define SEG_TESTCACHE_H
#include "cache.h"
#include "err.h"
#include "fsutil.h"
#include "prep.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int t_example_cache(const char *shared, char *tmp, CacheReader **cr, CacheCursor **cur)
{
    char ex[4096], real[4096], ds[4200], link[4300], cdir[4200], meta[4300];
    *cr = NULL; *cur = NULL;
    snprintf(ex, sizeof ex, "%s/data/totalseg-example/s0000", shared);
    if (!realpath(ex, real)) return 77;
    if (!mkdtemp(tmp)) return seg_err(SEG_EIO, "mkdtemp %s", tmp);
    snprintf(ds, sizeof ds, "%s/ds", tmp);
    snprintf(link, sizeof link, "%s/s0000", ds);
    snprintf(cdir, sizeof cdir, "%s/cache", tmp);
    snprintf(meta, sizeof meta, "%s/meta.csv", ds);
    int rc = fs_mkdirs(ds);
    if (rc == 0 && symlink(real, link) != 0) rc = seg_err(SEG_EIO, "symlink %s", link);
    if (rc == 0) rc = fs_write_atomic(meta, "image_id;split\ns0000;test\n", 26);
    PrepOptions po;
    prep_default_options(&po);
    po.verbosity = 0;
    po.threads = 2;
    PrepStats ps;
    if (rc == 0) rc = prep_run(ds, cdir, &po, &ps);
    if (rc == 0) rc = cache_open(cdir, cr);
    if (rc == 0) rc = cache_cursor_open(*cr, cur);
    return rc;
}
#endif
