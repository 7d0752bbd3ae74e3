/* tests/fuzz/fuzz_ckpt.c : libFuzzer target for the checkpoint loader: the input is a
 * checkpoint file (through a memfd), read with ckpt_read_info and, when it describes a
 * small model, loaded into a U-Net of its config with ckpt_load_model (names, shapes, dtypes checked). */
#include "ckpt.h"
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz_ckpt", 0);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) { close(fd); return 0; }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    CkptInfo info;
    if (ckpt_read_info(path, &info) == 0) {
        int small = info.cfg.n_classes <= 8 && info.cfg.n_levels <= 3 && info.size <= 64;
        for (int i = 0; i < info.cfg.n_levels && small; i++) small = info.cfg.features[i] <= 16;
        ckpt_info_free(&info);
        if (small) {
            CkptInfo info2;
            if (ckpt_read_info(path, &info2) == 0) {
                Unet *m = NULL;
                if (unet_create(&info2.cfg, 1, info2.size, info2.size, 1, &m) == 0) ckpt_load_model(path, m);
                unet_free(m);
                ckpt_info_free(&info2);
            }
        }
    }
    close(fd);
    return 0;
}
