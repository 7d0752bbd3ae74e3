/* common/labels.h : structure (channel) names: the built-in TotalSegmentator v2
 * 'total' list, label files, and label_map.json (name -> channel). */
#ifndef SEG_LABELS_H
#define SEG_LABELS_H
#include <stddef.h>

#define LABELS_TS_TOTAL_N 117
/* TotalSegmentator v2 class_map["total"]: channel c is multilabel value c+1. */
extern const char *const labels_ts_total[LABELS_TS_TOTAL_N];

typedef struct LabelList {
    int    n;
    char **names;   /* n strings, owned */
} LabelList;

/* Copy n names into out (caller frees with labels_free). SEG_EARG on duplicates. */
int  labels_from_names(const char *const *names, int n, LabelList *out);
/* Read a label file: a label_map.json ({"name": channel, ...}), a JSON array of
 * names, or plain text with one name per line ('#' comments). */
int  labels_read_file(const char *path, LabelList *out);
/* Same from memory (for tests and fuzzing); path names it in messages. */
int  labels_parse(const char *text, size_t n, const char *path, LabelList *out);
/* Write {"name": channel, ...} in channel order, atomically. */
int  labels_write_json(const char *path, const LabelList *l);
/* JSON text of the same map (malloc'd, caller frees), or NULL on ENOMEM. */
char *labels_to_json(const LabelList *l);
/* Channel of name, or -1. */
int  labels_find(const LabelList *l, const char *name);
/* 1 if the n names are exactly the 117 TotalSegmentator v2 names (any order). */
int  labels_is_ts_total(const char *const *names, int n);
void labels_free(LabelList *l);   /* NULL-safe, leaves l empty */

#endif
