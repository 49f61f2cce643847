/* Dense (fully connected) layers and optimizer updates on the CPU, float32.
 *
 * Compiled after kernels/cpu_conv.c in one translation unit (kernels/native.py,
 * SOURCES), so it uses that file's vector layer (vf, v_load, v_fma, VL, ...)
 * and its gemm_f32. Everything here sits inside V_ISA: a build for a CPU
 * with neither AVX-512 nor AVX2 defines native_isa() alone.
 *
 * linear_fwd_f32: y = x W^T + b. Both operands keep their reduction axis (the in-features)
 * contiguous, so the product is a grid of dot products and needs no packing: a DR x DC
 * register tile holds DR*DC vector accumulators over rows of x and rows of W, reduced
 * across lanes at the end of each block of the reduction. The backward products (dx = g W,
 * dW = g^T x) have a right operand with contiguous rows: gemm_nn_f32, unpacked too.
 *
 * adam_f32 / sgd_f32: one pass over a parameter, the same float32 operations in the same
 * order as the engine's NumPy update (engine/optim.py): every constant is rounded to float
 * once, as NumPy does with a Python float next to a float32 array, and nothing is fused
 * (the file is built with -std=c11, where the compiler does not contract a*b + c into an
 * FMA), so the results are NumPy's bit for bit.
 */
#if defined(V_ISA)
#include <math.h>

