"""The fixed part of an exported C model: kernels written once, specialised by the emitter.

:mod:`bnnlab.packed.c_export` pastes the parts of :data:`RUNTIME` a model uses (:func:`runtime`; unused
``static`` functions would fail ``-Wall -Werror``) into every generated ``NAME.c`` after
defining ``BNN_WORD_BITS`` (32 or 64). Everything is ``static`` (several models link into one program),
C99, no dynamic allocation, no header beyond ``<stdint.h>`` and ``<string.h>``.

Bit layout as bnnlab's (``bnnlab.kernels``): element j of a packed row lives in word
``j / BNN_WORD_BITS``, bit ``j % BNN_WORD_BITS`` (least significant first); bit 1 means -1;
padding bits are 0 in weights and activations, so ``d = K - 2 popcount(a ^ w)`` with the true
K. Binary activations are NHWC: pixel ``p`` holds ``ceil(C / BNN_WORD_BITS)`` words.
"""
from __future__ import annotations

__all__ = ["RUNTIME", "runtime"]

RUNTIME = r"""
/*@ base */
#if BNN_WORD_BITS == 64
typedef uint64_t bnn_word;
#define BNN_ONE UINT64_C(1)
#else
typedef uint32_t bnn_word;
#define BNN_ONE UINT32_C(1)
#endif
#define BNN_NW(c) (((c) + BNN_WORD_BITS - 1) / BNN_WORD_BITS)

/*@ popcount */
/* popcount: the compiler's builtin where the target has a popcount instruction (x86 with
   POPCNT, e.g. -mpopcnt or -march=native; AArch64), else an inline SWAR count (GCC's builtin
   would call libgcc's __popcountsi2/__popcountdi2 there, measured slower than this) */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__POPCNT__) || defined(__aarch64__))
#define BNN_HAVE_POPCOUNT 1
#endif
static int bnn_popcount(bnn_word v)
{
#ifdef BNN_HAVE_POPCOUNT
#if BNN_WORD_BITS == 64
    return __builtin_popcountll(v);
#else
    return __builtin_popcountl(v);
#endif
#else
#if BNN_WORD_BITS == 64
    v = v - ((v >> 1) & UINT64_C(0x5555555555555555));
    v = (v & UINT64_C(0x3333333333333333)) + ((v >> 2) & UINT64_C(0x3333333333333333));
    v = (v + (v >> 4)) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    return (int)((v * UINT64_C(0x0101010101010101)) >> 56);
#else
    v = v - ((v >> 1) & UINT32_C(0x55555555));
    v = (v & UINT32_C(0x33333333)) + ((v >> 2) & UINT32_C(0x33333333));
    v = (v + (v >> 4)) & UINT32_C(0x0F0F0F0F);
    return (int)((v * UINT32_C(0x01010101)) >> 24);
#endif
#endif
}

/*@ valid_bits */
/* word j of a pixel whose first c bits are real: the mask of its real bits */
static bnn_word bnn_valid_bits(int j, int c)
{
    int n = c - j * BNN_WORD_BITS;
    if (n >= BNN_WORD_BITS) {
        return (bnn_word)~(bnn_word)0;
    }
    return (bnn_word)((BNN_ONE << n) - 1u);
}

/*@ bit */
static int bnn_bit(const bnn_word *w, int i)
{
    return (int)((w[i / BNN_WORD_BITS] >> (i % BNN_WORD_BITS)) & 1u);
}

/*@ pack */
/* float (C, HW) -> packed NHWC bits. Channel c of pixel p is +1 (bit 0) iff
   mode 0: x >= t[c]; mode 1: -x >= t[c]; mode 2: always; mode 3: never.
   t == NULL means 0, mode == NULL means mode 0 (plain sign, sign(0) = +1). */
static void bnn_pack(const float *x, int c, int hw, const float *t, const uint8_t *mode,
                     bnn_word *out)
{
    int nw = BNN_NW(c), ch, p;
    memset(out, 0, sizeof(bnn_word) * (size_t)nw * (size_t)hw);
    for (ch = 0; ch < c; ch++) {
        float u = t ? t[ch] : 0.0f;
        int m = mode ? mode[ch] : 0;
        for (p = 0; p < hw; p++) {
            float v = x[ch * hw + p];
            int pos = m == 0 ? (v >= u) : m == 1 ? (-v >= u) : m == 2;
            if (!pos) {
                out[p * nw + ch / BNN_WORD_BITS] |= BNN_ONE << (ch % BNN_WORD_BITS);
            }
        }
    }
}

/*@ emit: popcount bit */
/* The epilogue of a binary layer: integer thresholds (fused: the next layer's bits) or the
   float  y = d [* aq] [* ax] [* g] [+ b]  in that order, one float32 rounding per step. */
struct bnn_epi {
    int k;
    const int32_t *lim;      /* fused: output is -1 iff (popcount > lim) XOR flip */
    const bnn_word *flip;
    const float *aq, *ax, *g, *b;
    int gmode;               /* g index: 0 scalar, 1 per channel, 2 per channel and pixel */
};

static void bnn_emit(const struct bnn_epi *e, int o, int pix, int npix, int nwo, int32_t pop,
                     bnn_word *obits, float *oflt)
{
    if (obits) {
        int neg = (pop > e->lim[o]) ^ (e->flip ? bnn_bit(e->flip, o) : 0);
        if (neg) {
            obits[pix * nwo + o / BNN_WORD_BITS] |= BNN_ONE << (o % BNN_WORD_BITS);
        }
    } else {
        float y = (float)(e->k - 2 * pop);
        if (e->aq) {
            y = y * e->aq[o];
        }
        if (e->ax) {
            y = y * e->ax[o];
        }
        if (e->g) {
            y = y * e->g[e->gmode == 0 ? 0 : e->gmode == 1 ? o : o * npix + pix];
        }
        if (e->b) {
            y = y + e->b[o];
        }
        oflt[o * npix + pix] = y;
    }
}

/*@ dense: emit */
/* binary dense layer on a packed row of nw words; weights (o, nw) */
static void bnn_dense(const bnn_word *x, int nw, const bnn_word *w, int o,
                      const struct bnn_epi *e, bnn_word *obits, float *oflt)
{
    int i, j, nwo = BNN_NW(o);
    if (obits) {
        memset(obits, 0, sizeof(bnn_word) * (size_t)nwo);
    }
    for (i = 0; i < o; i++) {
        int32_t pop = 0;
        const bnn_word *wi = w + (size_t)i * (size_t)nw;
        for (j = 0; j < nw; j++) {
            pop += bnn_popcount(x[j] ^ wi[j]);
        }
        bnn_emit(e, i, 0, 1, nwo, pop, obits, oflt);
    }
}

/*@ conv: emit valid_bits */
/* binary conv (cross-correlation) of NHWC bits (c, h, wd) with weights (o, kh, kw, nw);
   out-of-image taps are +1 (padneg = 0) or -1 (padneg = 1) in every channel */
static void bnn_conv(const bnn_word *x, int c, int h, int wd, const bnn_word *w, int o, int kh,
                     int kw, int sy, int sx, int py, int px, int padneg,
                     const struct bnn_epi *e, bnn_word *obits, float *oflt)
{
    int nw = BNN_NW(c), nwo = BNN_NW(o);
    int ho = (h + 2 * py - kh) / sy + 1, wo = (wd + 2 * px - kw) / sx + 1;
    int oy, ox, oc, ky, kx, j;
    for (oy = 0; oy < ho; oy++) {
        for (ox = 0; ox < wo; ox++) {
            int pix = oy * wo + ox;
            if (obits) {
                memset(obits + (size_t)pix * (size_t)nwo, 0, sizeof(bnn_word) * (size_t)nwo);
            }
            int y0 = oy * sy - py, x0 = ox * sx - px;
            int inside = y0 >= 0 && y0 + kh <= h && x0 >= 0 && x0 + kw <= wd;
            for (oc = 0; oc < o; oc++) {
                int32_t pop = 0;
                const bnn_word *wo_ = w + (size_t)oc * (size_t)(kh * kw * nw);
                if (inside) {       /* no padding: each kernel row is kw * nw contiguous words */
                    for (ky = 0; ky < kh; ky++) {
                        const bnn_word *xr = x + (size_t)((y0 + ky) * wd + x0) * (size_t)nw;
                        const bnn_word *wr = wo_ + ky * kw * nw;
                        for (j = 0; j < kw * nw; j++) {
                            pop += bnn_popcount(xr[j] ^ wr[j]);
                        }
                    }
                    bnn_emit(e, oc, pix, ho * wo, nwo, pop, obits, oflt);
                    continue;
                }
                for (ky = 0; ky < kh; ky++) {
                    int iy = oy * sy - py + ky;
                    for (kx = 0; kx < kw; kx++) {
                        int ix = ox * sx - px + kx;
                        const bnn_word *wt = wo_ + (ky * kw + kx) * nw;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= wd) {
                            for (j = 0; j < nw; j++) {
                                bnn_word pad = padneg ? bnn_valid_bits(j, c) : 0u;
                                pop += bnn_popcount(pad ^ wt[j]);
                            }
                        } else {
                            const bnn_word *xt = x + (size_t)(iy * wd + ix) * (size_t)nw;
                            for (j = 0; j < nw; j++) {
                                pop += bnn_popcount(xt[j] ^ wt[j]);
                            }
                        }
                    }
                }
                bnn_emit(e, oc, pix, ho * wo, nwo, pop, obits, oflt);
            }
        }
    }
}

/*@ maxpool_bits: valid_bits */
/* max-pool on NHWC bits: AND of the in-image taps (max of +-1), OR for channels in orw (min) */
static void bnn_maxpool_bits(const bnn_word *x, int c, int h, int wd, int kh, int kw, int sy,
                             int sx, int py, int px, const bnn_word *orw, bnn_word *out)
{
    int nw = BNN_NW(c), ho = (h + 2 * py - kh) / sy + 1, wo = (wd + 2 * px - kw) / sx + 1;
    int oy, ox, ky, kx, j;
    for (oy = 0; oy < ho; oy++) {
        for (ox = 0; ox < wo; ox++) {
            for (j = 0; j < nw; j++) {
                bnn_word a = (bnn_word)~(bnn_word)0, r = 0u;
                for (ky = 0; ky < kh; ky++) {
                    int iy = oy * sy - py + ky;
                    for (kx = 0; kx < kw; kx++) {
                        int ix = ox * sx - px + kx;
                        if (iy >= 0 && iy < h && ix >= 0 && ix < wd) {
                            bnn_word v = x[(size_t)(iy * wd + ix) * (size_t)nw + (size_t)j];
                            a &= v;
                            r |= v;
                        }
                    }
                }
                if (orw) {
                    a = (bnn_word)((a & ~orw[j]) | (r & orw[j]));
                }
                out[(size_t)(oy * wo + ox) * (size_t)nw + (size_t)j] = a & bnn_valid_bits(j, c);
            }
        }
    }
}

/*@ linear_f */
/* float layers, NCHW per sample */
static void bnn_linear_f(const float *x, int in, int o, const float *w, const float *b,
                         float *y)
{
    int i, j;
    for (i = 0; i < o; i++) {
        float s = 0.0f;
        const float *wi = w + (size_t)i * (size_t)in;
        for (j = 0; j < in; j++) {
            s += wi[j] * x[j];
        }
        y[i] = b ? s + b[i] : s;
    }
}

/*@ conv_f */
/* float conv; with obits != NULL its output is binarised on the fly as bnn_pack does (t, mode)
   into NHWC bits, and the float map is never stored */
static void bnn_conv_f(const float *x, int c, int h, int wd, const float *w, const float *b,
                       int o, int kh, int kw, int sy, int sx, int py, int px, int dy, int dx,
                       int groups, float *y, const float *t, const uint8_t *mode, bnn_word *obits)
{
    int ho = (h + 2 * py - dy * (kh - 1) - 1) / sy + 1;
    int wo = (wd + 2 * px - dx * (kw - 1) - 1) / sx + 1;
    int cg = c / groups, og = o / groups, nwo = BNN_NW(o), oc, oy, ox, ic, ky, kx;
    if (obits) {
        memset(obits, 0, sizeof(bnn_word) * (size_t)ho * (size_t)wo * (size_t)nwo);
    }
    for (oc = 0; oc < o; oc++) {
        int g0 = (oc / og) * cg;
        for (oy = 0; oy < ho; oy++) {
            for (ox = 0; ox < wo; ox++) {
                float s = 0.0f;
                for (ic = 0; ic < cg; ic++) {
                    for (ky = 0; ky < kh; ky++) {
                        int iy = oy * sy - py + ky * dy;
                        if (iy < 0 || iy >= h) {
                            continue;
                        }
                        for (kx = 0; kx < kw; kx++) {
                            int ix = ox * sx - px + kx * dx;
                            if (ix < 0 || ix >= wd) {
                                continue;
                            }
                            s += w[((oc * cg + ic) * kh + ky) * kw + kx]
                                 * x[((g0 + ic) * h + iy) * wd + ix];
                        }
                    }
                }
                s = b ? s + b[oc] : s;
                if (obits) {
                    int m = mode[oc];
                    int pos = m == 0 ? (s >= t[oc]) : m == 1 ? (-s >= t[oc]) : m == 2;
                    if (!pos) {
                        obits[(oy * wo + ox) * nwo + oc / BNN_WORD_BITS] |=
                            BNN_ONE << (oc % BNN_WORD_BITS);
                    }
                } else {
                    y[(oc * ho + oy) * wo + ox] = s;
                }
            }
        }
    }
}

/*@ affine_f */
/* y = x * scale[c] + shift[c] (eval BatchNorm, folded at export) */
static void bnn_affine_f(const float *x, int c, int hw, const float *scale, const float *shift,
                         float *y)
{
    int ch, p;
    for (ch = 0; ch < c; ch++) {
        for (p = 0; p < hw; p++) {
            y[ch * hw + p] = x[ch * hw + p] * scale[ch] + shift[ch];
        }
    }
}

/*@ pool_f */
/* kind 0: max-pool (out-of-image taps never win), 1: average over the window (divisor
   kh*kw when count_pad, else the in-image taps) */
static void bnn_pool_f(const float *x, int c, int h, int wd, int kh, int kw, int sy, int sx,
                       int py, int px, int dy, int dx, int kind, int count_pad, float *y)
{
    int ho = (h + 2 * py - dy * (kh - 1) - 1) / sy + 1;
    int wo = (wd + 2 * px - dx * (kw - 1) - 1) / sx + 1;
    int ch, oy, ox, ky, kx;
    for (ch = 0; ch < c; ch++) {
        for (oy = 0; oy < ho; oy++) {
            for (ox = 0; ox < wo; ox++) {
                float acc = 0.0f;
                int n = 0;
                for (ky = 0; ky < kh; ky++) {
                    int iy = oy * sy - py + ky * dy;
                    for (kx = 0; kx < kw; kx++) {
                        int ix = ox * sx - px + kx * dx;
                        float v;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= wd) {
                            continue;
                        }
                        v = x[(ch * h + iy) * wd + ix];
                        if (kind == 0) {
                            if (n == 0 || v > acc || v != v) {
                                acc = v;
                            }
                        } else {
                            acc += v;
                        }
                        n++;
                    }
                }
                if (kind == 1) {
                    acc = acc / (float)(count_pad ? kh * kw : n);
                }
                y[(ch * ho + oy) * wo + ox] = acc;
            }
        }
    }
}

/*@ adaptive_avg_f */
static void bnn_adaptive_avg_f(const float *x, int c, int h, int wd, int oh, int ow, float *y)
{
    int ch, oy, ox, iy, ix;
    for (ch = 0; ch < c; ch++) {
        for (oy = 0; oy < oh; oy++) {
            int y0 = (oy * h) / oh, y1 = ((oy + 1) * h + oh - 1) / oh;
            for (ox = 0; ox < ow; ox++) {
                int x0 = (ox * wd) / ow, x1 = ((ox + 1) * wd + ow - 1) / ow;
                float s = 0.0f;
                for (iy = y0; iy < y1; iy++) {
                    for (ix = x0; ix < x1; ix++) {
                        s += x[(ch * h + iy) * wd + ix];
                    }
                }
                y[(ch * oh + oy) * ow + ox] = s / (float)((y1 - y0) * (x1 - x0));
            }
        }
    }
}

/*@ act_f */
/* kind 0: relu, 1: hardtanh(lo, hi), 2: leaky relu(slope lo) */
static void bnn_act_f(const float *x, int n, int kind, float lo, float hi, float *y)
{
    int i;
    for (i = 0; i < n; i++) {
        float v = x[i];
        if (kind == 0) {
            v = v > 0.0f ? v : (v != v ? v : 0.0f);
        } else if (kind == 1) {
            v = v < lo ? lo : (v > hi ? hi : v);
        } else {
            v = v > 0.0f ? v : v * lo;
        }
        y[i] = v;
    }
}
"""


def _parts() -> dict[str, tuple[list[str], str]]:
    """``{name: (dependencies, code)}`` from the ``/*@ name: deps */`` markers of RUNTIME."""
    out: dict[str, tuple[list[str], str]] = {}
    for chunk in RUNTIME.split("/*@ ")[1:]:
        head, code = chunk.split(" */\n", 1)
        name, _, deps = head.partition(":")
        out[name.strip()] = (deps.split(), code)
    return out


_PARTS = _parts()


def runtime(names: set[str]) -> str:
    """The code of the named kernels, their dependencies and ``base``, in RUNTIME's order."""
    unknown = set(names) - set(_PARTS)
    if unknown:
        raise ValueError(f"unknown runtime parts {sorted(unknown)}")
    need = {"base"}
    todo = list(names)
    while todo:
        n = todo.pop()
        if n not in need:
            need.add(n)
            todo.extend(_PARTS[n][0])
    return "".join(code for name, (_, code) in _PARTS.items() if name in need)
