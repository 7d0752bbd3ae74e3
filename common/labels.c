/* common/labels.c : label lists and label_map.json. */
#include "labels.h"
#include "err.h"
#include "fsutil.h"
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void labels_free(LabelList *l)
{
    if (!l) return;
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    l->names = NULL; l->n = 0;
}

int labels_find(const LabelList *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->names[i], name) == 0) return i;
    return -1;
}

static int valid_name(const char *s)
{
    if (!*s || strlen(s) > 200) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.')) return 0;
    return 1;
}

int labels_from_names(const char *const *names, int n, LabelList *out)
{
    out->n = 0;
    out->names = calloc(n > 0 ? (size_t)n : 1, sizeof(char *));
    if (!out->names) return seg_err(SEG_ENOMEM, "labels: %d names", n);
    for (int i = 0; i < n; i++) {
        if (!valid_name(names[i])) { labels_free(out); return seg_err(SEG_EARG, "invalid structure name '%s'", names[i]); }
        if (labels_find(out, names[i]) >= 0) { labels_free(out); return seg_err(SEG_EARG, "duplicate structure name '%s'", names[i]); }
        out->names[i] = strdup(names[i]);
        if (!out->names[i]) { labels_free(out); return seg_err(SEG_ENOMEM, "labels"); }
        out->n = i + 1;
    }
    return SEG_OK;
}

static int from_json(const char *path, const cJSON *root, LabelList *out)
{
    int n = cJSON_GetArraySize(root);
    if (n <= 0) return seg_err(SEG_EFORMAT, "%s: no labels", path);
    const char **names = calloc((size_t)n, sizeof *names);
    if (!names) return seg_err(SEG_ENOMEM, "%s", path);
    int rc = SEG_OK, i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (cJSON_IsArray(root)) {
            if (!cJSON_IsString(it)) { rc = seg_err(SEG_EFORMAT, "%s: entry %d is not a string", path, i); break; }
            names[i] = it->valuestring;
        } else {
            double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
            if (!(d >= 0 && d < n) || d != (double)(int)d) {   /* range first: casting a huge double is UB */
                rc = seg_err(SEG_EFORMAT, "%s: channel of '%s' must be an integer in 0..%d", path, it->string, n - 1);
                break;
            }
            if (names[(int)d]) { rc = seg_err(SEG_EFORMAT, "%s: channel %d used twice", path, (int)d); break; }
            names[(int)d] = it->string;
        }
        i++;
    }
    if (rc == SEG_OK) {
        rc = labels_from_names(names, n, out);
        if (rc < 0) rc = seg_err(rc, "%s: %s", path, seg_errmsg());
    }
    free(names);
    return rc;
}

int labels_parse(const char *text, size_t n, const char *path, LabelList *out)
{
    out->n = 0; out->names = NULL;
    char *buf = malloc(n + 1);
    if (!buf) return seg_err(SEG_ENOMEM, "%s", path);
    memcpy(buf, text, n);
    buf[n] = 0;
    if (memchr(buf, 0, n)) { free(buf); return seg_err(SEG_EFORMAT, "%s: contains NUL bytes (not a label file)", path); }
    char *p = buf;
    while (*p && isspace((unsigned char)*p)) p++;
    int rc;
    if (*p == '{' || *p == '[') {
        cJSON *root = cJSON_ParseWithLength(buf, n);
        if (!root) rc = seg_err(SEG_EFORMAT, "%s: invalid JSON", path);
        else rc = from_json(path, root, out);
        cJSON_Delete(root);
    } else {
        /* plain text: one name per line, '#' starts a comment */
        int cap = 64, cnt = 0;
        const char **names = malloc(sizeof(char *) * (size_t)cap);
        rc = names ? SEG_OK : seg_err(SEG_ENOMEM, "%s", path);
        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); rc == SEG_OK && line; line = strtok_r(NULL, "\n", &save)) {
            char *h = strchr(line, '#');
            if (h) *h = 0;
            while (*line && isspace((unsigned char)*line)) line++;
            char *e = line + strlen(line);
            while (e > line && isspace((unsigned char)e[-1])) *--e = 0;
            if (!*line) continue;
            if (cnt == cap) {
                const char **nn = realloc(names, sizeof(char *) * (size_t)(cap *= 2));
                if (!nn) { rc = seg_err(SEG_ENOMEM, "%s", path); break; }
                names = nn;
            }
            names[cnt++] = line;
        }
        if (rc == SEG_OK && cnt == 0) rc = seg_err(SEG_EFORMAT, "%s: no labels", path);
        if (rc == SEG_OK) {
            rc = labels_from_names(names, cnt, out);
            if (rc < 0) rc = seg_err(rc, "%s: %s", path, seg_errmsg());
        }
        free(names);
    }
    free(buf);
    return rc;
}

int labels_read_file(const char *path, LabelList *out)
{
    char *buf; size_t n;
    out->n = 0; out->names = NULL;
    TRY(fs_read_all(path, &buf, &n, 16u << 20));
    int rc = labels_parse(buf, n, path, out);
    free(buf);
    return rc;
}

char *labels_to_json(const LabelList *l)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    for (int i = 0; i < l->n; i++)
        if (!cJSON_AddNumberToObject(root, l->names[i], i)) { cJSON_Delete(root); return NULL; }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}

int labels_write_json(const char *path, const LabelList *l)
{
    char *s = labels_to_json(l);
    if (!s) return seg_err(SEG_ENOMEM, "%s: JSON", path);
    size_t n = strlen(s);
    s[n] = '\n';   /* replace the NUL: write n+1 bytes ending in a newline */
    int rc = fs_write_atomic(path, s, n + 1);
    free(s);
    return rc;
}

int labels_is_ts_total(const char *const *names, int n)
{
    if (n != LABELS_TS_TOTAL_N) return 0;
    for (int i = 0; i < LABELS_TS_TOTAL_N; i++) {
        int found = 0;
        for (int j = 0; j < n && !found; j++) found = strcmp(labels_ts_total[i], names[j]) == 0;
        if (!found) return 0;
    }
    return 1;
}