/* ------------------------------------------------------------------------------------ linear */
#if V_ISA == 512
#define DR 4            /* rows of x in the dot-product tile */
#define DC 4            /* rows of W: 16 accumulators + 5 operand registers of 32 */
static inline float v_hsum(vf v) { return _mm512_reduce_add_ps(v); }
#else
#define DR 3
#define DC 3            /* 9 accumulators + 4 operand registers of 16 */
static inline float v_hsum(vf v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif
#define DK 4096         /* longest reduction block: DR + DC rows of it stay in L1/L2 */

#define D1 8            /* rows of W in the one-row tile (a batch of one, the last rows) */

/* out[r * cs + c] = sum over k < kc of x[r][k] * w[c][k] for r < R, c < C (R, C constants
 * after inlining); lanes summed in a fixed order. */
static inline __attribute__((always_inline)) void
dot_tile(const int R, const int C, const float *const *xr, const float *const *wr, i64 kc, float *out, int cs)
{
    vf acc[DR * D1];
    for (int i = 0; i < R * C; i++) acc[i] = v_zero();
    i64 k = 0;
    for (; k + VL <= kc; k += VL) {
        vf wv[D1];
        /* Each operand in a register, loaded once: GCC would fold a load into every FMA
         * instead (R*C + C or R*C + R loads for R*C FMAs, which bounds the loop on Zen 4). */
        for (int c = 0; c < C; c++) {
            wv[c] = v_loadu(wr[c] + k);
            __asm__("" : "+v"(wv[c]));
        }
        for (int r = 0; r < R; r++) {
            vf xv = v_loadu(xr[r] + k);
            __asm__("" : "+v"(xv));
            for (int c = 0; c < C; c++) acc[r * C + c] = v_fma(xv, wv[c], acc[r * C + c]);
        }
    }
    if (k < kc) {  /* the tail: masked loads read nothing past the rows */
        vf wv[D1];
        for (int c = 0; c < C; c++) wv[c] = v_loadn(wr[c] + k, kc - k);
        for (int r = 0; r < R; r++) {
            vf xv = v_loadn(xr[r] + k, kc - k);
            for (int c = 0; c < C; c++) acc[r * C + c] = v_fma(xv, wv[c], acc[r * C + c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) out[r * cs + c] = v_hsum(acc[r * C + c]);
}

/* Output features of linear_fwd_f32 a work item covers (the unit its callers split between
 * threads). */
#define DN (DC * D1)
i64 linear_tiles(i64 n) { return ceil_div(n, DN); }

/* Rows [i0, i0 + rows) of x against rows [j0, j0 + cols) of w over one reduction block,
 * written (first block) or added to y; the bias after the last block. Columns past the edge
 * point at the last real row of w: computed and thrown away (likewise rows of x). */
static inline __attribute__((always_inline)) void
block_tile(const int R, const int C, const float *x, const float *w, const float *bias, float *y, i64 n, i64 k,
           i64 k0, i64 kc, i64 i0, i64 rows, i64 j0, i64 cols, int first, int last)
{
    const float *xr[DR], *wr[D1];
    float part[DR * D1];
    for (int r = 0; r < R; r++) xr[r] = x + (i0 + min64(r, rows - 1)) * k + k0;
    for (int c = 0; c < C; c++) wr[c] = w + (j0 + min64(c, cols - 1)) * k + k0;
    dot_tile(R, C, xr, wr, kc, part, C);
    for (i64 r = 0; r < rows; r++) {
        float *yr = y + (i0 + r) * n + j0;
        for (i64 c = 0; c < cols; c++) {
            float v = first ? part[r * C + c] : yr[c] + part[r * C + c];
            yr[c] = (last && bias) ? v + bias[j0 + c] : v;
        }
    }
}

/* y (m x n) = x (m x k) . w (n x k)^T (+ bias (n) or NULL), for the output features of the
 * items [t0, t1) (DN features each). Rows of x go DR at a time against DC rows of w, the
 * last m % DR one at a time against D1 rows of w. The reduction runs in blocks of at most
 * DK, each summed apart and added to y in turn; the bias comes last. The order of every
 * sum depends on the shapes alone. */
void linear_fwd_f32(const float *x, const float *w, const float *bias, float *y, i64 m, i64 n, i64 k,
                    i64 t0, i64 t1)
{
    i64 blocks = ceil_div(k, DK), j_end = min64(n, t1 * DN), m_full = m - m % DR;
    for (i64 b = 0; b < blocks; b++) {
        i64 k0 = (k * b) / blocks, kc = (k * (b + 1)) / blocks - k0;
        int first = b == 0, last = b == blocks - 1;
        for (i64 j0 = t0 * DN; j0 < j_end; j0 += DC)
            for (i64 i0 = 0; i0 < m_full; i0 += DR)
                block_tile(DR, DC, x, w, bias, y, n, k, k0, kc, i0, DR, j0, min64(DC, j_end - j0), first, last);
        for (i64 j0 = t0 * DN; j0 < j_end && m_full < m; j0 += D1)
            for (i64 i0 = m_full; i0 < m; i0++)
                block_tile(1, D1, x, w, bias, y, n, k, k0, kc, i0, 1, j0, min64(D1, j_end - j0), first, last);
    }
}

/* The backward products, dx = g W and dW = g^T x, have a right operand whose rows are
 * contiguous, so it needs no packing either: an MR x NR register tile broadcasts MR entries
 * of a column of A and multiplies them into NR-wide stretches of a row of B, read in place. */
#define GK 256          /* reduction block: a 256 x NR panel of B (48 KiB, AVX2 16 KiB) stays in L1 */

/* c[r][j] (+)= sum over k < kc of a[r * ras + k * cas] * b[k * ldb + j], r < rows, j < cols
 * (rows of A past the edge read the last real row; columns past the edge are masked off). */
static inline __attribute__((always_inline)) void
nn_tile_body(const int nv, const int masked, const float *a, i64 ras, i64 cas, const float *b, i64 ldb, i64 kc,
             float *c, i64 ldc, i64 rows, i64 cols, int first)
{
    vf acc[MR][NV];
    const float *ar[MR];
    for (int r = 0; r < MR; r++) {
        ar[r] = a + min64(r, rows - 1) * ras;
        for (int v = 0; v < nv; v++) acc[r][v] = v_zero();
    }
    const i64 last = cols - (nv - 1) * VL;  /* lanes of the last vector */
    for (i64 k = 0; k < kc; k++) {
        const float *bk = b + k * ldb;
        vf bv[NV];
        for (int v = 0; v < nv; v++) {
            bv[v] = (masked && v == nv - 1) ? v_loadn(bk + v * VL, last) : v_loadu(bk + v * VL);
            __asm__("" : "+v"(bv[v]));  /* loaded once, not folded into each of the MR FMAs */
        }
        for (int r = 0; r < MR; r++) {
            vf ak = v_set1(ar[r][k * cas]);
            for (int v = 0; v < nv; v++) acc[r][v] = v_fma(ak, bv[v], acc[r][v]);
        }
    }
    /* Through a buffer, every index a constant: an accumulator read under a run-time bound
     * makes GCC keep the array in memory, stored at every step of the loop above. */
    float tmp[MR][NV * VL] __attribute__((aligned(64)));
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < nv; v++) v_store(tmp[r] + v * VL, acc[r][v]);
    for (i64 r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) {
            i64 lanes = cols - v * VL;
            float *cr = c + r * ldc + v * VL;
            vf out = v_load(tmp[r] + v * VL);
            v_storen(cr, first ? out : v_add(v_loadn(cr, lanes), out), lanes);
        }
}

static inline __attribute__((always_inline)) void
nn_tile(const int nv, const float *a, i64 ras, i64 cas, const float *b, i64 ldb, i64 kc, float *c, i64 ldc,
        i64 rows, i64 cols, int first)
{
    if (cols == nv * VL) nn_tile_body(nv, 0, a, ras, cas, b, ldb, kc, c, ldc, rows, cols, first);
    else nn_tile_body(nv, 1, a, ras, cas, b, ldb, kc, c, ldc, rows, cols, first);
}

/* C (m x n, row stride ldc) = A . B for the column panels [t0, t1) of NR columns (gemm_panels),
 * A(i, k) = a[i * ras + k * cas], B(k, j) = b[k * ldb + j]. Each element sums k in order, in
 * blocks of GK added to C in turn: the order depends on the shapes alone. */
void gemm_nn_f32(const float *a, i64 ras, i64 cas, const float *b, i64 ldb, float *c, i64 ldc,
                 i64 m, i64 n, i64 k, i64 t0, i64 t1)
{
    i64 blocks = ceil_div(k, GK);
    for (i64 t = t0; t < t1; t++) {
        i64 j0 = t * NR, cols = min64(NR, n - j0);
        int nv = (int)ceil_div(cols, VL);
        for (i64 bl = 0; bl < blocks; bl++) {
            i64 k0 = (k * bl) / blocks, kc = (k * (bl + 1)) / blocks - k0;
            const float *bp = b + k0 * ldb + j0;
            for (i64 i0 = 0; i0 < m; i0 += MR) {
                const float *ap = a + i0 * ras + k0 * cas;
                float *cp = c + i0 * ldc + j0;
                i64 rows = min64(MR, m - i0);
                switch (nv) {
                case 1: nn_tile(1, ap, ras, cas, bp, ldb, kc, cp, ldc, rows, cols, bl == 0); break;
#if NV > 2
                case 2: nn_tile(2, ap, ras, cas, bp, ldb, kc, cp, ldc, rows, cols, bl == 0); break;
#endif
                default: nn_tile(NV, ap, ras, cas, bp, ldb, kc, cp, ldc, rows, cols, bl == 0); break;
                }
            }
        }
    }
}

/* --------------------------------------------------------------------------------- optimizers */
/* NaN-propagating max, as np.maximum. */
static inline float max_nan(float a, float b) { return (a >= b || a != a) ? a : b; }

enum { ADAM_MAXIMIZE = 1, ADAM_DECOUPLED = 2, ADAM_AMSGRAD = 4, ADAM_WEIGHT_DECAY = 8 };

/* The loop of adam_f32 for one combination of its switches (constants after inlining, so
 * each combination is its own branch-free, vectorized loop). */
static inline __attribute__((always_inline)) void
adam_loop(float *restrict p, const float *restrict g, const float *restrict m_in, float *restrict m_out,
          const float *restrict v_in, float *restrict v_out, const float *restrict vmax_in,
          float *restrict vmax_out, const float *c, i64 i0, i64 i1,
          const int maximize, const int l2, const int decoupled, const int ams)
{
    const float wd = c[0], b1 = c[1], omb1 = c[2], b2 = c[3], omb2 = c[4], step = c[5], bc2 = c[6], eps = c[7];
    for (i64 i = i0; i < i1; i++) {
        float gi = maximize ? -g[i] : g[i];
        float pi = p[i];
        if (decoupled) pi = pi * wd;
        if (l2) gi = gi + wd * pi;
        float mi = b1 * m_in[i] + omb1 * gi;
        float vi = b2 * v_in[i] + omb2 * (gi * gi);
        m_out[i] = mi;
        v_out[i] = vi;
        if (ams) {
            vi = max_nan(vmax_in[i], vi);
            vmax_out[i] = vi;
        }
        float denom = sqrtf(vi) / bc2 + eps;
        p[i] = pi - step * (mi / denom);
    }
}

/* One Adam / AdamW step over the elements [i0, i1) of a parameter, engine/optim.py's order:
 *   g = -g (maximize); p *= decay (decoupled) or g = g + wd * p (L2)
 *   m' = b1 * m + (1 - b1) * g;  v' = b2 * v + (1 - b2) * (g * g);  vmax' = max(vmax, v')
 *   p -= step_size * (m' / (sqrt(v' or vmax') / bias2_sqrt + eps))
 * m, v, vmax are read from m_in, v_in, vmax_in and written to new arrays m_out, v_out,
 * vmax_out (no output may overlap an input; p is updated in place). c: decay (1 - lr*wd) or
 * wd, b1, 1 - b1, b2, 1 - b2, step_size, sqrt(1 - b2^t), eps, each already a float. */
void adam_f32(float *p, const float *g, const float *m_in, float *m_out, const float *v_in, float *v_out,
              const float *vmax_in, float *vmax_out, const float *c, int flags, i64 i0, i64 i1)
{
    const int wd = flags & ADAM_WEIGHT_DECAY, ams = flags & ADAM_AMSGRAD, max = flags & ADAM_MAXIMIZE;
    const int mode = !wd ? 0 : (flags & ADAM_DECOUPLED) ? 1 : 2;  /* none, decoupled, L2 */
#define ADAM(MAX, L2, DEC, AMS) adam_loop(p, g, m_in, m_out, v_in, v_out, vmax_in, vmax_out, c, i0, i1, MAX, L2, DEC, AMS)
    if (!max && !ams) {  /* the usual cases */
        if (mode == 0) ADAM(0, 0, 0, 0);
        else if (mode == 1) ADAM(0, 0, 1, 0);
        else ADAM(0, 1, 0, 0);
    } else {
        if (mode == 0) ADAM(max, 0, 0, ams);
        else if (mode == 1) ADAM(max, 0, 1, ams);
        else ADAM(max, 1, 0, ams);
    }
#undef ADAM
}

enum { SGD_MAXIMIZE = 1, SGD_WEIGHT_DECAY = 2, SGD_MOMENTUM = 4, SGD_FIRST = 8, SGD_NESTEROV = 16 };

static inline __attribute__((always_inline)) void
sgd_loop(float *restrict p, const float *restrict g, const float *restrict buf_in, float *restrict buf_out,
         const float *c, i64 i0, i64 i1, const int maximize, const int decay, const int momentum, const int first,
         const int nesterov)
{
    const float wd = c[0], mom = c[1], damp = c[2], lr = c[3];
    for (i64 i = i0; i < i1; i++) {
        float gi = maximize ? -g[i] : g[i];
        if (decay) gi = gi + wd * p[i];
        if (momentum) {
            float b = first ? gi : mom * buf_in[i] + damp * gi;
            buf_out[i] = b;
            gi = nesterov ? gi + mom * b : b;
        }
        p[i] = p[i] - lr * gi;
    }
}

/* One SGD step over [i0, i1), engine/optim.py's order:
 *   g = -g (maximize); g = g + wd * p; buf' = g (first step) or momentum * buf + (1 - dampening) * g;
 *   g = g + momentum * buf' (nesterov) or buf'; p -= lr * g
 * c: wd, momentum, 1 - dampening, lr (floats). buf_in may be NULL on the first step; buf_out
 * is a new array. */
void sgd_f32(float *p, const float *g, const float *buf_in, float *buf_out, const float *c, int flags,
             i64 i0, i64 i1)
{
    const int max = flags & SGD_MAXIMIZE, wd = flags & SGD_WEIGHT_DECAY, nest = flags & SGD_NESTEROV;
#define SGD(MOM, FIRST) sgd_loop(p, g, buf_in, buf_out, c, i0, i1, max, wd, MOM, FIRST, nest)
    if (!(flags & SGD_MOMENTUM)) SGD(0, 0);
    else if (flags & SGD_FIRST) SGD(1, 1);
    else SGD(1, 0);
#undef SGD
}

#endif  /* V_ISA */
