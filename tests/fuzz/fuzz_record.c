/* tests/fuzz/fuzz_record.c : libFuzzer target for the cache record decoder. */
#include "cache.h"
#include <stdint.h>
#include <stdlib.h>
#include <zstd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ZSTD_DCtx *dctx;
    static int16_t img[64 * 64];
    static uint8_t bits[13 * 64 * 64 / 8], pres[2];
    if (!dctx) dctx = ZSTD_createDCtx();
    /* the seed corpus holds 64x64, 13-channel records */
    cache_record_decode(dctx, data, size, 64, 13, "fuzz", img, bits, pres, 1);
    cache_record_presence(data, size, 64, 13, "fuzz", pres);
    return 0;
}
