/* Convolution on the CPU as a GEMM whose im2col happens inside the packing.
 *
 * The NumPy backend's float32 fast path (see kernels/native.py for the loader,
 * backends/native_cpu.py for the callers, docs/cpu-kernels.md for the design);
 * max pooling and ReLU live here too, further down. The scheme is BLIS's: the
 * left operand A (weights, or the output gradient) is packed once into panels
 * of MR rows; the right operand B is packed one micro-panel (kc x NR) at a
 * time straight from the zero-padded image, so the im2col matrix is never
 * written to memory; an MR x NR register tile accumulates each product.
 *
 *   forward   y[n, o, p] = sum_k W[o, k] * col_n[k, p]          (+ bias[o])
 *   weights   dW[o, k]  += sum_n sum_p dY[n, o, p] * col_n[k, p]
 *
 * k = (c, ky, kx) in row-major order and p = (oy, ox); col_n[k, p] is the
 * input pixel seen by kernel tap (ky, kx) at output position p. A stride-1
 * input gradient is a forward convolution of dY with the flipped weights, so
 * it uses the forward entry point (the caller prepares those weights).
 *
 * Every output element is summed in the same order (k ascending inside
 * blocks of KC_FWD for the forward, KC for dW, the blocks in turn; for dW the images of a
 * share in turn)
 * whatever the split of the work between threads, so results do not depend
 * on the thread count. Needs AVX-512F, or AVX2 and FMA; native_isa() says which this build
 * has (512, 256, or 0 for neither).
 * The entry points that allocate scratch memory return 0, or -1 when an
 * allocation failed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef long long i64;

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>

/* The vector layer: the rest of the file is written against these names. AVX-512 takes 16
 * floats a vector and an 8x48 register tile (24 of its 32 registers accumulate); AVX2 takes
 * 8 floats and a 6x16 tile (12 of its 16). */
#if defined(__AVX512F__)
#define V_ISA 512
#define VL 16           /* floats in a vector */
#define MR 8            /* rows of the register tile (output channels) */
#define NV 3            /* vectors across the tile: NR = 48 columns */
#define GEMM_NC 8       /* micro-panels gemm_f32 packs at once: 8 x 36 KiB, in L2 */
typedef __m512 vf;
static inline vf v_zero(void) { return _mm512_setzero_ps(); }
static inline vf v_set1(float x) { return _mm512_set1_ps(x); }
static inline vf v_load(const float *p) { return _mm512_load_ps(p); }
static inline vf v_loadu(const float *p) { return _mm512_loadu_ps(p); }
static inline void v_store(float *p, vf v) { _mm512_store_ps(p, v); }
static inline vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline __mmask16 lanes_mask(long long n) { return n >= VL ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }
/* The first n (1..VL) lanes at p, zeros after (nothing read past them); store n lanes. */
static inline vf v_loadn(const float *p, long long n) { return _mm512_maskz_loadu_ps(lanes_mask(n), p); }
static inline void v_storen(float *p, vf v, long long n) { _mm512_mask_storeu_ps(p, lanes_mask(n), v); }
static inline vf v_gather(const float *base, const int32_t *idx)
{
    return _mm512_i32gather_ps(_mm512_loadu_si512(idx), base, 4);
}
/* Lane j = p[perm[j]] for perm[j] < 2*VL: two loads and a two-source permute. */
static inline vf v_permute2(const float *p, const int32_t *perm)
{
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), _mm512_loadu_si512(perm), _mm512_loadu_ps(p + VL));
}
#else
#define V_ISA 256
#define VL 8
#define MR 6
#define NV 2
#define GEMM_NC 24      /* 24 x 12 KiB */
typedef __m256 vf;
static inline vf v_zero(void) { return _mm256_setzero_ps(); }
static inline vf v_set1(float x) { return _mm256_set1_ps(x); }
static inline vf v_load(const float *p) { return _mm256_load_ps(p); }
static inline vf v_loadu(const float *p) { return _mm256_loadu_ps(p); }
static inline void v_store(float *p, vf v) { _mm256_store_ps(p, v); }
static inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline __m256i lanes_mask(long long n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < VL ? n : VL)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf v_loadn(const float *p, long long n) { return _mm256_maskload_ps(p, lanes_mask(n)); }
static inline void v_storen(float *p, vf v, long long n) { _mm256_maskstore_ps(p, lanes_mask(n), v); }
static inline vf v_gather(const float *base, const int32_t *idx)
{
    return _mm256_i32gather_ps(base, _mm256_loadu_si256((const __m256i *)idx), 4);
}
static inline vf v_permute2(const float *p, const int32_t *perm)
{
    __m256i ix = _mm256_loadu_si256((const __m256i *)perm);  /* permutevar8x32 reads ix & 7 */
    __m256 from_lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(p), ix);
    __m256 from_hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(p + VL), ix);
    return _mm256_blendv_ps(from_lo, from_hi, _mm256_castsi256_ps(_mm256_cmpgt_epi32(ix, _mm256_set1_epi32(VL - 1))));
}
#endif

#define NR (NV * VL)    /* columns of the register tile */
#define PANEL_RUN_A_FLOATS (1 << 17)  /* 512 KiB of packed weights: half of Zen 4's L2 */
/* Frames (or images read in place) past 768 KiB do not stay in L2 between panels: the forward
 * then asks for the next panel's lines while packing (pack_b_ahead); smaller ones gain nothing
 * from it (VGG conv1_1, 613 KiB: 3% slower with it). */
#define AHEAD_SOURCE_FLOATS (3 << 16)
#define KC 128          /* depth of a packed B micro-panel: 128 x 48 floats = 24 KiB (AVX2: 8 KiB), in L1 */
/* The forward's depth: 384 x 48 floats = 72 KiB, in L2, which streams B to the tile as fast as
 * L1 does, while C is read and written a third as often and a tile's fixed costs are spread
 * over three times the work: 2-5% faster than 128 on one thread on most of the sweep's layers
 * (ResNet layer3 3x3, 1 thread: 102 -> 108 GFLOP/s; 256 and 512 fall between). */
#define KC_FWD 384

int native_isa(void) { return V_ISA; }

/* Geometry of one convolution, as the int64 array the Python side passes. */
enum { G_N, G_C, G_H, G_W, G_O, G_KH, G_KW, G_SH, G_SW, G_DH, G_DW, G_PT, G_PL, G_OH, G_OW, G_GROUPS, G_LEN };

typedef struct {
    i64 n, c, h, w, o, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, groups;
    i64 cg, og, kg, p;  /* per group: channels, outputs, K = cg*kh*kw; pixels per output image */
    i64 hp, wp;         /* the padded frame the taps read */
} geom_t;

static geom_t read_geom(const i64 *g)
{
    geom_t s;
    s.n = g[G_N]; s.c = g[G_C]; s.h = g[G_H]; s.w = g[G_W]; s.o = g[G_O];
    s.kh = g[G_KH]; s.kw = g[G_KW]; s.sh = g[G_SH]; s.sw = g[G_SW]; s.dh = g[G_DH]; s.dw = g[G_DW];
    s.pt = g[G_PT]; s.pl = g[G_PL]; s.oh = g[G_OH]; s.ow = g[G_OW]; s.groups = g[G_GROUPS];
    s.cg = s.c / s.groups; s.og = s.o / s.groups; s.kg = s.cg * s.kh * s.kw; s.p = s.oh * s.ow;
    s.hp = (s.oh - 1) * s.sh + s.dh * (s.kh - 1) + 1;
    s.wp = (s.ow - 1) * s.sw + s.dw * (s.kw - 1) + 1;
    return s;
}

static void *scratch(size_t floats) { return aligned_alloc(64, ((floats * 4 + 63) / 64) * 64 + 64); }
static i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / b; }
static i64 min64(i64 a, i64 b) { return a < b ? a : b; }

/* out[j * os + r] = a[r * rs + j] for r, j < 8: an 8x8 transpose in registers (AVX, so
 * either build), for the packings that turn rows into columns. */
