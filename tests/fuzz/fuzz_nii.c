/* tests/fuzz/fuzz_nii.c : libFuzzer target for the NIfTI reader (plain and gzip images,
 * header-only and full reads). A small voxel limit keeps each input cheap. */
#include "nii.h"
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) { nii_set_max_voxels(1 << 22); init = 1; }
    NiiVolume *v = NULL;
    if (nii_read_mem(data, size, "fuzz.nii", 1, &v) == 0) nii_free(v);
    v = NULL;
    if (nii_read_mem(data, size, "fuzz.nii", 0, &v) == 0) {
        size_t n = nii_nvox(v);
        double acc = 0;
        for (size_t i = 0; i < n; i += 1 + n / 64) acc += nii_value(v, i);   /* touch the data */
        (void)acc;
        nii_free(v);
    }
    return 0;
}
