/* tests/test_split.c : meta.csv parsing (BOM, ';' and ',', errors), hash split, labels files. */
#include "split.h"
#include "cache.h"
#include "labels.h"
#include "err.h"
#include "testutil.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    SplitTable t;
    const char csv[] = "\xEF\xBB\xBFimage_id;age;split;gender\ns0000;50;train;m\r\ns0001;60;val;f\n\ns0002;70;test;m\n";
    CHECK(split_parse(csv, sizeof csv - 1, "meta.csv", &t) == 0 && t.n == 3, "BOM + ';' + CRLF: %d rows", t.n);
    CHECK(split_lookup(&t, "s0000") == CACHE_SPLIT_TRAIN && split_lookup(&t, "s0001") == CACHE_SPLIT_VAL &&
          split_lookup(&t, "s0002") == CACHE_SPLIT_TEST && split_lookup(&t, "s9") == -1, "lookups");
    split_free(&t);
    const char comma[] = "split,image_id\ntrain,a\n";
    CHECK(split_parse(comma, sizeof comma - 1, "m.csv", &t) == 0 && split_lookup(&t, "a") == 0, "',' separator, other column order");
    split_free(&t);
    const char nocol[] = "id;split\na;train\n";
    CHECK(split_parse(nocol, sizeof nocol - 1, "m.csv", &t) == SEG_EFORMAT && strstr(seg_errmsg(), "image_id"), "missing column: %s", seg_errmsg());
    const char badsplit[] = "image_id;split\na;training\n";
    CHECK(split_parse(badsplit, sizeof badsplit - 1, "m.csv", &t) == SEG_EFORMAT && strstr(seg_errmsg(), "m.csv:2"), "bad split value: %s", seg_errmsg());
    const char shortrow[] = "image_id;x;split\na;1\n";
    CHECK(split_parse(shortrow, sizeof shortrow - 1, "m.csv", &t) == SEG_EFORMAT, "short row: %s", seg_errmsg());
    const char bin[] = "image_id;split\n\0\1\2";
    CHECK(split_parse(bin, sizeof bin - 1, "m.csv", &t) == SEG_EFORMAT, "binary data refused");
    int counts[3] = { 0 };
    char id[32];
    for (int i = 0; i < 10000; i++) { snprintf(id, sizeof id, "s%04d", i); counts[split_hash(id)]++; }
    CHECK(counts[0] > 7700 && counts[0] < 8300 && counts[1] > 800 && counts[2] > 800, "hash split ~80/10/10: %d %d %d", counts[0], counts[1], counts[2]);
    CHECK(split_hash("s0042") == split_hash("s0042"), "hash split deterministic");

    LabelList l;
    CHECK(labels_from_names(labels_ts_total, LABELS_TS_TOTAL_N, &l) == 0 && l.n == 117, "TS labels");
    CHECK(labels_find(&l, "spleen") == 0 && labels_find(&l, "liver") == 4 && labels_find(&l, "costal_cartilages") == 116, "TS order");
    CHECK(labels_is_ts_total((const char *const *)l.names, l.n), "is_ts_total");
    char path[] = "/tmp/segkit_labels_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "temp file");
    close(fd);
    CHECK(labels_write_json(path, &l) == 0, "write label_map.json");
    LabelList back;
    CHECK(labels_read_file(path, &back) == 0 && back.n == 117 && !strcmp(back.names[116], "costal_cartilages"), "read it back");
    labels_free(&back);
    FILE *f = fopen(path, "w");
    fputs("# my labels\nliver\n  spleen  \n\nkidney_left # left\n", f);
    fclose(f);
    CHECK(labels_read_file(path, &back) == 0 && back.n == 3 && !strcmp(back.names[1], "spleen"), "text label file");
    labels_free(&back);
    f = fopen(path, "w");
    fputs("{\"liver\": 0, \"spleen\": 0}", f);
    fclose(f);
    CHECK(labels_read_file(path, &back) == SEG_EFORMAT, "channel used twice: %s", seg_errmsg());
    f = fopen(path, "w");
    fputs("liver\nliver\n", f);
    fclose(f);
    CHECK(labels_read_file(path, &back) == SEG_EARG, "duplicate name: %s", seg_errmsg());
    unlink(path);
    labels_free(&l);
    return t_report("test_split");
}
