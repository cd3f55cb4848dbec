/* abbench/lib.c -- one build of the kernels as a shared object, for in-process A/B timing
 * (driver.c loads several builds and alternates them).
 *
 *   cc -shared -fPIC -O3 -std=gnu11 -ffp-contract=off -I<ext dir of the build> ext/abbench/lib.c \
 *      -o ab_X.so -lpthread -lm
 *
 * ab_setup(C, HW, B, variant): a 3x3 C -> C conv, +1 padding, on random +-1 float32 input,
 * pre-built weight panel, panel kernel forced (0 lookup, 1 hybrid); ab_run(k): 0 pack the
 * float32 NCHW input, 1 conv to NCHW int32, 2 conv to NHWC int32, 3 conv to packed bits (BITS
 * epilogue), 4 pack + conv NCHW; ab_check(): a hash of the outputs (equal across builds). */
#include "bnn_kernels.h"
static int C, HW, B, O, CW; static int64_t P;
static float *x; static uint64_t *w, *xp, *panel, *bits; static int32_t *out; static int64_t *lim; static uint64_t flip[64];
void ab_setup(int c, int hw, int b, int variant) {
    C = c; HW = hw; B = b; O = c; CW = (C + 63) / 64; P = (int64_t)HW * HW;
    x = malloc(sizeof(float) * B * C * P);
    uint64_t r = 0x9e3779b97f4a7c15ULL;
    for (int64_t i = 0; i < (int64_t)B * C * P; i++) { r ^= r >> 12; r ^= r << 25; r ^= r >> 27; x[i] = ((r * 0x2545f4914f6cdd1dULL) >> 63) ? -1.f : 1.f; }
    w = malloc(8 * O * 9 * CW); xp = malloc(8 * B * P * CW);
    for (int i = 0; i < O * 9 * CW; i++) { r ^= r >> 12; r ^= r << 25; r ^= r >> 27; w[i] = r * 0x2545f4914f6cdd1dULL; }
    if (C % 64) for (int i = 0; i < O * 9; i++) w[i * CW + CW - 1] &= (1ULL << (C % 64)) - 1;
    panel = bnn_make_panel(w, O, 9 * CW, bnn_panel_nr(2), 1);
    out = malloc(4 * B * O * P); bits = calloc(B * P * ((O + 63) / 64), 8);
    lim = calloc(O, 8); for (int i = 0; i < O; i++) lim[i] = C * 9 / 2;
    bnn_set_panel_variant(variant);
    bnn_pack_nchw(2, BNN_DT_F32, x, B, C, P, xp, 1);
}
/* k: 0 pack, 1 conv nchw i32, 2 conv nhwc i32, 3 conv bits, 4 pack + conv nchw */
void ab_run(int k) {
    if (k == 0 || k == 4) bnn_pack_nchw(2, BNN_DT_F32, x, B, C, P, xp, 1);
    if (k == 1 || k == 4 || k == 2)
        bnn_conv_ex(2, xp, B, HW, HW, C, w, O, 3, 3, 1, 1, 1, 1, 0, HW, HW, BNN_EPI_I32, k == 2, out,
                    NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, panel, 1);
    if (k == 3) { memset(bits, 0, 8 * B * P * ((O + 63) / 64));
        bnn_conv_ex(2, xp, B, HW, HW, C, w, O, 3, 3, 1, 1, 1, 1, 0, HW, HW, BNN_EPI_BITS, 0, bits,
                    NULL, NULL, lim, flip, NULL, NULL, NULL, 0, NULL, NULL, panel, 1); }
}
uint64_t ab_check(void) {   /* hash of the last outputs */
    uint64_t h = 1469598103934665603ULL;
    for (int64_t i = 0; i < (int64_t)B * O * P; i++) h = (h ^ (uint32_t)out[i]) * 1099511628211ULL;
    for (int64_t i = 0; i < B * P * ((O + 63) / 64); i++) h = (h ^ bits[i]) * 1099511628211ULL;
    return h;
}
