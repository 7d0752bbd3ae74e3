/* common/split.h : train/val/test assignment of subjects: a meta.csv file (TotalSegmentator's
 * layout: ';'-separated, optional UTF-8 BOM, a header naming columns image_id and split), or
 * a deterministic 80/10/10 split from a hash of the subject id. */
#ifndef SEG_SPLIT_H
#define SEG_SPLIT_H
#include <stddef.h>

typedef struct SplitTable {
    int    n;
    char **ids;      /* owned */
    int   *split;    /* CACHE_SPLIT_* */
} SplitTable;

/* Parse a meta.csv. ',' is accepted as the separator when the header has no ';'.
 * SEG_EFORMAT naming the file and line for a missing column or an unknown split value. */
int  split_read_csv(const char *path, SplitTable *out);
/* Parse from memory (for tests and fuzzing); name is used in messages. */
int  split_parse(const char *text, size_t n, const char *name, SplitTable *out);
/* Split of id from the table, or -1 if absent. */
int  split_lookup(const SplitTable *t, const char *id);
/* Deterministic split from FNV-1a 64 of id: < 80% train, < 90% val, else test. */
int  split_hash(const char *id);
void split_free(SplitTable *t);   /* NULL-safe */

#endif
