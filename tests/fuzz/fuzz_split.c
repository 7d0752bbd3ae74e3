/* tests/fuzz/fuzz_split.c : libFuzzer target for meta.csv and label-file parsing. */
#include "split.h"
#include "labels.h"
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    SplitTable t;
    if (split_parse((const char *)data, size, "fuzz.csv", &t) == 0) split_free(&t);
    LabelList l;
    if (labels_parse((const char *)data, size, "fuzz.json", &l) == 0) labels_free(&l);
    return 0;
}
