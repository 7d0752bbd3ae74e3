/* tests/fuzz/fuzz_safetensors.c : libFuzzer target for the safetensors parser (the
 * checkpoint loader's first step): parse, list, convert every tensor. */
#include "safetensors.h"
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StFile *f = NULL;
    if (st_parse(data, size, "fuzz.safetensors", &f) != 0) return 0;
    for (int i = 0; i < st_n_tensors(f); i++) {
        const StTensor *t = st_tensor(f, i);
        if (t->count > (1u << 22)) continue;
        float *dst = malloc((t->count ? t->count : 1) * sizeof(float));
        if (dst) st_to_f32(t, dst);
        free(dst);
    }
    for (int i = 0; i < st_n_meta(f); i++) (void)st_meta_at(f, i);
    (void)st_meta(f, "config");
    st_close(f);
    return 0;
}