static inline void transpose8(const float *a, i64 rs, float *out, i64 os)
{
    __m256 r0 = _mm256_loadu_ps(a), r1 = _mm256_loadu_ps(a + rs), r2 = _mm256_loadu_ps(a + 2 * rs);
    __m256 r3 = _mm256_loadu_ps(a + 3 * rs), r4 = _mm256_loadu_ps(a + 4 * rs), r5 = _mm256_loadu_ps(a + 5 * rs);
    __m256 r6 = _mm256_loadu_ps(a + 6 * rs), r7 = _mm256_loadu_ps(a + 7 * rs);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(out + 0 * os, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(out + 1 * os, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(out + 2 * os, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(out + 3 * os, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(out + 4 * os, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(out + 5 * os, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(out + 6 * os, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(out + 7 * os, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* The padded frame of cg channels of one image: frame[c][r][q] = x[c][r - pt][q - pl],
 * zero outside the image. A negative pt/pl crops instead. Zeroed with one memset where
 * there is padding, rows copied with vector loads and stores: small images (LeNet-5's
 * 10x10) have rows of a few floats, and a libc call per row (or three, with the padding)
 * cost as much as the multiply-adds of a one-panel layer. */
static void pad_frame(const float *x, const geom_t *s, float *frame)
{
    i64 q0 = s->pl > 0 ? s->pl : 0;                       /* first column fed by the image */
    i64 q1 = min64(s->wp, s->pl + s->w);                  /* one past the last */
    i64 r0 = s->pt > 0 ? s->pt : 0, r1 = min64(s->hp, s->pt + s->h);
    if (q0 > 0 || q1 < s->wp || r0 > 0 || r1 < s->hp || q1 <= q0 || r1 <= r0)
        memset(frame, 0, (size_t)(s->cg * s->hp * s->wp) * 4);
    if (q1 <= q0) return;
    for (i64 c = 0; c < s->cg; c++) {
        const float *src = x + c * s->h * s->w + (q0 - s->pl);
        float *dst = frame + c * s->hp * s->wp + q0;
        for (i64 r = r0; r < r1; r++) {
            const float *in = src + (r - s->pt) * s->w;
            float *out = dst + r * s->wp;
            for (i64 q = 0; q < q1 - q0; q += VL) v_storen(out + q, v_loadn(in + q, q1 - q0 - q), q1 - q0 - q);
        }
    }
}

/* The same frame with channels innermost: frame[(r * wp + q) * cg + c]. The weight gradient
 * reads it, so that VL consecutive taps (ky, kx, c..c+VL-1) are one load. */
static void pad_frame_hwc_rows(const float *x, const geom_t *s, i64 r0, i64 r1, float *frame);

static void pad_frame_hwc(const float *x, const geom_t *s, float *frame) { pad_frame_hwc_rows(x, s, 0, s->hp, frame); }

/* Whether any tap reads row r of the padded frame: a 1x1 kernel at stride 2 reads every
 * other row only. */
static int frame_row_read(const geom_t *s, i64 r)
{
    for (i64 ky = 0; ky < s->kh; ky++) {
        i64 t = r - ky * s->dh;
        if (t >= 0 && t % s->sh == 0 && t / s->sh < s->oh) return 1;
    }
    return 0;
}

/* Rows [r0, r1) of that frame only, the first at frame. Blocks of 8 channels by 8 columns
 * are transposed in registers (a row's last block overlapping the one before where the
 * columns are not a multiple of 8); channels past the last multiple of 8, and rows shorter
 * than 8 columns, one float at a time. Rows no tap reads are zeroed, not copied. */
static void pad_frame_hwc_rows(const float *x, const geom_t *s, i64 r0, i64 r1, float *frame)
{
    i64 cg = s->cg, pitch = s->wp * cg, plane = s->h * s->w, c8 = cg / 8 * 8;
    i64 q0 = s->pl > 0 ? s->pl : 0, q1 = min64(s->wp, s->pl + s->w);  /* columns fed by the image */
    for (i64 r = r0; r < r1; r++) {
        float *row = frame + (r - r0) * pitch;
        i64 ir = r - s->pt;
        if (ir < 0 || ir >= s->h || q1 <= q0 || !frame_row_read(s, r)) {
            memset(row, 0, (size_t)pitch * 4);
            continue;
        }
        if (q0 > 0) memset(row, 0, (size_t)(q0 * cg) * 4);
        if (q1 < s->wp) memset(row + q1 * cg, 0, (size_t)((s->wp - q1) * cg) * 4);
        const float *src = x + ir * s->w - s->pl;  /* src[q]: column q of the frame */
        i64 vec_end = q0;  /* columns [q0, vec_end) have their first c8 channels */
        if (c8 && q1 - q0 >= 8) {
            for (i64 q = q0; q < q1; q += 8) {
                i64 qb = q + 8 <= q1 ? q : q1 - 8;
                for (i64 c = 0; c < c8; c += 8) transpose8(src + c * plane + qb, plane, row + qb * cg + c, cg);
            }
            vec_end = q1;
        }
        for (i64 q = q0; q < q1; q++)
            for (i64 c = q < vec_end ? c8 : 0; c < cg; c++) row[q * cg + c] = src[c * plane + q];
    }
}

/* Offsets of the taps into a frame: TAPS_W_ORDER, in W's column order (c, ky, kx) into the
 * channel-major frame, c*hp*wp + ky*dh*wp + kx*dw; TAPS_HWC, in (ky, kx, c) order into the
 * frame of pad_frame_hwc, (ky*dh*wp + kx*dw)*cg + c; TAPS_W_ORDER_HWC, in W's order into
 * that frame (vectors of taps then gathered). Pixel p sits at oy*sh*wp + ox*sw (times cg in
 * the channels-innermost frame). The tables run on to a whole number of panels, repeating
 * their last offset, so that a partial panel reads valid memory. */
enum { TAPS_W_ORDER = 0, TAPS_HWC = 1, TAPS_W_ORDER_HWC = 2 };
static int32_t *tap_offsets(const geom_t *s, int order)
{
    i64 len = ceil_div(s->kg, NR) * NR;
    int32_t *t = scratch((size_t)len);
    if (!t) return NULL;
    i64 k = 0;
    if (order == TAPS_W_ORDER_HWC) {
        for (i64 c = 0; c < s->cg; c++)
            for (i64 ky = 0; ky < s->kh; ky++)
                for (i64 kx = 0; kx < s->kw; kx++) t[k++] = (int32_t)((ky * s->dh * s->wp + kx * s->dw) * s->cg + c);
    } else if (order == TAPS_HWC) {
        for (i64 ky = 0; ky < s->kh; ky++)
            for (i64 kx = 0; kx < s->kw; kx++)
                for (i64 c = 0; c < s->cg; c++) t[k++] = (int32_t)((ky * s->dh * s->wp + kx * s->dw) * s->cg + c);
    } else {
        for (i64 c = 0; c < s->cg; c++)
            for (i64 ky = 0; ky < s->kh; ky++)
                for (i64 kx = 0; kx < s->kw; kx++) t[k++] = (int32_t)(c * s->hp * s->wp + ky * s->dh * s->wp + kx * s->dw);
    }
    for (; k < len; k++) t[k] = t[s->kg - 1];
    return t;
}

static int32_t *pixel_offsets(const geom_t *s)
{
    i64 len = ceil_div(s->p, NR) * NR;
    int32_t *t = scratch((size_t)len);
    if (!t) return NULL;
    i64 j = 0;
    for (i64 oy = 0; oy < s->oh; oy++)
        for (i64 ox = 0; ox < s->ow; ox++)
            t[j++] = (int32_t)(oy * s->sh * s->wp + ox * s->sw);
    for (; j < len; j++) t[j] = t[s->p - 1];  /* past the end: repeat the last pixel */
    return t;
}

/* How pack_b fetches VL columns whose offsets are idx[0..VL-1]: one load when they run on by
 * one, two loads and a permute when they fit in 2*VL floats, else a gather. */
typedef struct { int kind; int32_t lo; int32_t lanes[VL]; } fetch_t;

static fetch_t classify(const int32_t *idx, int permute_ok)
{
    fetch_t f;
    int32_t lo = idx[0], hi = idx[0];
    int ramp = 1;
    for (int j = 0; j < VL; j++) {
        lo = idx[j] < lo ? idx[j] : lo;
        hi = idx[j] > hi ? idx[j] : hi;
        ramp &= idx[j] == idx[0] + j;
    }
    f.lo = lo;
    f.kind = ramp ? 0 : (permute_ok && hi - lo < 2 * VL ? 1 : 2);
    for (int j = 0; j < VL; j++) f.lanes[j] = f.kind == 2 ? idx[j] : idx[j] - lo;
    return f;
}

/* The rows of one vector of columns, fetched by kind: a loop per kind, so that the loop
 * holds no branch on it (the permute loop, with a switch in it, took 37% of the time of a
 * forward with 6 output channels, LeNet-5 C3's input gradient). ahead (or NULL): two
 * offsets whose lines each row's stretch of the frame asks into L2 as well. */
#define PF_AHEAD(row) \
    if (ahead) { _mm_prefetch((const char *)((row) + ahead[0]), _MM_HINT_T1); \
                 _mm_prefetch((const char *)((row) + ahead[1]), _MM_HINT_T1); }
static inline __attribute__((always_inline)) void
pack_rows(const float *frame, const int32_t *rowoff, i64 rows, const fetch_t *f, int stride, float *o,
          const int32_t *ahead)
{
    const float *base = frame + f->lo;
    switch (f->kind) {
    case 0:
        for (i64 r = 0; r < rows; r++, o += stride) {
            PF_AHEAD(frame + rowoff[r])
            v_store(o, v_loadu(base + rowoff[r]));
        }
        break;
    case 1:
        for (i64 r = 0; r < rows; r++, o += stride) {
            PF_AHEAD(frame + rowoff[r])
            v_store(o, v_permute2(base + rowoff[r], f->lanes));
        }
        break;
    default:
        for (i64 r = 0; r < rows; r++, o += stride) {
            PF_AHEAD(frame + rowoff[r])
            v_store(o, v_gather(frame + rowoff[r], f->lanes));
        }
        break;
    }
}
#undef PF_AHEAD

/* B micro-panel, k-major: out[r * nv*VL + j] = frame[rowoff[r] + coloff[j]]. For the forward,
 * rows are taps and columns pixels; for dW rows are pixels and columns taps. permute_ok: the
 * frame has 2*VL floats of slack past its end (the permute path reads up to 2*VL - 1 floats
 * past the lowest offset of VL); without it, only exact loads and gathers. */
static void pack_b(const float *frame, const int32_t *rowoff, i64 rows, const int32_t *coloff, int nv,
                   int permute_ok, float *out)
{
    for (int v = 0; v < nv; v++) {
        fetch_t f = classify(coloff + v * VL, permute_ok);
        pack_rows(frame, rowoff, rows, &f, nv * VL, out + v * VL, 0);
    }
}

/* pack_b, and the lines that the same rows of the columns `ahead` (NR of them: the next
 * panel) will read asked into L2 meanwhile: the next pack finds them there while the tiles
 * of this panel run. Each row of a forward panel is its own stretch of the frame (a tap of
 * one channel), hundreds of stretches, more than the hardware prefetchers follow. */
static void pack_b_ahead(const float *frame, const int32_t *rowoff, i64 rows, const int32_t *coloff, int nv,
                         int permute_ok, const int32_t *ahead, float *out)
{
    for (int v = 0; v < nv; v++) {
        fetch_t f = classify(coloff + v * VL, permute_ok);
        const int32_t ends[2] = {ahead[v * VL], ahead[v * VL + VL - 1]};
        pack_rows(frame, rowoff, rows, &f, nv * VL, out + v * VL, ends);
    }
}

/* A packed in panels of MR rows, each k-major: panel i holds a[(i*MR + r) * rs + k * cs] at
 * [k * MR + r], rows past m as zeros. */

static void pack_a(const float *a, i64 m, i64 k, i64 rs, i64 cs, float *out)
{
    for (i64 i0 = 0; i0 < m; i0 += MR) {
        i64 rows = min64(MR, m - i0);
        i64 kk = 0;
#if MR == 8
        if (cs == 1 && rows == MR)  /* rows that run on (the weights): 8x8 blocks transposed */
            for (; kk + 8 <= k; kk += 8) transpose8(a + i0 * rs + kk, rs, out + kk * MR, MR);
#endif
        for (; kk < k; kk++) {
            for (i64 r = 0; r < rows; r++) out[kk * MR + r] = a[(i0 + r) * rs + kk * cs];
            for (i64 r = rows; r < MR; r++) out[kk * MR + r] = 0.0f;
        }
        out += k * MR;
    }
}

/* C[m x n] (row stride ldc) = (first ? 0 : C) + A_panel . B_panel (+ bias[r] when bias).
 * next: the A panel the following tile reads (or a again), fetched into L1 a line every
 * other k step: a new row panel of a large A comes from L3, and its first lines would
 * otherwise stall the tile (VGG conv4_2, 1 thread: 3% of the time). */
static inline __attribute__((always_inline)) void
tile(const int nv, i64 kc, const float *restrict a, const float *restrict b, float *c, i64 ldc,
     i64 m, i64 n, int first, const float *bias, const float *next)
{
    vf acc[MR][NV];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = v_zero();
    /* One k step: nv vectors of B times MR broadcasts of A into acc. A macro, not an inline
     * function: as a function taking acc, GCC allocated the tile's registers differently. */
#define TILE_STEP()                                                                   \
    do {                                                                              \
        vf bv[NV];                                                                    \
        for (int v = 0; v < nv; v++) bv[v] = v_load(b + v * VL);                      \
        for (int r = 0; r < MR; r++) {                                                \
            vf ar = v_set1(a[r]);                                                     \
            for (int v = 0; v < nv; v++) acc[r][v] = v_fma(ar, bv[v], acc[r][v]);     \
        }                                                                             \
        a += MR;                                                                      \
        b += nv * VL;                                                                 \
    } while (0)
    /* Where the tile adds to C, the last m*nv steps each fetch a line of it: C is often far
     * (an output past L2), and its loads would otherwise wait. */
    i64 k_c = first || kc < m * nv ? kc : kc - m * nv, k = 0;
    for (; k < k_c; k++) {
        _mm_prefetch((const char *)(next + k * MR), _MM_HINT_T0);
        TILE_STEP();
    }
    for (; k < kc; k++) {
        i64 line = k - k_c;
        _mm_prefetch((const char *)(next + k * MR), _MM_HINT_T0);
        if (line < m * nv) _mm_prefetch((const char *)(c + (line / nv) * ldc + (line % nv) * VL), _MM_HINT_T0);
        TILE_STEP();
    }
#undef TILE_STEP
    for (i64 r = 0; r < m; r++) {
        float *row = c + r * ldc;
        for (int v = 0; v < nv; v++) {
            i64 lanes = n - v * VL;
            if (lanes <= 0) break;
            vf out = acc[r][v];
            if (!first) out = v_add(v_loadn(row + v * VL, lanes), out);
            if (bias) out = v_add(out, v_set1(bias[r]));
            v_storen(row + v * VL, out, lanes);
        }
    }
}

/* The same product for a panel of at most NARROW columns (the last panel of an image whose
 * pixels leave a few over a whole number of panels: 7x7 = 48 + 1), over RP row panels of A
 * at once (np of them live; the rest repeat the last and are not stored): each column's MR
 * rows of a row panel in one 8-lane vector, so a k step is RP loads of A, n broadcasts and
 * RP*n FMAs, where the register tile would spend MR broadcasts and MR FMAs a row panel on
 * one live column. RP panels give RP*n independent sums (one would wait on each FMA's
 * latency). Every element is summed exactly as by tile(): fma(a, b, acc) over k in order,
 * then C, then bias. */
#define NARROW 4
#if V_ISA == 512
#define RP 6            /* 6 x 4 accumulators of 32 registers */
#else
#define RP 3            /* 3 x 4 of 16 */
#endif
static inline __attribute__((always_inline)) void
cols_tile(const int n, i64 np, i64 kc, const float *a, i64 a_stride, const float *restrict b, float *c,
          i64 ldc, i64 m, int first, const float *bias)
{
#if MR < 8
    const __m256i rows_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(MR), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#endif
    const float *ap[RP];
    for (int p = 0; p < RP; p++) ap[p] = a + min64(p, np - 1) * a_stride;
    __m256 acc[RP][NARROW];
    for (int p = 0; p < RP; p++)
        for (int j = 0; j < n; j++) acc[p][j] = _mm256_setzero_ps();
    for (i64 k = 0; k < kc; k++) {
        __m256 bv[NARROW];
        for (int j = 0; j < n; j++) bv[j] = _mm256_set1_ps(b[k * VL + j]);
        for (int p = 0; p < RP; p++) {
#if MR < 8
            __m256 av = _mm256_maskload_ps(ap[p] + k * MR, rows_mask);  /* MR rows, nothing read past them */
#else
            __m256 av = _mm256_loadu_ps(ap[p] + k * MR);
#endif
            for (int j = 0; j < n; j++) acc[p][j] = _mm256_fmadd_ps(av, bv[j], acc[p][j]);
        }
    }
    for (int p = 0; p < np; p++) {
        i64 rows = min64(MR, m - p * MR);
        float *cp = c + p * MR * ldc;
        for (int j = 0; j < n; j++) {
            float t[8];
            _mm256_storeu_ps(t, acc[p][j]);
            for (i64 r = 0; r < rows; r++) {
                float v = t[r];
                if (!first) v = cp[r * ldc + j] + v;
                if (bias) v = v + bias[p * MR + r];
                cp[r * ldc + j] = v;
            }
        }
    }
}

/* A panel of n <= NARROW columns against the row panels of A, RP at a time. */
static void narrow_times_a(i64 kc, const float *ap, i64 a_stride, const float *bp, float *c, i64 ldc, i64 m,
                           i64 n, int first, const float *bias)
{
    for (i64 i0 = 0; i0 < m; i0 += RP * MR) {
        const float *a = ap + (i0 / MR) * a_stride;
        const float *bi = bias ? bias + i0 : 0;
        i64 np = min64(RP, ceil_div(m - i0, MR));
        float *ci = c + i0 * ldc;
        switch (n) {
        case 1: cols_tile(1, np, kc, a, a_stride, bp, ci, ldc, m - i0, first, bi); break;
        case 2: cols_tile(2, np, kc, a, a_stride, bp, ci, ldc, m - i0, first, bi); break;
        case 3: cols_tile(3, np, kc, a, a_stride, bp, ci, ldc, m - i0, first, bi); break;
        default: cols_tile(4, np, kc, a, a_stride, bp, ci, ldc, m - i0, first, bi); break;
        }
    }
}

/* tile() for n columns of the panel b (nv vectors wide). */
static inline __attribute__((always_inline)) void
tile_any(int nv, i64 kc, const float *a, const float *b, float *c, i64 ldc, i64 m, i64 n, int first,
         const float *bias, const float *next)
{
    switch (nv) {
    case 1: tile(1, kc, a, b, c, ldc, m, n, first, bias, next); break;
#if NV > 2
    case 2: tile(2, kc, a, b, c, ldc, m, n, first, bias, next); break;
#endif
    default: tile(NV, kc, a, b, c, ldc, m, n, first, bias, next); break;
    }
}

/* One column panel of width nv*VL against every row panel of A, over one kc block. */
static void panel_times_a(int nv, i64 kc, const float *ap, i64 a_stride, const float *bp, float *c, i64 ldc,
                          i64 m, i64 n, int first, const float *bias)
{
    if (n <= NARROW) { narrow_times_a(kc, ap, a_stride, bp, c, ldc, m, n, first, bias); return; }
    for (i64 i0 = 0; i0 < m; i0 += MR) {
        const float *a = ap + (i0 / MR) * a_stride;
        const float *bi = bias ? bias + i0 : 0;
        i64 rows = min64(MR, m - i0);
        tile_any(nv, kc, a, bp, c + i0 * ldc, ldc, rows, n, first, bi, i0 + MR < m ? a + a_stride : a);
    }
}

/* A run of column panels (bp holds them KC_FWD * NR floats apart; panel q is n[q] columns wide,
 * written to c[q] with row stride ldc[q]) against every row panel of A, over one kc block:
 * each row panel of A, in L1, meets every panel of the run, in L2, so A is read once per run,
 * not once per panel. Every tile sums as in panel_times_a. */
static void panels_times_a(i64 run, i64 kc, const float *ap, i64 a_stride, const float *bp, float *const *c,
                           const i64 *ldc, i64 m, const i64 *n, int first, const float *bias)
{
    i64 last = run - 1;  /* the last panel through the register tile */
    while (last > 0 && n[last] <= NARROW) last--;
    for (i64 i0 = 0; i0 < m; i0 += MR) {
        const float *a = ap + (i0 / MR) * a_stride;
        const float *bi = bias ? bias + i0 : 0;
        i64 rows = min64(MR, m - i0);
        for (i64 q = 0; q < run; q++) {
            const float *b = bp + q * KC_FWD * NR;
            if (n[q] <= NARROW) continue;  /* below, RP row panels at a time */
            tile_any((int)ceil_div(n[q], VL), kc, a, b, c[q] + i0 * ldc[q], ldc[q], rows, n[q], first, bi,
                     q == last && i0 + MR < m ? a + a_stride : a);  /* a row panel's last tile: the next */
        }
    }
    for (i64 q = 0; q < run; q++)
        if (n[q] <= NARROW) narrow_times_a(kc, ap, a_stride, bp + q * KC_FWD * NR, c[q], ldc[q], m, n[q], first, bias);
}

/* Blocks of the reduction: as equal as possible, none longer than KC (the forward's: KC_FWD). */
static i64 kc_blocks(i64 k) { return ceil_div(k, KC); }
static i64 fwd_kc_blocks(i64 k) { return ceil_div(k, KC_FWD); }
static i64 kc_start(i64 k, i64 blocks, i64 b) { return (k * b) / blocks; }

/* The taps ys x xs (ys outer), as offsets into one kernel kw columns wide: nty*ntx of them,
 * malloc'd (NULL when that fails). */
static i64 *tap_list(const i64 *ys, i64 nty, const i64 *xs, i64 ntx, i64 kw)
{
    i64 *tl = malloc((size_t)(nty * ntx) * sizeof(i64));
    if (!tl) return NULL;
    for (i64 ty = 0; ty < nty; ty++)
        for (i64 tx = 0; tx < ntx; tx++) tl[ty * ntx + tx] = ys[ty] * kw + xs[tx];
    return tl;
}

/* How many output channels ahead the transposed-weight packers prefetch their rows: each
 * thread reads a run of 9 KiB of every output channel's 18 KiB (512 x 512 x 3x3), a stride
 * the hardware prefetchers do not follow. With its weights out of the caches (other calls
 * in between), ResNet layer4's batch-1 input gradient took 1.3-1.5x its forward's time
 * without, 1.07-1.14x with 4 (2: 1.11, 8: 1.10); called back to back, 1.0-1.1x either way. */
#define PACK_T_AHEAD 4

/* pack_t_taps' `ahead` for output channel oo of og, whose kernels (taps floats each) are cg
 * apart: PACK_T_AHEAD channels on, or 0 past the last. */
static i64 pack_t_ahead(i64 oo, i64 og, i64 cg, i64 taps)
{
    return oo + PACK_T_AHEAD < og ? PACK_T_AHEAD * cg * taps : 0;
}

/* The lanes of pack_t_taps by vector permutes (AVX-512, MR 8): for a whole tap list of nt
 * taps out of kernels of `taps` floats, MR kernels in at most 5 vectors (taps <= 10), lane l
 * of output vector j takes source float idx[j][l]. ok is 0 where that does not apply. */
typedef struct {
    int ok;
    i64 nv, nt;
    int32_t idx[5][16];
} tperm_t;

static tperm_t tperm_make(i64 taps, const i64 *tl, i64 nt)
{
    tperm_t p = {0};
#if V_ISA == 512 && MR == 8
    p.ok = taps > 1 && taps * MR <= 5 * VL;
    p.nt = nt;
    p.nv = ceil_div(nt * MR, VL);
    for (i64 q = 0; p.ok && q < p.nv * VL; q++)
        p.idx[q / VL][q % VL] = q < nt * MR ? (int32_t)((q % MR) * taps + tl[q / MR]) : 0;
#else
    (void)taps; (void)tl; (void)nt;
#endif
    return p;
}

/* Transposed weights of one output channel for MR input channels (kernels larger than 1x1;
 * pack_t_run takes 1x1's): src holds the channels' kernels (taps floats each, `rows` of them
 * real), o gets o[t * MR + r] = src[r * taps + tl[t]] for the nt taps tl, rows past `rows`
 * zero. Channels outer, taps inner: the other way round was slower in a micro-benchmark of
 * 512 x 512 x 3x3 weights. perm (or NULL):
 * tperm_make's lanes for the whole tap list, used when tl is all of it and all MR rows are
 * real: with the scalar loop, one load and one store a float, this function took 41% of the
 * samples of ResNet layer4's batch-1 input gradient called in a loop, 15% with the
 * permutes and the prefetches. ahead: how far on (in floats) the same rows of a later
 * output channel lie, to be fetched meanwhile, or 0 (pack_t_ahead). */
static void pack_t_taps(const float *restrict src, i64 taps, const i64 *tl, i64 nt, i64 rows, float *restrict o,
                        const tperm_t *perm, i64 ahead)
{
    if (ahead)
        for (i64 l = 0; l < MR * taps; l += 16) _mm_prefetch((const char *)(src + ahead + l), _MM_HINT_T0);
#if V_ISA == 512 && MR == 8
    if (perm && perm->ok && nt == perm->nt && rows == MR) {
        i64 n = taps * MR;  /* source floats: whole vectors, the last one masked */
        __m512 s0 = v_loadn(src, n), s1 = n > 16 ? v_loadn(src + 16, n - 16) : v_zero();
        __m512 s2 = n > 32 ? v_loadn(src + 32, n - 32) : v_zero(), s3 = n > 48 ? v_loadn(src + 48, n - 48) : v_zero();
        __m512 s4 = n > 64 ? v_loadn(src + 64, n - 64) : v_zero();
        for (i64 j = 0; j < perm->nv; j++) {
            __m512i ix = _mm512_loadu_si512(perm->idx[j]);
            __m512 lo = _mm512_permutex2var_ps(s0, ix, s1), mid = _mm512_permutex2var_ps(s2, ix, s3);
            __m512 v = _mm512_mask_mov_ps(lo, _mm512_cmpge_epi32_mask(ix, _mm512_set1_epi32(32)), mid);
            v = _mm512_mask_mov_ps(v, _mm512_cmpge_epi32_mask(ix, _mm512_set1_epi32(64)),
                                   _mm512_permutexvar_ps(ix, s4));
            v_storen(o + j * VL, v, nt * MR - j * VL);
        }
        return;
    }
#else
    (void)perm;
#endif
    for (i64 r = 0; r < rows; r++)
        for (i64 t = 0; t < nt; t++) o[t * MR + r] = src[r * taps + tl[t]];
    for (i64 r = rows; r < MR; r++)
        for (i64 t = 0; t < nt; t++) o[t * MR + r] = 0.0f;
}

/* One column of transposed 1x1 weights: the run src[0, rows) (the input channels of one output
 * channel) into MR-row panels panel_stride floats apart, o[p * panel_stride + r] = src[p * MR + r],
 * rows past `rows` zero. A batch-1 1x1 input gradient packed each MR floats through
 * pack_t_taps, a call each: 22% of ResNet-50's 512->2048 layer at 7x7. */
static void pack_t_run(const float *restrict src, i64 rows, float *restrict o, i64 panel_stride)
{
    i64 r = 0;
#if MR == 8
    for (; r + MR <= rows; r += MR, o += panel_stride) _mm256_storeu_ps(o, _mm256_loadu_ps(src + r));
#endif
    for (; r < rows; r += MR, o += panel_stride)
        for (i64 i = 0; i < MR; i++) o[i] = r + i < rows ? src[r + i] : 0.0f;
}

/* Weights packed as the tiles go, block by block of the reduction, into an L2-sized buffer:
 * for one image with few panels, where each block of A meets a single run of panels, a
 * packing pass of its own would write all of A to memory and read it back once more (9.4 MB
 * each way for 512 channels, 3x3). w is W (O, C/groups, kh, kw) of the convolution wg; tl
 * NULL: A is W's rows of group gi as they are (a forward); else A is the transposed weights
 * of wg's input gradient, as pack_weights_t_f32 packs them: rows the input channels, columns
 * (o, t) for the nt taps tl[t]. The values, so the sums and bits, are those of the packed A. */
typedef struct {
    const float *w;
    geom_t wg;
    const i64 *tl;
    tperm_t perm;        /* pack_t_taps' permutes for tl */
    i64 nt, gi, r0, r1;  /* the group and the rows [r0, r1) packed (r0 a multiple of MR) */
    float *buf;          /* ceil((r1 - r0) / MR) * MR * KC_FWD floats */
} a_inline_t;

/* Columns [k0, k1) of a's rows, as pack_a packs them: MR-row panels (k1 - k0) * MR apart,
 * k-major, rows past r1 zero. */
static void pack_a_inline(const a_inline_t *a, i64 k0, i64 k1)
{
    const geom_t *g = &a->wg;
    i64 kc = k1 - k0;
    if (!a->tl) {
        pack_a(a->w + (a->gi * g->og + a->r0) * g->kg + k0, a->r1 - a->r0, kc, g->kg, 1, a->buf);
        return;
    }
    i64 taps = g->kh * g->kw;
    if (taps == 1) {  /* 1x1: each o's rows are one run of w, cut into the panels' k-th columns */
        for (i64 k = k0; k < k1; k++)
            pack_t_run(a->w + (a->gi * g->og + k) * g->cg + a->r0, a->r1 - a->r0, a->buf + (k - k0) * MR, kc * MR);
        return;
    }
    for (i64 k = k0; k < k1;) {  /* o outermost: each o's rows are one run of w */
        i64 oo = k / a->nt, t0 = k % a->nt, t1 = min64(a->nt, t0 + k1 - k);
        i64 ahead = pack_t_ahead(oo, g->og, g->cg, taps);
        for (i64 c0 = a->r0; c0 < a->r1; c0 += MR)
            pack_t_taps(a->w + ((a->gi * g->og + oo) * g->cg + c0) * taps, taps, a->tl + t0, t1 - t0,
                        min64(MR, a->r1 - c0), a->buf + (c0 - a->r0) * kc + (k - k0) * MR, &a->perm, ahead);
        k += t1 - t0;
    }
}

/* C[q] (+)= A . B[q] for the `run` panels of one panel row, block by block of the reduction:
 * each block packs its panels (one panel at a time, `ahead` fetches the next one's lines
 * meanwhile) and runs them through the register tile; the bias joins in the last block. A is
 * packed at ap (row panels a_stride apart), or, `in` given, packed block by block into in->buf. */
static void forward_panel_row(const float *src, const int32_t *taps, const int32_t *pix, const i64 *j0s,
                              i64 run, int ahead, int slack, i64 kg, const float *ap, i64 a_stride,
                              const a_inline_t *in, float *bp, float *const *c, const i64 *ldc, i64 m,
                              const i64 *n, const float *bias)
{
    i64 blocks = fwd_kc_blocks(kg);
    for (i64 b = 0; b < blocks; b++) {
        i64 k0 = kc_start(kg, blocks, b), kc = kc_start(kg, blocks, b + 1) - k0;
        for (i64 q = 0; q < run; q++) {
            int nv = (int)ceil_div(n[q], VL);
            if (ahead && run == 1)
                pack_b_ahead(src, taps + k0, kc, pix + j0s[q], nv, slack, pix + j0s[q] + NR, bp);
            else pack_b(src, taps + k0, kc, pix + j0s[q], nv, slack, bp + q * KC_FWD * NR);
        }
        const float *bias_b = b == blocks - 1 ? bias : 0;
        if (in) {
            pack_a_inline(in, k0, k0 + kc);
            panels_times_a(run, kc, in->buf, kc * MR, bp, c, ldc, m, n, b == 0, bias_b);
        } else {
            panels_times_a(run, kc, ap + k0 * MR, a_stride, bp, c, ldc, m, n, b == 0, bias_b);
        }
    }
}

/* Floats of the packed weights that conv2d_fwd_f32 takes (all groups). */
i64 packed_weights_size(const i64 *g)
{
    geom_t s = read_geom(g);
    return s.groups * ceil_div(s.og, MR) * MR * s.kg;
}

/* w (O, C/groups, kh, kw) -> the MR-row panels of each group, for conv2d_fwd_f32. */
void pack_weights_f32(const float *w, const i64 *g, float *out)
{
    geom_t s = read_geom(g);
    for (i64 gi = 0; gi < s.groups; gi++)
        pack_a(w + gi * s.og * s.kg, s.og, s.kg, s.kg, 1, out + gi * ceil_div(s.og, MR) * MR * s.kg);
}

/* Row panels of packed weights, all groups: the items of pack_weights_f32 and pack_weights_t_f32. */
i64 weight_panels(const i64 *g)
{
    geom_t s = read_geom(g);
    return s.groups * ceil_div(s.og, MR);
}

/* pack_weights_f32 for the row panels [i0, i1) (items (group, row panel)) only, so that
 * threads can pack disjoint shares. */
void pack_weights_part_f32(const float *w, const i64 *g, float *out, i64 i0, i64 i1)
{
    geom_t s = read_geom(g);
    i64 rp = ceil_div(s.og, MR);
    for (i64 i = i0; i < i1; i++) {
        i64 gi = i / rp, r0 = (i % rp) * MR;
        pack_a(w + (gi * s.og + r0) * s.kg, min64(MR, s.og - r0), s.kg, s.kg, 1, out + i * MR * s.kg);
    }
}

/* The weights of an input gradient as a forward convolution of dY, packed straight from w
 * (O, C/groups, kh, kw) of the convolution geometry g, without the flipped, transposed copy:
 * rows are the input channels c of a group, columns (o, ty, tx) for the taps ys[ty], xs[tx]
 * (in the order given: reversed for the flip; a strided convolution's phase gives a subset).
 * Row panels [i0, i1) of the items (group, panel of MR input channels); the layout is
 * pack_weights_f32's for a convolution of C outputs, O inputs and nty x ntx taps. */
int pack_weights_t_f32(const float *w, const i64 *g, const i64 *ys, i64 nty, const i64 *xs, i64 ntx,
                       float *out, i64 i0, i64 i1)
{
    geom_t s = read_geom(g);
    i64 rp = ceil_div(s.cg, MR), taps = s.kh * s.kw, nt = nty * ntx, k = s.og * nt;
    if (taps == 1) {  /* 1x1 (one tap, k = og): each o's channels of a group are one run of w */
        for (i64 oo = 0; oo < s.og; oo++)
            for (i64 i = i0; i < i1;) {
                i64 gi = i / rp, end = min64(i1, (gi + 1) * rp), c0 = (i % rp) * MR;
                pack_t_run(w + (gi * s.og + oo) * s.cg + c0, min64(s.cg, (end - gi * rp) * MR) - c0,
                           out + i * MR * k + oo * MR, MR * k);
                i = end;
            }
        return 0;
    }
    i64 *tl = tap_list(ys, nty, xs, ntx, s.kw);  /* the taps in their new order */
    if (!tl) return -1;
    tperm_t perm = tperm_make(taps, tl, nt);
    /* o outermost: w is read in order (a share's channels of each o are one run), each panel
     * written in order; panel by panel would read w in strides past the prefetchers' reach */
    for (i64 oo = 0; oo < s.og; oo++)
        for (i64 i = i0; i < i1; i++) {
            i64 gi = i / rp, c0 = (i % rp) * MR;
            pack_t_taps(w + ((gi * s.og + oo) * s.cg + c0) * taps, taps, tl, nt, min64(MR, s.cg - c0),
                        out + i * MR * k + oo * nt * MR, &perm, pack_t_ahead(oo, s.og, s.cg, taps));
        }
    free(tl);
    return 0;
}

/* Work items of conv2d_fwd_f32: (image, group, panel of NR output pixels), in that order. */
i64 fwd_items(const i64 *g)
{
    geom_t s = read_geom(g);
    return s.n * s.groups * ceil_div(s.p, NR);
}

/* Column panels a forward takes per reduction block: a run of GEMM_NC when A (one group's
 * packed weights) is too large to stay in L2 between panels, so that it is read once a run;
 * else 1, which keeps the single B micro-panel in L1 (a run of them would sit in L2). */
static i64 panel_run(const geom_t *s)
{
    return ceil_div(s->og, MR) * MR * s->kg > PANEL_RUN_A_FLOATS ? GEMM_NC : 1;
}

/* Without padding, the taps read only inside the image (1x1 convolutions; any kernel with
 * padding 0): the forward then packs straight from x, whose channels are a frame of pitch w
 * (rows and columns past the taps' reach unread), and copies nothing. A frame of one
 * ResNet-50 1x1 input (256 channels of 56x56) is 3.2 MB, past L2, and copying it took about
 * as long as multiplying it. Offsets within 32 bits. Strided, only a smaller image: of a large
 * one (ResNet layer2's 1x1/2, 64 channels of 56x56), the strided reads of x were 5-9% slower
 * than a copy, which then stays in L2. */
static int reads_image(const geom_t *s, i64 images)
{
    return s->pt == 0 && s->pl == 0 && s->hp <= s->h && s->wp <= s->w &&
           ((images - 1) * s->c + s->cg) * s->h * s->w < ((i64)1 << 31) - 2 * VL &&
           ((s->sh == 1 && s->sw == 1) || s->cg * s->h * s->w <= AHEAD_SOURCE_FLOATS);
}

/* The geometry the offset tables are made for: the frame's, or, reading x itself, the image's. */
static geom_t source_geom(geom_t s, int direct)
{
    if (direct) { s.hp = s.h; s.wp = s.w; }
    return s;
}

/* Reading x itself, the permute path of pack_b may read 2*VL - 1 floats past the last offset:
 * allowed where x goes on that far past the channels (first) of image nn's group gi. */
static int slack_after(const geom_t *s, i64 nn, i64 gi)
{
    return ((nn * s->c + (gi + 1) * s->cg) * s->h * s->w + 2 * VL) <= s->n * s->c * s->h * s->w;
}

/* y (N, O, OH, OW) for the work items [w0, w1): every output element of an item, bias (O,)
 * or NULL added. A thread given a few panels of an image pads that image's frame itself. */
/* conv2d_fwd_f32 with each panel's output channels cut into `ob` blocks of whole row panels:
 * work items (image, group, block, panel) in that order, so that one image with few pixels
 * (batch 1, 7x7: a full panel and a 1-column one) still gives every thread an even share. Every output element is summed
 * as with ob = 1: a tile's sums do not depend on which rows share a call. */
static int fwd_split(const float *x, const float *wpacked, a_inline_t *in, const float *bias, float *y, i64 w0,
                     i64 w1, const i64 *g, i64 ob)
{
    geom_t s = read_geom(g);
    int direct = reads_image(&s, 1);
    geom_t so = source_geom(s, direct);
    int ahead = s.cg * so.hp * so.wp > AHEAD_SOURCE_FLOATS;
    float *frame = direct ? 0 : scratch((size_t)(s.cg * s.hp * s.wp + 2 * VL));
    float *bp = scratch((size_t)(GEMM_NC * KC_FWD * NR));
    int32_t *taps = tap_offsets(&so, TAPS_W_ORDER), *pix = pixel_offsets(&so);
    if (in) in->buf = scratch((size_t)(ceil_div(s.og, MR) * MR * KC_FWD));
    if ((!frame && !direct) || !bp || !taps || !pix || (in && !in->buf)) {
        free(frame); free(bp); free(taps); free(pix);
        if (in) free(in->buf);
        return -1;
    }
    i64 a_stride = s.kg * MR, panels = ceil_div(s.p, NR), framed = -1;
    /* cut into channel blocks (one small image), a thread's share of A is read once for all
     * of its panels: a run across every panel of the block (packing A as it goes, the same) */
    i64 run_max = ob > 1 || in ? GEMM_NC : panel_run(&s), rp = ceil_div(s.og, MR);
    float *c[GEMM_NC];
    i64 ldc[GEMM_NC], n[GEMM_NC], j0s[GEMM_NC];
    for (i64 w = w0; w < w1;) {
        /* a run of up to run_max panels of one (image, group) plane, rows [r0, r1) */
        i64 plane = w / (panels * ob), blk = w % (panels * ob) / panels, panel = w % panels;
        i64 nn = plane / s.groups, gi = plane % s.groups;
        i64 run = min64(min64(run_max, w1 - w), panels - panel);
        i64 r0 = (rp * blk / ob) * MR, r1 = min64(s.og, (rp * (blk + 1) / ob) * MR);
        if (r1 <= r0) { w += run; continue; }
        if (plane != framed && !direct) {  /* a thread given a few panels of an image frames it itself, once */
            pad_frame(x + (nn * s.c + gi * s.cg) * s.h * s.w, &s, frame);
            framed = plane;
        }
        const float *src = direct ? x + (nn * s.c + gi * s.cg) * s.h * s.w : frame;
        int slack = direct ? slack_after(&s, nn, gi) : 1;
        const float *ap = in ? 0 : wpacked + gi * rp * a_stride + (r0 / MR) * a_stride;
        if (in) { in->gi = gi; in->r0 = r0; in->r1 = r1; }
        float *yg = y + (nn * s.o + gi * s.og + r0) * s.p;
        const float *bg = bias ? bias + gi * s.og + r0 : 0;
        for (i64 q = 0; q < run; q++) {
            j0s[q] = (panel + q) * NR;
            c[q] = yg + j0s[q]; ldc[q] = s.p; n[q] = min64(NR, s.p - j0s[q]);
        }
        forward_panel_row(src, taps, pix, j0s, run, ahead && panel + 1 < panels, slack, s.kg, ap, a_stride,
                          in, bp, c, ldc, r1 - r0, n, bg);
        w += run;
    }
    free(frame); free(bp); free(taps); free(pix);
    if (in) free(in->buf);
    return 0;
}

int conv2d_fwd_split_f32(const float *x, const float *wpacked, const float *bias, float *y, i64 w0, i64 w1,
                         const i64 *g, i64 ob)
{
    return fwd_split(x, wpacked, 0, bias, y, w0, w1, g, ob);
}

/* conv2d_fwd_split_f32 with the weights packed as the tiles go (a_inline_t): straight from w,
 * the weights of the convolution wg, as they are (ys NULL: this forward's own weights, wg =
 * g) or transposed for its input gradient with the taps ys x xs (as pack_weights_t_f32).
 * For a batch of one image with few panels, where every row of A meets one run of panels. */
int conv2d_fwd_split_inline_f32(const float *x, const float *w, const float *bias, float *y, i64 w0, i64 w1,
                                const i64 *g, i64 ob, const i64 *wg, const i64 *ys, i64 nty, const i64 *xs, i64 ntx)
{
    a_inline_t in = {.w = w, .wg = read_geom(wg), .tl = 0, .nt = nty * ntx};
    i64 *tl = 0;
    if (ys) {
        if (!(tl = tap_list(ys, nty, xs, ntx, in.wg.kw))) return -1;
        in.tl = tl;
        in.perm = tperm_make(in.wg.kh * in.wg.kw, tl, in.nt);
    }
    int rc = fwd_split(x, 0, &in, bias, y, w0, w1, g, ob);
    free(tl);
    return rc;
}

int conv2d_fwd_f32(const float *x, const float *wpacked, const float *bias, float *y, i64 w0, i64 w1,
                   const i64 *g)
{
    return conv2d_fwd_split_f32(x, wpacked, bias, y, w0, w1, g, 1);
}

/* Columns of the register tile (the pixels of a panel); the Python side picks batch sizes by it. */
i64 native_nr(void) { return NR; }

/* Work items of conv2d_fwd_batched_f32 with ob = 1: (chunk of `batch` images, group, panel of NR
 * pixels of the chunk's batch * OH * OW), in that order; panels past a short last chunk are
 * empty. With ob blocks of output channels there are ob times as many. */
i64 fwd_batched_items(const i64 *g, i64 batch)
{
    geom_t s = read_geom(g);
    return ceil_div(s.n, batch) * s.groups * ceil_div(batch * s.p, NR);
}

/* conv2d_fwd_f32 for images with few output pixels (P not near a multiple of NR, e.g. 7x7 or
 * 14x14): the frames of `batch` images lie one after another, so a panel's NR columns run on
 * from one image into the next and no panel is left mostly empty. The tiles write a panel
 * buffer, copied out image by image. Each output element is summed exactly as by
 * conv2d_fwd_f32 (the same blocks of k, in turn). As in conv2d_fwd_split_f32, each panel's
 * output channels may be cut into `ob` blocks of whole row panels, items (chunk, group, block,
 * panel), so that threads get even shares (8 images of 7x7: 8 full panels and one of 8
 * columns, 9 items, which 2 threads would take as 5 and 4); the sums are the same. */
int conv2d_fwd_batched_f32(const float *x, const float *wpacked, const float *bias, float *y, i64 w0, i64 w1,
                           const i64 *g, i64 batch, i64 ob)
{
    geom_t s = read_geom(g);
    int direct = reads_image(&s, batch);  /* the images' channels straight from x, s.c * h * w apart */
    geom_t so = source_geom(s, direct);
    i64 fsize = direct ? s.c * s.h * s.w : s.cg * s.hp * s.wp, cols_chunk = batch * s.p, panels = ceil_div(cols_chunk, NR);
    i64 og_r = ceil_div(s.og, MR) * MR;
    int ahead = batch * s.cg * so.hp * so.wp > AHEAD_SOURCE_FLOATS;
    float *frame = direct ? 0 : scratch((size_t)(batch * fsize + 2 * VL));
    float *bp = scratch((size_t)(GEMM_NC * KC_FWD * NR)), *cbuf = scratch((size_t)(GEMM_NC * og_r * NR));
    int32_t *taps = tap_offsets(&so, TAPS_W_ORDER), *pix = scratch((size_t)(panels * NR)), *one = pixel_offsets(&so);
    if ((!frame && !direct) || !bp || !cbuf || !taps || !pix || !one) {
        free(frame); free(bp); free(cbuf); free(taps); free(pix); free(one);
        return -1;
    }
    for (i64 j = 0; j < panels * NR; j++) {
        i64 jj = min64(j, cols_chunk - 1);  /* past the end: repeat the last pixel */
        pix[j] = (int32_t)((jj / s.p) * fsize + one[jj % s.p]);
    }
    i64 a_stride = s.kg * MR, framed = -1, rp = ceil_div(s.og, MR);
    i64 run_max = ob > 1 ? GEMM_NC : panel_run(&s);
    float *c[GEMM_NC];
    i64 ldc[GEMM_NC], n[GEMM_NC], j0s[GEMM_NC];
    for (i64 w = w0; w < w1;) {
        i64 plane = w / (panels * ob), blk = w % (panels * ob) / panels, panel = w % panels;
        i64 chunk = plane / s.groups, gi = plane % s.groups;
        i64 run = min64(min64(run_max, w1 - w), panels - panel);
        i64 r0 = (rp * blk / ob) * MR, r1 = min64(s.og, (rp * (blk + 1) / ob) * MR);  /* output channels */
        i64 n0 = chunk * batch, nb = min64(batch, s.n - n0);
        if (r1 <= r0) { w += run; continue; }
        if (plane != framed && !direct) {
            for (i64 i = 0; i < nb; i++) pad_frame(x + ((n0 + i) * s.c + gi * s.cg) * s.h * s.w, &s, frame + i * fsize);
            framed = plane;
        }
        const float *src = direct ? x + (n0 * s.c + gi * s.cg) * s.h * s.w : frame;
        int slack = direct ? slack_after(&s, n0 + nb - 1, gi) : 1;
        const float *ap = wpacked + (gi * rp + r0 / MR) * a_stride;
        const float *bg = bias ? bias + gi * s.og + r0 : 0;
        i64 live = 0;  /* panels of the run with columns (a short last chunk has fewer) */
        for (i64 q = 0; q < run; q++) {
            i64 j0 = (panel + q) * NR, cols = min64(NR, nb * s.p - j0);
            if (cols <= 0) break;
            i64 p0 = j0 % s.p;
            j0s[live] = j0; n[live] = cols;
            if (p0 + cols <= s.p) {  /* inside one image: straight into y */
                c[live] = y + ((n0 + j0 / s.p) * s.o + gi * s.og + r0) * s.p + p0; ldc[live] = s.p;
            } else {
                c[live] = cbuf + live * og_r * NR; ldc[live] = NR;
            }
            live++;
        }
        if (live)
            forward_panel_row(src, taps, pix, j0s, live, ahead && panel + 1 < panels, slack, s.kg, ap, a_stride, 0,
                              bp, c, ldc, r1 - r0, n, bg);
        for (i64 q = 0; q < live; q++) {
            if (ldc[q] != NR) continue;
            for (i64 j = 0; j < n[q];) {  /* a panel across images: copy out image by image */
                i64 nn = n0 + (j0s[q] + j) / s.p, p0 = (j0s[q] + j) % s.p, cnt = min64(n[q] - j, s.p - p0);
                float *yo = y + (nn * s.o + gi * s.og + r0) * s.p + p0;
                for (i64 o = 0; o < r1 - r0; o++) memcpy(yo + o * s.p, c[q] + o * NR + j, (size_t)cnt * 4);
                j += cnt;
            }
        }
        w += run;
    }
    free(frame); free(bp); free(cbuf); free(taps); free(pix); free(one);
    return 0;
}

/* A packed like pack_a for the weight gradient of nb images at once: A = dY of one group,
 * og x (nb * P), image i's pixels at columns [i*P, (i+1)*P); dy points at image 0's group,
 * the next image's is img_stride floats on. */
static void pack_a_images(const float *dy, i64 img_stride, i64 m, i64 p, i64 nb, float *out)
{
    i64 k = nb * p;
    for (i64 i0 = 0; i0 < m; i0 += MR) {
        i64 rows = min64(MR, m - i0);
        for (i64 i = 0; i < nb; i++) {
            const float *a = dy + i * img_stride + i0 * p;
            float *o = out + i * p * MR;
            i64 kk = 0;
#if MR == 8
            if (rows == MR)
                for (; kk + 8 <= p; kk += 8) transpose8(a + kk, p, o + kk * MR, MR);
#endif
            for (; kk < p; kk++) {
                for (i64 r = 0; r < rows; r++) o[kk * MR + r] = a[r * p + kk];
                for (i64 r = rows; r < MR; r++) o[kk * MR + r] = 0.0f;
            }
        }
        out += k * MR;
    }
}

/* Images whose pixels the weight gradient sums as one reduction (blocks of KC over their
 * pixels), so that dW, read and written once per block, is not swept once per image when
 * images are small (7x7: 49 pixels); frames within 4 Mi floats. Depends on the shapes and
 * the share's size alone. */
static i64 dw_batch(const geom_t *s, i64 share)
{
    i64 fsize = s->cg * s->hp * s->wp, b = ceil_div(2 * KC, s->p);
    if (b > share) b = share;
    while (b > 1 && b * fsize > (1 << 22)) b--;
    return b < 1 ? 1 : b;
}

/* dW = sum over the images [n0, n1) of dY . col^T, overwritten. w_order: its columns are in
 * W's own (c, ky, kx) order, dW is (O, C/groups, kh, kw), and the packing gathers each vector
 * of taps from the channels-innermost frame; else they are in (ky, kx, c) order, read with
 * whole-vector loads, dW is (O, kh, kw, C/groups) and the caller transposes it (a pass over
 * dW that costs as much as the GEMM where the batch has few pixels). The images are taken a
 * few at a time (dw_batch), their pixels one reduction in KC blocks. The sums are the same
 * bits in either order. */
int conv2d_dw_cols_f32(const float *x, const float *dy, float *dw, i64 n0, i64 n1, i64 t0, i64 t1, i64 w_order,
                       const i64 *g);
i64 dw_col_items(const i64 *g);

int conv2d_dw_f32(const float *x, const float *dy, float *dw, i64 n0, i64 n1, i64 w_order, const i64 *g)
{
    return conv2d_dw_cols_f32(x, dy, dw, n0, n1, 0, dw_col_items(g), w_order, g);
}

/* Work items of conv2d_dw_cols_f32: (column panel of NR taps, row panel of MR output
 * channels) of each group's dW, panel-major. Row panels, not whole column panels, so that
 * threads get even shares: AlexNet's grouped 5x5 at batch 1 has 25 column panels, which two
 * threads took as 13 and 12, one waiting 8% of the call. */
i64 dw_col_items(const i64 *g)
{
    geom_t s = read_geom(g);
    return ceil_div(s.kg, NR) * ceil_div(s.og, MR);
}

/* conv2d_dw_f32 for the items [t0, t1) (dw_col_items) of each group's dW only: threads
 * given disjoint items share one share of the batch (a small image, batch 1) with no
 * partial sums; each element is summed exactly as by conv2d_dw_f32. A column panel split
 * between two threads is packed by both. */
int conv2d_dw_cols_f32(const float *x, const float *dy, float *dw, i64 n0, i64 n1, i64 t0, i64 t1, i64 w_order,
                       const i64 *g)
{
    geom_t s = read_geom(g);
    i64 rt = ceil_div(s.og, MR), j_lo = t0 / rt, j_hi = ceil_div(t1, rt);  /* column panels touched */
    /* row panels of dY to pack: those of the one column panel, or all of them */
    i64 a_lo = j_hi - j_lo == 1 ? t0 - j_lo * rt : 0, a_hi = j_hi - j_lo == 1 ? t1 - j_lo * rt : rt;
    i64 fsize = s.cg * s.hp * s.wp, batch = dw_batch(&s, n1 - n0), kmax = batch * s.p;
    float *frame = scratch((size_t)(batch * fsize + 2 * VL));
    float *bp = scratch((size_t)(KC * NR));
    float *ap = scratch((size_t)((a_hi - a_lo) * MR * kmax));
    int32_t *taps = tap_offsets(&s, w_order ? TAPS_W_ORDER_HWC : TAPS_HWC), *one = pixel_offsets(&s);
    int32_t *pix = scratch((size_t)kmax);
    if (!frame || !bp || !ap || !taps || !one || !pix) {
        free(frame); free(bp); free(ap); free(taps); free(one); free(pix);
        return -1;
    }
    for (i64 j = 0; j < kmax; j++) pix[j] = (int32_t)((j / s.p) * fsize + one[j % s.p] * s.cg);
    for (i64 gi = 0; gi < s.groups; gi++) {
        float *dwg = dw + gi * s.og * s.kg;
        for (i64 c0 = n0; c0 < n1; c0 += batch) {
            i64 nb = min64(batch, n1 - c0), k = nb * s.p, blocks = kc_blocks(k), a_stride = k * MR;
            for (i64 i = 0; i < nb; i++) pad_frame_hwc(x + ((c0 + i) * s.c + gi * s.cg) * s.h * s.w, &s, frame + i * fsize);
            pack_a_images(dy + (c0 * s.o + gi * s.og + a_lo * MR) * s.p, s.o * s.p,
                          min64(s.og, a_hi * MR) - a_lo * MR, s.p, nb, ap);
            /* A column panel of dW runs through every block of the reduction before the
             * next: its og x NR floats stay in L1/L2 between the blocks that add to them */
            for (i64 jp = j_lo; jp < j_hi; jp++) {
                i64 j0 = jp * NR, cols = min64(NR, s.kg - j0);
                i64 r_lo = t0 > jp * rt ? t0 - jp * rt : 0, r_hi = min64(rt, t1 - jp * rt);  /* row panels */
                i64 rows = min64(s.og, r_hi * MR) - r_lo * MR;
                int nv = (int)ceil_div(cols, VL);
                const float *ar = ap + (r_lo - a_lo) * a_stride;
                for (i64 b = 0; b < blocks; b++) {
                    i64 p0 = kc_start(k, blocks, b), kc = kc_start(k, blocks, b + 1) - p0;
                    pack_b(frame, pix + p0, kc, taps + j0, nv, 1, bp);
                    panel_times_a(nv, kc, ar + p0 * MR, a_stride, bp, dwg + r_lo * MR * s.kg + j0, s.kg, rows,
                                  cols, c0 == n0 && b == 0, 0);
                }
            }
        }
    }
    free(frame); free(bp); free(ap); free(taps); free(one); free(pix);
    return 0;
}

/* dW of one image nn over its output pixels [q0, q1) only, overwritten (the layout of
 * conv2d_dw_f32): a batch of one cut into fixed shares of pixels, so that threads share it;
 * the caller adds the shares' partial dW in order. The frame holds only the rows the
 * share's taps read. */
int conv2d_dw_pixels_f32(const float *x, const float *dy, float *dw, i64 nn, i64 q0, i64 q1, i64 w_order,
                         const i64 *g)
{
    geom_t s = read_geom(g);
    i64 k = q1 - q0, blocks = kc_blocks(k), a_stride = k * MR;
    i64 r0 = (q0 / s.ow) * s.sh, r1 = ((q1 - 1) / s.ow) * s.sh + s.dh * (s.kh - 1) + 1;  /* frame rows read */
    float *frame = scratch((size_t)(s.cg * (r1 - r0) * s.wp + 2 * VL));
    float *bp = scratch((size_t)(KC * NR));
    float *ap = scratch((size_t)(ceil_div(s.og, MR) * MR * k));
    int32_t *taps = tap_offsets(&s, w_order ? TAPS_W_ORDER_HWC : TAPS_HWC), *one = pixel_offsets(&s);
    if (!frame || !bp || !ap || !taps || !one) {
        free(frame); free(bp); free(ap); free(taps); free(one);
        return -1;
    }
    for (i64 j = q0; j < q1; j++) one[j] = (int32_t)((one[j] - r0 * s.wp) * s.cg);
    for (i64 gi = 0; gi < s.groups; gi++) {
        float *dwg = dw + gi * s.og * s.kg;
        pad_frame_hwc_rows(x + (nn * s.c + gi * s.cg) * s.h * s.w, &s, r0, r1, frame);
        pack_a(dy + (nn * s.o + gi * s.og) * s.p + q0, s.og, k, s.p, 1, ap);
        for (i64 j0 = 0; j0 < s.kg; j0 += NR) {  /* a column panel through every block, as above */
            i64 cols = min64(NR, s.kg - j0);
            int nv = (int)ceil_div(cols, VL);
            for (i64 b = 0; b < blocks; b++) {
                i64 p0 = kc_start(k, blocks, b), kc = kc_start(k, blocks, b + 1) - p0;
                pack_b(frame, one + q0 + p0, kc, taps + j0, nv, 1, bp);
                panel_times_a(nv, kc, ap + p0 * MR, a_stride, bp, dwg + j0, s.kg, s.og, cols, b == 0, 0);
            }
        }
    }
    free(frame); free(bp); free(ap); free(taps); free(one);
    return 0;
}

/* The weight gradient's fixed shares [i0, i1) of the batch (pixels = 0: share i is images
 * bounds[i] to bounds[i+1] - 1, by conv2d_dw_f32) or of the pixels of image 0 (pixels = 1:
 * by conv2d_dw_pixels_f32), share i summed into its own partial dW at dw + i * O*K. One
 * entry point over a range of shares, so that a thread pool can split them. */
int conv2d_dw_shares_f32(const float *x, const float *dy, float *dw, const i64 *bounds, i64 pixels, i64 w_order,
                         i64 i0, i64 i1, const i64 *g)
{
    i64 size = g[G_O] * (g[G_C] / g[G_GROUPS]) * g[G_KH] * g[G_KW];
    for (i64 i = i0; i < i1; i++) {
        int rc = pixels ? conv2d_dw_pixels_f32(x, dy, dw + i * size, 0, bounds[i], bounds[i + 1], w_order, g)
                        : conv2d_dw_f32(x, dy, dw + i * size, bounds[i], bounds[i + 1], w_order, g);
        if (rc) return rc;
    }
    return 0;
}

/* Plain matrices: C (M x N, row stride ldc) = A . B with A(i, k) = a[i * ras + k * cas] and
 * B(k, j) = b[k * rbs + j * cbs], for the column panels [t0, t1) of NR columns of C (each
 * thread packs its own share of B, which is read once). The same packing and register
 * tiles as the convolutions; the benchmark's bare GEMM uses it. */
i64 gemm_panels(i64 n) { return ceil_div(n, NR); }

int gemm_f32(const float *a, i64 ras, i64 cas, const float *b, i64 rbs, i64 cbs, float *c, i64 ldc,
              i64 m, i64 n, i64 k, i64 t0, i64 t1)
{
    i64 blocks = kc_blocks(k), a_stride = k * MR;
    float *ap = scratch((size_t)(ceil_div(m, MR) * MR * k));
    float *bp = scratch((size_t)(KC * NR));
    int32_t *rowoff = scratch((size_t)k), *coloff = scratch((size_t)(ceil_div(n, NR) * NR));
    float *block = cbs == 1 ? scratch((size_t)(KC * NR * GEMM_NC)) : 0;
    if (!ap || !bp || !rowoff || !coloff || (cbs == 1 && !block)) {
        free(ap); free(bp); free(rowoff); free(coloff); free(block);
        return -1;
    }
    for (i64 kk = 0; kk < k; kk++) rowoff[kk] = (int32_t)(kk * rbs);
    for (i64 j = 0; j < ceil_div(n, NR) * NR; j++) coloff[j] = (int32_t)(min64(j, n - 1) * cbs);
    pack_a(a, m, k, ras, cas, ap);
    if (cbs != 1) {  /* strided columns: one micro-panel at a time, through pack_b's fetches */
        for (i64 t = t0; t < t1; t++) {
            i64 j0 = t * NR, cols = min64(NR, n - j0);
            int nv = (int)ceil_div(cols, VL);
            for (i64 bl = 0; bl < blocks; bl++) {
                i64 k0 = kc_start(k, blocks, bl), kc = kc_start(k, blocks, bl + 1) - k0;
                pack_b(b, rowoff + k0, kc, coloff + j0, nv, 0, bp);
                panel_times_a(nv, kc, ap + k0 * MR, a_stride, bp, c + j0, ldc, m, cols, bl == 0, 0);
            }
        }
    } else {  /* rows of B run on: pack GEMM_NC panels at once, reading each row's stretch in one go */
        for (i64 tb = t0; tb < t1; tb += GEMM_NC) {
            i64 panels = min64(GEMM_NC, t1 - tb);
            for (i64 bl = 0; bl < blocks; bl++) {
                i64 k0 = kc_start(k, blocks, bl), kc = kc_start(k, blocks, bl + 1) - k0;
                for (i64 r = 0; r < kc; r++) {
                    const float *row = b + (k0 + r) * rbs;
                    for (i64 t = 0; t < panels; t++) {
                        i64 j0 = (tb + t) * NR, cols = min64(NR, n - j0);
                        float *dst = block + t * KC * NR + r * NR;
                        if (cols == NR) memcpy(dst, row + j0, NR * 4);
                        else { memcpy(dst, row + j0, (size_t)cols * 4); memset(dst + cols, 0, (size_t)(NR - cols) * 4); }
                    }
                }
                for (i64 t = 0; t < panels; t++) {
                    i64 j0 = (tb + t) * NR, cols = min64(NR, n - j0);
                    int nv = (int)ceil_div(cols, VL);
                    float *src = block + t * KC * NR, *dst = bp;
                    if (nv < NV)  /* a narrow last panel: re-lay it at its own width */
                        for (i64 r = 0; r < kc; r++) memcpy(dst + r * nv * VL, src + r * NR, (size_t)nv * VL * 4);
                    else dst = src;
                    panel_times_a(nv, kc, ap + k0 * MR, a_stride, dst, c + j0, ldc, m, cols, bl == 0, 0);
                }
            }
        }
    }
    free(ap); free(bp); free(rowoff); free(coloff); free(block);
    return 0;
}

/* ReLU over the elements [i0, i1), NumPy's results bit for bit: max(x, 0) with NaN kept
 * (np.maximum), and the gradient g * (y > 0) (a product, so a NaN gradient stays NaN). One
 * pass each where NumPy makes one (forward) or three (compare, cast, multiply). */
void relu_f32(const float *x, float *y, i64 i0, i64 i1)
{
    for (i64 i = i0; i < i1; i++) {
        float v = x[i];
        y[i] = (v > 0.0f || v != v) ? v : 0.0f;
    }
}

void relu_backward_f32(const float *g, const float *y, float *dx, i64 i0, i64 i1)
{
    for (i64 i = i0; i < i1; i++) dx[i] = g[i] * (y[i] > 0.0f ? 1.0f : 0.0f);
}

/* Stride 2's two column phases of a row and the row itself: dst[2i] = even[i] and
 * dst[2i+1] = odd[i] for i < n/2 (and dst[n-1] = even[n/2] for an odd n; a NULL source reads
 * as zeros), and its inverse.
 * Scalar, these strided copies took about half of a 5x5/2 depthwise input gradient
 * (EfficientNet's 144 channels at 56x56), and up to a third of a GEMM-path one's (the
 * phases put in place). */
#if V_ISA == 512
static const int32_t lo_idx2[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
static const int32_t hi_idx2[16] = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
static const int32_t even_idx2[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
static const int32_t odd_idx2[16] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
#endif

static void interleave2(float *restrict dst, const float *restrict even, const float *restrict odd, i64 n)
{
    i64 i = 0;
#if V_ISA == 512
    const __m512i lo = _mm512_loadu_si512(lo_idx2), hi = _mm512_loadu_si512(hi_idx2);
    for (; 2 * i + 2 * VL <= n; i += VL) {
        vf e = even ? v_loadu(even + i) : v_zero(), o = odd ? v_loadu(odd + i) : v_zero();
        _mm512_storeu_ps(dst + 2 * i, _mm512_permutex2var_ps(e, lo, o));
        _mm512_storeu_ps(dst + 2 * i + VL, _mm512_permutex2var_ps(e, hi, o));
    }
    if (2 * i < n) {  /* the last r < 2*VL floats: (r + 1) / 2 even ones, r / 2 odd ones */
        i64 r = n - 2 * i;
        vf e = even ? v_loadn(even + i, (r + 1) / 2) : v_zero(), o = odd && r > 1 ? v_loadn(odd + i, r / 2) : v_zero();
        v_storen(dst + 2 * i, _mm512_permutex2var_ps(e, lo, o), r);
        if (r > VL) v_storen(dst + 2 * i + VL, _mm512_permutex2var_ps(e, hi, o), r - VL);
        return;
    }
#endif
    for (; 2 * i < n; i++) {
        dst[2 * i] = even ? even[i] : 0.0f;
        if (2 * i + 1 < n) dst[2 * i + 1] = odd ? odd[i] : 0.0f;
    }
}

static void deinterleave2(float *restrict even, float *restrict odd, const float *restrict src, i64 n)
{
    i64 i = 0;
#if V_ISA == 512
    const __m512i ei = _mm512_loadu_si512(even_idx2), oi = _mm512_loadu_si512(odd_idx2);
    for (; 2 * i + 2 * VL <= n; i += VL) {
        vf a = v_loadu(src + 2 * i), b = v_loadu(src + 2 * i + VL);
        _mm512_storeu_ps(even + i, _mm512_permutex2var_ps(a, ei, b));
        _mm512_storeu_ps(odd + i, _mm512_permutex2var_ps(a, oi, b));
    }
    if (2 * i < n) {  /* the last r < 2*VL floats */
        i64 r = n - 2 * i;
        vf a = v_loadn(src + 2 * i, r), b = r > VL ? v_loadn(src + 2 * i + VL, r - VL) : v_zero();
        v_storen(even + i, _mm512_permutex2var_ps(a, ei, b), (r + 1) / 2);
        if (r > 1) v_storen(odd + i, _mm512_permutex2var_ps(a, oi, b), r / 2);
        return;
    }
#endif
    for (; 2 * i < n; i++) {
        even[i] = src[2 * i];
        if (2 * i + 1 < n) odd[i] = src[2 * i + 1];
    }
}

/* The two column phases of a stride-2 input gradient's row phase put in place at once,
 * planes [p0, p1) of (N*C, H, W): dx[fy + i*sh][2j] = even[i][j], dx[fy + i*sh][2j+1] =
 * odd[i][j] (a NULL part: zeros, pixels no tap reaches), whole rows written by vector
 * permutes where place_phase_f32 took each phase by a strided scalar loop (7-37% of a strided
 * GEMM-path input gradient). g: ny, nx of even, nx of odd, H, W, fy, sh. */
void place_phases2_f32(const float *even, const float *odd, float *dx, i64 p0, i64 p1, const i64 *g)
{
    i64 ny = g[0], nxe = g[1], nxo = g[2], h = g[3], w = g[4], fy = g[5], sh = g[6];
    for (i64 pl = p0; pl < p1; pl++)
        for (i64 i = 0; i < ny; i++)
            interleave2(dx + (pl * h + fy + i * sh) * w, even ? even + (pl * ny + i) * nxe : 0,
                        odd ? odd + (pl * ny + i) * nxo : 0, w);
}

/* One phase of a strided input gradient put in place, planes [p0, p1) of (N*C, H, W):
 * dx[fy + i*sh][fx + j*sw] = part[i][j] for the phase's ny x nx pixels (zeros where part is
 * null: pixels no tap reaches). g: ny, nx, H, W, fy, fx, sh, sw. */
void place_phase_f32(const float *part, float *dx, i64 p0, i64 p1, const i64 *g)
{
    i64 ny = g[0], nx = g[1], h = g[2], w = g[3], fy = g[4], fx = g[5], sh = g[6], sw = g[7];
    for (i64 pl = p0; pl < p1; pl++)
        for (i64 i = 0; i < ny; i++) {
            float *d = dx + (pl * h + fy + i * sh) * w + fx;
            const float *src = part ? part + (pl * ny + i) * nx : 0;
            if (sw == 1) {
                if (src) memcpy(d, src, (size_t)nx * 4);
                else memset(d, 0, (size_t)nx * 4);
            } else if (src) {
                for (i64 j = 0; j < nx; j++) d[j * sw] = src[j];
            } else {
                for (i64 j = 0; j < nx; j++) d[j * sw] = 0.0f;
            }
        }
}

/* ---------------------------------------------------------------------------------------
 * Max pooling over planes [p0, p1) of the (N*C, H, W) input, PyTorch's rules: the first
 * maximum in the window's row-major order wins, a NaN wins over anything before it (so the
 * last NaN wins), padding never wins (not even over -inf). idx is the in-window position
 * ky*kw + kx as uint8 (windows of at most 256 taps). Plain C, written so that the loop over
 * the output columns vectorizes; the padded plane is a -inf frame in scratch memory.
 * geom: H, W, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW (the frame is what the taps read).
 */
enum { P_H, P_W, P_KH, P_KW, P_SH, P_SW, P_DH, P_DW, P_PT, P_PL, P_OH, P_OW, P_LEN };

typedef struct { i64 h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, hp, wp; } pool_t;

static pool_t read_pool(const i64 *g)
{
    pool_t s;
    s.h = g[P_H]; s.w = g[P_W]; s.kh = g[P_KH]; s.kw = g[P_KW]; s.sh = g[P_SH]; s.sw = g[P_SW];
    s.dh = g[P_DH]; s.dw = g[P_DW]; s.pt = g[P_PT]; s.pl = g[P_PL]; s.oh = g[P_OH]; s.ow = g[P_OW];
    s.hp = (s.oh - 1) * s.sh + s.dh * (s.kh - 1) + 1;
    s.wp = (s.ow - 1) * s.sw + s.dw * (s.kw - 1) + 1;
    return s;
}

static void frame_plane(const float *x, const pool_t *s, float fill, float *frame)
{
    i64 q0 = s->pl > 0 ? s->pl : 0, q1 = min64(s->wp, s->pl + s->w);  /* columns fed by the image */
    for (i64 r = 0; r < s->hp; r++) {
        float *row = frame + r * s->wp;
        i64 ir = r - s->pt;
        if (ir < 0 || ir >= s->h || q1 <= q0) { for (i64 q = 0; q < s->wp; q++) row[q] = fill; continue; }
        for (i64 q = 0; q < q0; q++) row[q] = fill;
        memcpy(row + q0, x + ir * s->w + (q0 - s->pl), (size_t)(q1 - q0) * 4);
        for (i64 q = q1; q < s->wp; q++) row[q] = fill;
    }
}

/* First tap inside the image along one axis, for each output position. */
static void first_inside(i64 out, i64 stride, i64 dil, i64 pad, i64 size, i64 k, uint8_t *first)
{
    for (i64 o = 0; o < out; o++) {
        i64 t = 0;
        while (t < k - 1 && (o * stride - pad + t * dil < 0 || o * stride - pad + t * dil >= size)) t++;
        first[o] = (uint8_t)t;
    }
}

/* 2x2 windows with stride 2, no padding or dilation (the common case): each output row reads
 * two input rows straight from x, 16 outputs at a time, even and odd columns split by a permute. */
#if V_ISA == 512
static int is_k2s2(const pool_t *s)
{
    return s->kh == 2 && s->kw == 2 && s->sh == 2 && s->sw == 2 && s->dh == 1 && s->dw == 1 &&
           s->pt == 0 && s->pl == 0 && s->hp <= s->h && s->wp <= s->w;
}

/* Columns 2j (even) and 2j+1 (odd) of 32 floats from row, the first 2*n of them valid. */
static inline void split_pairs(const float *row, i64 n, __m512 *even, __m512 *odd)
{
    __m512 lo = _mm512_maskz_loadu_ps(lanes_mask(2 * n), row);
    __m512 hi = _mm512_maskz_loadu_ps(lanes_mask(2 * n - VL > 0 ? 2 * n - VL : 0), row + VL);
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    *even = _mm512_permutex2var_ps(lo, ev, hi);
    *odd = _mm512_permutex2var_ps(lo, _mm512_add_epi32(ev, _mm512_set1_epi32(1)), hi);
}

/* Columns 2j and 2j+1 of a row, the first 2*n of them, from even[j] and odd[j] (the inverse of
 * split_pairs). */
static inline void store_pairs(float *row, i64 n, __m512 even, __m512 odd)
{
    const __m512i lo_ix = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi_ix = _mm512_add_epi32(lo_ix, _mm512_set1_epi32(8));
    i64 cols = 2 * n;
    _mm512_mask_storeu_ps(row, lanes_mask(cols), _mm512_permutex2var_ps(even, lo_ix, odd));
    if (cols > VL)
        _mm512_mask_storeu_ps(row + VL, lanes_mask(cols - VL), _mm512_permutex2var_ps(even, hi_ix, odd));
}

static inline void take16(__m512 v, int k, __m512 *best, __m512i *at)
{
    __mmask16 m = _mm512_cmp_ps_mask(v, *best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    *best = _mm512_mask_mov_ps(*best, m, v);
    *at = _mm512_mask_mov_epi32(*at, m, _mm512_set1_epi32(k));
}

static void max_pool_k2s2(const float *x, float *y, uint8_t *idx, i64 p0, i64 p1, const pool_t *s)
{
    for (i64 p = p0; p < p1; p++)
        for (i64 oy = 0; oy < s->oh; oy++) {
            const float *r0 = x + (p * s->h + 2 * oy) * s->w, *r1 = r0 + s->w;
            float *yo = y + (p * s->oh + oy) * s->ow;
            uint8_t *io = idx + (p * s->oh + oy) * s->ow;
            for (i64 ox = 0; ox < s->ow; ox += VL) {
                i64 n = min64(VL, s->ow - ox);
                __m512 a, b, c, d;
                split_pairs(r0 + 2 * ox, n, &a, &b);
                split_pairs(r1 + 2 * ox, n, &c, &d);
                __m512 best = a;
                __m512i at = _mm512_setzero_si512();
                take16(b, 1, &best, &at);
                take16(c, 2, &best, &at);
                take16(d, 3, &best, &at);
                _mm512_mask_storeu_ps(yo + ox, lanes_mask(n), best);
                _mm512_mask_cvtepi32_storeu_epi8(io + ox, lanes_mask(n), at);
            }
        }
}

/* Its backward: every covered pixel is written once (its window's gradient or zero). */
static void max_pool_k2s2_bwd(const float *gy, const uint8_t *idx, float *dx, i64 p0, i64 p1, const pool_t *s)
{
    for (i64 p = p0; p < p1; p++) {
        float *plane = dx + p * s->h * s->w;
        for (i64 oy = 0; oy < s->oh; oy++) {
            const float *go = gy + (p * s->oh + oy) * s->ow;
            const uint8_t *io = idx + (p * s->oh + oy) * s->ow;
            for (int ky = 0; ky < 2; ky++) {
                float *row = plane + (2 * oy + ky) * s->w;
                for (i64 ox = 0; ox < s->ow; ox += VL) {
                    i64 n = min64(VL, s->ow - ox);
                    __m512 g = _mm512_maskz_loadu_ps(lanes_mask(n), go + ox);
                    __m512i at = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(lanes_mask(n), io + ox));
                    /* + 0.0: a -0.0 gradient lands as +0.0, as PyTorch's 0 + g does */
                    __m512 left = _mm512_add_ps(_mm512_maskz_mov_ps(
                        _mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32(2 * ky)), g), _mm512_setzero_ps());
                    __m512 right = _mm512_add_ps(_mm512_maskz_mov_ps(
                        _mm512_cmpeq_epi32_mask(at, _mm512_set1_epi32(2 * ky + 1)), g), _mm512_setzero_ps());
                    store_pairs(row + 2 * ox, n, left, right);
                }
                for (i64 q = 2 * s->ow; q < s->w; q++) row[q] = 0.0f;
            }
        }
        for (i64 r = 2 * s->oh; r < s->h; r++) memset(plane + r * s->w, 0, (size_t)s->w * 4);
    }
}

/* Average pooling over the same 2x2, stride-2 windows: ((x00 + x01) + x10) + x11, then / div,
 * the generic path's order of additions, so the same bits. */
static void avg_pool_k2s2(const float *x, float *y, float div, i64 p0, i64 p1, const pool_t *s)
{
    const __m512 d = _mm512_set1_ps(div);
    for (i64 p = p0; p < p1; p++)
        for (i64 oy = 0; oy < s->oh; oy++) {
            const float *r0 = x + (p * s->h + 2 * oy) * s->w, *r1 = r0 + s->w;
            float *yo = y + (p * s->oh + oy) * s->ow;
            for (i64 ox = 0; ox < s->ow; ox += VL) {
                i64 n = min64(VL, s->ow - ox);
                __m512 a, b, c, e;
                split_pairs(r0 + 2 * ox, n, &a, &b);
                split_pairs(r1 + 2 * ox, n, &c, &e);
                __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), c), e);
                _mm512_mask_storeu_ps(yo + ox, lanes_mask(n), _mm512_div_ps(sum, d));
            }
        }
}

/* Its backward: each covered pixel gets 0 + g / div (a -0.0 lands as +0.0, as in the generic
 * path's scatter-add into zeros); rows and columns no window covers get zero. */
static void avg_pool_k2s2_bwd(const float *gy, float *dx, float div, i64 p0, i64 p1, const pool_t *s)
{
    const __m512 d = _mm512_set1_ps(div);
    for (i64 p = p0; p < p1; p++) {
        float *plane = dx + p * s->h * s->w;
        for (i64 oy = 0; oy < s->oh; oy++) {
            const float *go = gy + (p * s->oh + oy) * s->ow;
            for (int ky = 0; ky < 2; ky++) {
                float *row = plane + (2 * oy + ky) * s->w;
                for (i64 ox = 0; ox < s->ow; ox += VL) {
                    i64 n = min64(VL, s->ow - ox);
                    __m512 g = _mm512_add_ps(_mm512_setzero_ps(),
                                             _mm512_div_ps(_mm512_maskz_loadu_ps(lanes_mask(n), go + ox), d));
                    store_pairs(row + 2 * ox, n, g, g);
                }
                for (i64 q = 2 * s->ow; q < s->w; q++) row[q] = 0.0f;
            }
        }
        for (i64 r = 2 * s->oh; r < s->h; r++) memset(plane + r * s->w, 0, (size_t)s->w * 4);
    }
}
#else
static int is_k2s2(const pool_t *s) { (void)s; return 0; }  /* the frame-based kernels serve */
static void max_pool_k2s2(const float *x, float *y, uint8_t *idx, i64 p0, i64 p1, const pool_t *s)
{ (void)x; (void)y; (void)idx; (void)p0; (void)p1; (void)s; }
static void max_pool_k2s2_bwd(const float *gy, const uint8_t *idx, float *dx, i64 p0, i64 p1, const pool_t *s)
{ (void)gy; (void)idx; (void)dx; (void)p0; (void)p1; (void)s; }
static void avg_pool_k2s2(const float *x, float *y, float div, i64 p0, i64 p1, const pool_t *s)
{ (void)x; (void)y; (void)div; (void)p0; (void)p1; (void)s; }
static void avg_pool_k2s2_bwd(const float *gy, float *dx, float div, i64 p0, i64 p1, const pool_t *s)
{ (void)gy; (void)dx; (void)div; (void)p0; (void)p1; (void)s; }
#endif

/* Average pooling, 2x2 windows of stride 2 inside the image (AVX-512 builds): 1 where the
 * entry points below serve geometry g, else 0 (the NumPy path serves). */
int avg_pool2d_k2s2_ok(const i64 *g)
{
    pool_t s = read_pool(g);
    return is_k2s2(&s);
}

/* y = window mean for planes [p0, p1) of N*C; call only where avg_pool2d_k2s2_ok(g). */
void avg_pool2d_k2s2_fwd_f32(const float *x, float *y, const float *div, i64 p0, i64 p1, const i64 *g)
{
    pool_t s = read_pool(g);
    avg_pool_k2s2(x, y, *div, p0, p1, &s);
}

void avg_pool2d_k2s2_bwd_f32(const float *gy, float *dx, const float *div, i64 p0, i64 p1, const i64 *g)
{
    pool_t s = read_pool(g);
    avg_pool_k2s2_bwd(gy, dx, *div, p0, p1, &s);
}

/* One tap across a row of windows: take v where it beats the best so far, or is NaN. */
static inline __attribute__((always_inline)) void
take_tap(const float *restrict src, const i64 sw, i64 n, float *restrict best, int32_t *restrict at, int32_t k)
{
    for (i64 ox = 0; ox < n; ox++) {
        float v = src[ox * sw];
        int take = (v > best[ox]) | (v != v);
        best[ox] = take ? v : best[ox];
        at[ox] = take ? k : at[ox];
    }
}

int max_pool2d_fwd_f32(const float *x, float *y, uint8_t *idx, i64 p0, i64 p1, const i64 *g)
{
    pool_t s = read_pool(g);
    if (is_k2s2(&s)) { max_pool_k2s2(x, y, idx, p0, p1, &s); return 0; }
    float *frame = scratch((size_t)(s.hp * s.wp));
    uint8_t *fy = scratch((size_t)s.oh), *fx = scratch((size_t)s.ow);
    int32_t *at = scratch((size_t)s.ow);
    if (!frame || !fy || !fx || !at) { free(frame); free(fy); free(fx); free(at); return -1; }
    first_inside(s.oh, s.sh, s.dh, s.pt, s.h, s.kh, fy);
    first_inside(s.ow, s.sw, s.dw, s.pl, s.w, s.kw, fx);
    for (i64 p = p0; p < p1; p++) {
        frame_plane(x + p * s.h * s.w, &s, -__builtin_inff(), frame);
        for (i64 oy = 0; oy < s.oh; oy++) {
            float *best = y + (p * s.oh + oy) * s.ow;
            for (i64 ox = 0; ox < s.ow; ox++) {
                best[ox] = -__builtin_inff();
                at[ox] = fy[oy] * (int32_t)s.kw + fx[ox];
            }
            for (i64 ky = 0; ky < s.kh; ky++) {
                const float *row = frame + (oy * s.sh + ky * s.dh) * s.wp;
                for (i64 kx = 0; kx < s.kw; kx++) {
                    const float *src = row + kx * s.dw;
                    int32_t k = (int32_t)(ky * s.kw + kx);
                    if (s.sw == 1) take_tap(src, 1, s.ow, best, at, k);
                    else if (s.sw == 2) take_tap(src, 2, s.ow, best, at, k);
                    else take_tap(src, s.sw, s.ow, best, at, k);
                }
            }
            uint8_t *out = idx + (p * s.oh + oy) * s.ow;
            for (i64 ox = 0; ox < s.ow; ox++) out[ox] = (uint8_t)at[ox];
        }
    }
    free(frame); free(fy); free(fx); free(at);
    return 0;
}

/* dx planes [p0, p1): each window's gradient added at its maximum, windows in row-major
 * order (PyTorch's order where windows overlap), on a zeroed frame cut to the image. */
int max_pool2d_bwd_f32(const float *gy, const uint8_t *idx, float *dx, i64 p0, i64 p1, const i64 *g)
{
    pool_t s = read_pool(g);
    if (is_k2s2(&s)) { max_pool_k2s2_bwd(gy, idx, dx, p0, p1, &s); return 0; }
    float *frame = scratch((size_t)(s.hp * s.wp));
    if (!frame) return -1;
    for (i64 p = p0; p < p1; p++) {
        memset(frame, 0, (size_t)(s.hp * s.wp) * 4);
        const float *gp = gy + p * s.oh * s.ow;
        const uint8_t *ip = idx + p * s.oh * s.ow;
        for (i64 oy = 0; oy < s.oh; oy++)
            for (i64 ox = 0; ox < s.ow; ox++) {
                i64 k = ip[oy * s.ow + ox], ky = k / s.kw, kx = k - ky * s.kw;
                frame[(oy * s.sh + ky * s.dh) * s.wp + ox * s.sw + kx * s.dw] += gp[oy * s.ow + ox];
            }
        float *out = dx + p * s.h * s.w;
        for (i64 r = 0; r < s.h; r++) {
            i64 fr = r + s.pt;
            for (i64 q = 0; q < s.w; q++) {
                i64 fq = q + s.pl;
                out[r * s.w + q] = (fr < s.hp && fq < s.wp) ? frame[fr * s.wp + fq] : 0.0f;
            }
        }
    }
    free(frame);
    return 0;
}

#else  /* neither AVX-512 nor AVX2 with FMA: the library loads and says so, and the backend keeps
        * its NumPy path */
int native_isa(void) { return 0; }
#endif

