/* common/unet_device.c : --device and --amp: parsing, and resolving "auto" to the GPU when
 * one is usable (unet.h); the backend registry (unet_backend.h). unet_backend_find is the
 * only place that knows whether this build has CUDA. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "unet.h"
#include "unet_backend.h"

const UnetBackend *unet_backend_find(int kind)
{
    if (kind == UNET_CPU) return &unet_backend_cpu;
#ifdef SEG_HAVE_CUDA
    if (kind == UNET_CUDA) return &unet_backend_cuda;
#endif
    return NULL;
}

int unet_have_cuda(void) { return unet_backend_find(UNET_CUDA) != NULL; }

int unet_device_parse(const char *s, UnetDevice *d)
{
    d->index = 0;
    if (!s) return seg_err(SEG_EARG, "--device needs a value: auto, cpu, cuda or cuda:N");
    if (!strcmp(s, "auto")) { d->kind = UNET_AUTO; return SEG_OK; }
    if (!strcmp(s, "cpu")) { d->kind = UNET_CPU; return SEG_OK; }
    if (!strcmp(s, "cuda") || !strcmp(s, "gpu")) { d->kind = UNET_CUDA; return SEG_OK; }
    if (!strncmp(s, "cuda:", 5)) {
        char *end;
        errno = 0;
        long v = strtol(s + 5, &end, 10);
        if (!errno && end != s + 5 && !*end && v >= 0 && v < 1024) {
            d->kind = UNET_CUDA;
            d->index = (int)v;
            return SEG_OK;
        }
    }
    return seg_err(SEG_EARG, "--device: '%s' is not auto, cpu, cuda or cuda:N", s);
}

int unet_amp_parse(const char *s, UnetDevice *d)
{
    if (s && !strcmp(s, "off")) d->amp = UNET_AMP_OFF;
    else if (s && !strcmp(s, "bf16")) d->amp = UNET_AMP_BF16;
    else if (s && !strcmp(s, "fp16")) d->amp = UNET_AMP_FP16;
    else if (s && !strcmp(s, "tf32")) d->amp = UNET_AMP_TF32;
    else return seg_err(SEG_EARG, "--amp: '%s' is not off, bf16, fp16 or tf32", s ? s : "");
    return SEG_OK;
}

const char *unet_amp_name(int amp)
{
    return amp == UNET_AMP_BF16 ? "bf16" : amp == UNET_AMP_FP16 ? "fp16" : amp == UNET_AMP_TF32 ? "tf32" : "fp32";
}

/* Which device: SEG_OK with d->kind set and what it is in buf, or SEG_EGPU. */
static int pick(UnetDevice *d, char *buf, size_t cap)
{
    if (d->kind == UNET_CPU) {
        snprintf(buf, cap, "cpu");
        return SEG_OK;
    }
    const UnetBackend *cuda = unet_backend_find(UNET_CUDA);
    if (!cuda) {
        if (d->kind == UNET_CUDA)
            return seg_err(SEG_EGPU, "--device cuda:%d is not available: this build of segkit has no CUDA backend "
                           "(the CUDA toolkit was not found at build time, or GPU=0); rebuild with the toolkit installed",
                           d->index);
        d->kind = UNET_CPU;
        snprintf(buf, cap, "cpu (this build has no CUDA backend)");
        return SEG_OK;
    }
    char why[512];
    if (cuda->probe(d->index, buf, cap) == SEG_OK) { d->kind = UNET_CUDA; return SEG_OK; }
    if (d->kind == UNET_CUDA) return seg_err(SEG_EGPU, "--device cuda:%d is not available: %s", d->index, seg_errmsg());
    snprintf(why, sizeof why, "%s", seg_errmsg());
    d->kind = UNET_CPU;
    snprintf(buf, cap, "cpu (no GPU: %s)", why);
    return SEG_OK;
}

int unet_device_resolve(UnetDevice *d, char *desc, size_t cap)
{
    char buf[768];
    TRY(pick(d, buf, sizeof buf));
    const int amp = d->amp;
    if (d->kind == UNET_CPU) d->amp = UNET_AMP_OFF;      /* mixed precision is a GPU matter */
    if (desc)
        snprintf(desc, cap, "%s%s%s", buf, d->kind == UNET_CUDA ? ", " : "",
                 d->kind == UNET_CUDA ? unet_amp_name(d->amp)
                 : amp != UNET_AMP_OFF ? "; note: --amp applies to the GPU only, the CPU runs in fp32" : "");
    return SEG_OK;
}
