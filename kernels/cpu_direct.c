/* A direct stride-1 convolution for layers with few output channels (a group's at most two
 * row panels of the register tile): the input gradient of a layer with few input channels
 * (run as a forward of dY with the transposed weights), such as LeNet-5's second layer's.
 * After it, conv2d_fwd_cv_f32: 9-64 output channels in the vector, any stride.
 *
 * Compiled after kernels/cpu_conv.c in one translation unit (kernels/native.py, SOURCES):
 * it uses that file's vector layer, geometry, packed weights (pack_weights_*: panels of MR
 * rows, k-major) and the forward's reduction blocks (fwd_kc_blocks, kc_start).
 *
 * Why: the GEMM path packs each KC x NR micro-panel of im2col columns (loads, permutes or
 * gathers, and a store) and then uses it once per row panel of weights. With one or two
 * row panels the packing costs as much as the multiply-adds (LeNet-5's input gradient,
 * 6 x 400 x 12544: 1.5 ms on one thread where 8 more channels add 0.8). With a stride of 1,
 * VL output pixels of a row read VL consecutive floats of the padded input for every tap,
 * so the tile can load its operand straight from the frame: no packing at all. The cost is
 * the lanes past the end of a row (an output row 14 wide fills 14 of 16 lanes).
 *
 * Every output element is summed exactly as by the GEMM path's tile(): fma(w, x, acc) over k
 * in W's column order inside the same blocks of k, each block's sum added to the output in
 * turn, the bias after the last; so the two paths give the same bits, whichever runs.
 */
#if defined(V_ISA)

/* The tile: mr rows (output channels) by up to DNV vectors of output pixels, all its
 * accumulators in registers (24 of AVX-512's 32, 12 of AVX2's 16). A row panel with fewer
 * than MR live rows runs a narrower, wider tile, so no multiply-add is spent on its empty
 * rows (LeNet-5's input gradient has 6). */
#define DNV 4
#if V_ISA == 512
#define DACC 24
#else
#define DACC 12
#endif
#define DNV_FOR(mr) ((DACC / (mr)) < DNV ? (DACC / (mr)) : DNV)

/* Rows of output pixels a work item covers: enough vectors for the widest tile. */
static i64 direct_rows(const geom_t *s)
{
    i64 nvec = ceil_div(s->ow, VL);
    return nvec >= DNV ? 1 : DNV / nvec;
}

/* Whether conv2d_fwd_direct_f32 serves this convolution: stride 1, at most two row panels of
 * output channels a group. */
int direct_serves(const i64 *g)
{
    geom_t s = read_geom(g);
    return s.sh == 1 && s.sw == 1 && s.og <= 2 * MR && s.ow >= 1 && s.oh >= 1;
}

/* Whether it should also beat the GEMM path: the idle lanes at the row ends cost less than
 * the packing, which takes about as long as one row panel's multiply-adds (measured: LeNet-5's
 * second layer, two panels on rows of 10 pixels, 1.16x the GEMM path's time; its input
 * gradient, one panel on rows of 14, 0.6x). */
int direct_wins(const i64 *g)
{
    if (!direct_serves(g)) return 0;
    geom_t s = read_geom(g);
    i64 panels = ceil_div(s.og, MR), lanes = ceil_div(s.ow, VL) * VL;
    return panels * lanes < (panels + 1) * s.ow;
}

/* Work items: (image, group, block of direct_rows output rows), in that order. */
i64 direct_items(const i64 *g)
{
    geom_t s = read_geom(g);
    return s.n * s.groups * ceil_div(s.oh, direct_rows(&s));
}

/* out[r][v] (m <= mr rows of ldc apart, lanes[v] pixels at c[v]) = (first ? 0 : out) + sum
 * over the kc taps of a[k*MR + r] * frame at b[v] + taps[k] (+ bias[r]): tile() with its B
 * operand read in place. */
static inline __attribute__((always_inline)) void
direct_tile(const int mr, const int nv, i64 kc, const float *restrict a, const float *const *b,
            const int32_t *taps, float *const *c, const i64 *lanes, i64 ldc, i64 m, int first, const float *bias)
{
    vf acc[MR][DNV];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = v_zero();
    for (i64 k = 0; k < kc; k++) {
        vf bv[DNV];
        for (int v = 0; v < nv; v++) bv[v] = v_loadu(b[v] + taps[k]);
        for (int r = 0; r < mr; r++) {
            vf ar = v_set1(a[r]);
            for (int v = 0; v < nv; v++) acc[r][v] = v_fma(ar, bv[v], acc[r][v]);
        }
        a += MR;
    }
    for (i64 r = 0; r < m; r++)
        for (int v = 0; v < nv; v++) {
            float *out = c[v] + r * ldc;
            vf o = acc[r][v];
            if (!first) o = v_add(v_loadn(out, lanes[v]), o);
            if (bias) o = v_add(o, v_set1(bias[r]));
            v_storen(out, o, lanes[v]);
        }
}

#define DIRECT_NV_CASES(mr)                                                                                  \
    switch (nv) {                                                                                            \
    case 1: direct_tile(mr, 1, kc, a, b, taps, c, lanes, ldc, m, first, bias); return;                       \
    case 2: direct_tile(mr, 2 <= DNV_FOR(mr) ? 2 : 1, kc, a, b, taps, c, lanes, ldc, m, first, bias); return; \
    case 3: direct_tile(mr, 3 <= DNV_FOR(mr) ? 3 : 1, kc, a, b, taps, c, lanes, ldc, m, first, bias); return; \
    default: direct_tile(mr, DNV_FOR(mr), kc, a, b, taps, c, lanes, ldc, m, first, bias); return;            \
    }

/* The tile for m live rows (mr: the narrowest of MR, 6, 4, 2 that holds them) and nv <=
 * direct_nv(m) vectors. */
static void direct_tile_any(int nv, i64 kc, const float *a, const float *const *b, const int32_t *taps,
                            float *const *c, const i64 *lanes, i64 ldc, i64 m, int first, const float *bias)
{
    if (m > 6) { DIRECT_NV_CASES(MR) }
    if (m > 4) { DIRECT_NV_CASES(6) }
    if (m > 2) { DIRECT_NV_CASES(4) }
    DIRECT_NV_CASES(2)
}

/* Vectors a tile for m live rows takes at once. */
static int direct_nv(i64 m)
{
    return m > 6 ? DNV_FOR(MR) : m > 4 ? DNV_FOR(6) : m > 2 ? DNV_FOR(4) : DNV_FOR(2);
}

/* y (N, O, OH, OW) for the work items [w0, w1) of direct_items, from weights packed as for
 * conv2d_fwd_split_f32; bias (O,) or NULL. Stride 1 only (direct_wins says when). */
int conv2d_fwd_direct_f32(const float *x, const float *wpacked, const float *bias, float *y, i64 w0, i64 w1,
                          const i64 *g)
{
    geom_t s = read_geom(g);
    i64 rows = direct_rows(&s), nvec = ceil_div(s.ow, VL);
    i64 rv_max = rows * nvec, blocks = fwd_kc_blocks(s.kg), a_stride = s.kg * MR, rp = ceil_div(s.og, MR);
    i64 row_blocks = ceil_div(s.oh, rows), framed = -1;
    float *frame = scratch((size_t)(s.cg * s.hp * s.wp + 2 * VL));
    int32_t *taps = tap_offsets(&s, TAPS_W_ORDER);
    i64 *rv = scratch((size_t)(3 * rv_max * 2));  /* per row-vector: frame offset, output offset, lanes */
    if (!frame || !taps || !rv) { free(frame); free(taps); free(rv); return -1; }
    for (i64 w = w0; w < w1; w++) {
        i64 plane = w / row_blocks, oy0 = (w % row_blocks) * rows;
        i64 nn = plane / s.groups, gi = plane % s.groups, live = min64(rows, s.oh - oy0), nrv = 0;
        if (plane != framed) {  /* the thread's items run on through an image: frame it once */
            pad_frame(x + (nn * s.c + gi * s.cg) * s.h * s.w, &s, frame);
            framed = plane;
        }
        for (i64 j = 0; j < live; j++)
            for (i64 x0 = 0; x0 < s.ow; x0 += VL, nrv++) {
                rv[3 * nrv] = (oy0 + j) * s.wp + x0;
                rv[3 * nrv + 1] = (oy0 + j) * s.ow + x0;
                rv[3 * nrv + 2] = min64(VL, s.ow - x0);
            }
        for (i64 ip = 0; ip < rp; ip++) {
            const float *ap = wpacked + (gi * rp + ip) * a_stride;
            i64 m = min64(MR, s.og - ip * MR);
            float *yc = y + (nn * s.o + gi * s.og + ip * MR) * s.p;
            const float *bias_p = bias ? bias + gi * s.og + ip * MR : 0;
            int tile_nv = direct_nv(m);
            for (i64 b = 0; b < blocks; b++) {
                i64 k0 = kc_start(s.kg, blocks, b), kc = kc_start(s.kg, blocks, b + 1) - k0;
                for (i64 i0 = 0; i0 < nrv; i0 += tile_nv) {
                    int nv = (int)min64(tile_nv, nrv - i0);
                    const float *bptr[DNV];
                    float *cptr[DNV];
                    i64 lanes[DNV];
                    for (int v = 0; v < nv; v++) {
                        bptr[v] = frame + rv[3 * (i0 + v)];
                        cptr[v] = yc + rv[3 * (i0 + v) + 1];
                        lanes[v] = rv[3 * (i0 + v) + 2];
                    }
                    direct_tile_any(nv, kc, ap + k0 * MR, bptr, taps + k0, cptr, lanes, s.p, m, b == 0,
                                    b == blocks - 1 ? bias_p : 0);
                }
            }
        }
    }
    free(frame); free(taps); free(rv);
    return 0;
}

/* Output channels in the vector: for a group of VL/2 < O/groups <= 4*VL output channels (LeNet-5's
 * second layer and the NumPy course's 5x5/2, 16 each; ResNet-20's 3x3/2 into 64) and any stride
 * or dilation. One to four vectors hold one output pixel's channels; up to CV_PIX pixels of an
 * output row (fewer as the vectors get more: the accumulators fill the registers) are summed at
 * once, each multiply-add a vector of weights (one tap, VL channels) times one input value
 * broadcast from the padded frame. Nothing is packed but the weights (vectors a tap, once a
 * group), and no lane idles at the row ends, which both the GEMM path (packing, permutes and
 * gathers on strided rows) and the stride-1 direct tile above (rows of 7 or 10 pixels in 16
 * lanes) pay for.
 *
 * Every output element is the GEMM path's: fma(w, x, acc) over k in W's column order from
 * zero within each of the forward's reduction blocks, each block's sum added in turn, the
 * bias after the last; so the same bits. */
#define CV_PIX 12
#define CV_VECS 4

/* Vectors of output channels a pixel, and the pixels a tile sums at once for that many. */
static int cv_vecs(const geom_t *s) { return (int)ceil_div(s->og, VL); }
static int cv_pixels(int nvc) { return nvc <= 2 ? CV_PIX : nvc == 3 ? 8 : 6; }

int cv_serves(const i64 *g)
{
#if V_ISA == 512
    geom_t s = read_geom(g);
    return 2 * s.og > VL && s.og <= CV_VECS * VL && s.ow >= 1 && s.oh >= 1;
#else
    (void)g;
    return 0;
#endif
}

/* Whether it should also beat the other paths: a reduction of at least 64 taps (with fewer,
 * storing each pixel's channels one by one costs more than the multiply-adds: ResNet-20's
 * 3->16 stem, 1.4x the direct tile's time), and then:
 * - two or more vectors of channels at stride 1 (any dilation): always. The GEMM path packs a
 *   micro-panel for every three to eight row panels of weights, this kernel nothing; measured
 *   0.87-1.00x its time from 288 to 3200 taps, one image or a batch (the input gradients of
 *   Inception's 5x5 and AlexNet's grouped 5x5, 5x5 and 7x7 layers, dilated 3x3s;
 *   bench/results/cv-blocks-20261208.txt). A 3x3 into 32 channels at 16x16, batch 64: 1.02.
 * - two or more vectors, strided: with a batch. On one image, whose frame both threads make,
 *   it took 1.03-1.11x the GEMM path's time (a 7x7/2 stem at 224x224, a 3x3/2 into 64 at
 *   32x32).
 * - one vector: a stride (the GEMM path permutes or gathers while packing), or rows that leave
 *   a fifth or more of the direct tile's lanes idle (LeNet-5's rows of 10; a 32-pixel row fills
 *   two vectors, and the direct tile was 10% faster there). */
int cv_wins(const i64 *g)
{
    if (!cv_serves(g)) return 0;
    geom_t s = read_geom(g);
    i64 lanes = ceil_div(s.ow, VL) * VL;
    int stride_1 = s.sh == 1 && s.sw == 1;
    if (s.kg < 64) return 0;
    if (s.og > VL) return stride_1 || s.n >= 2;
    return !stride_1 || 5 * s.ow < 4 * lanes;
}

/* Work items: (group, image, output row), in that order: a thread lays out one group's
 * weights, not one for each image. */
i64 cv_items(const i64 *g)
{
    geom_t s = read_geom(g);
    return s.n * s.groups * s.oh;
}

/* tile[p][v*VL + lane] = (first ? 0 : tile) + the sum over the kc taps of
 * wv[k][v*VL + lane] * src[p * sw + taps[k]], p < np, v < nvc. */
static inline __attribute__((always_inline)) void
cv_tile(const int nvc, const int np, const i64 sw, i64 kc, const float *restrict wv, const float *src,
        const int32_t *taps, float *tile, int first)
{
    vf acc[CV_VECS][CV_PIX];
    for (int v = 0; v < nvc; v++)
        for (int p = 0; p < np; p++) acc[v][p] = v_zero();
    for (i64 k = 0; k < kc; k++) {
        vf w[CV_VECS];
        for (int v = 0; v < nvc; v++) w[v] = v_load(wv + (k * nvc + v) * VL);
        const float *xk = src + taps[k];
        for (int p = 0; p < np; p++) {
            vf xv = v_set1(xk[p * sw]);
            for (int v = 0; v < nvc; v++) acc[v][p] = v_fma(w[v], xv, acc[v][p]);
        }
    }
    for (int p = 0; p < np; p++)
        for (int v = 0; v < nvc; v++) {
            float *t = tile + (p * nvc + v) * VL;
            v_store(t, first ? acc[v][p] : v_add(v_load(t), acc[v][p]));
        }
}

#define CV_CASE(nvc, np, sw) case np: cv_tile(nvc, np, sw, kc, wv, src, taps, tile, first); return;
#define CV_NP_6(nvc, sw) CV_CASE(nvc, 1, sw) CV_CASE(nvc, 2, sw) CV_CASE(nvc, 3, sw) CV_CASE(nvc, 4, sw) \
    CV_CASE(nvc, 5, sw) CV_CASE(nvc, 6, sw)
#define CV_NP_8(nvc, sw) CV_NP_6(nvc, sw) CV_CASE(nvc, 7, sw) CV_CASE(nvc, 8, sw)
#define CV_NP_12(nvc, sw) CV_NP_8(nvc, sw) CV_CASE(nvc, 9, sw) CV_CASE(nvc, 10, sw) CV_CASE(nvc, 11, sw) \
    CV_CASE(nvc, 12, sw)
#define CV_CASES(sw)                                                          \
    switch (nvc) {                                                            \
    case 1: switch (np) { CV_NP_12(1, sw) } return;                           \
    case 2: switch (np) { CV_NP_12(2, sw) } return;                           \
    case 3: switch (np) { CV_NP_8(3, sw) } return;                            \
    default: switch (np) { CV_NP_6(4, sw) } return;                           \
    }

/* cv_tile for nvc vectors of channels and np <= cv_pixels(nvc) pixels sw apart (strides 1 and
 * 2 with the stride a constant). */
static void cv_tile_any(int nvc, int np, i64 sw, i64 kc, const float *wv, const float *src, const int32_t *taps,
                        float *tile, int first)
{
    if (sw == 1) { CV_CASES(1) }
    if (sw == 2) { CV_CASES(2) }
    CV_CASES(sw)
}

/* y (N, O, OH, OW) for the work items [w0, w1) of cv_items, from weights packed as for
 * conv2d_fwd_split_f32; bias (O,) or NULL. Only where cv_serves. A row's pixels meet each
 * reduction block in turn (the forward's blocks, fwd_kc_blocks: the GEMM path's sums), the
 * block's weights (at most KC_FWD taps, in L2) read once per group of pixels. */
int conv2d_fwd_cv_f32(const float *x, const float *wpacked, const float *bias, float *y, i64 w0, i64 w1,
                      const i64 *g)
{
    geom_t s = read_geom(g);
    int nvc = cv_vecs(&s), pix = cv_pixels(nvc);
    i64 rp = ceil_div(s.og, MR), a_stride = s.kg * MR, width = nvc * VL, framed = -1, weights_of = -1;
    i64 blocks = fwd_kc_blocks(s.kg), planes = s.n * s.oh;
    float *frame = scratch((size_t)(s.cg * s.hp * s.wp + 2 * VL));
    float *wv = scratch((size_t)(s.kg * width)), *row = scratch((size_t)(s.ow * width));
    int32_t *taps = tap_offsets(&s, TAPS_W_ORDER);
    if (!frame || !wv || !row || !taps) { free(frame); free(wv); free(row); free(taps); return -1; }
    for (i64 w = w0; w < w1; w++) {
        i64 gi = w / planes, nn = w % planes / s.oh, oy = w % s.oh, plane = nn * s.groups + gi;
        if (plane != framed) {  /* the thread's items run on through an image: frame it once */
            pad_frame(x + (nn * s.c + gi * s.cg) * s.h * s.w, &s, frame);
            framed = plane;
        }
        if (gi != weights_of) {  /* the group's weights, nvc vectors a tap: wv[k][r] = W[r][k] */
            for (i64 k = 0; k < s.kg; k++) {  /* each row panel's MR weights of tap k are one run */
                float *dst = wv + k * width;
                for (i64 ip = 0; ip < rp; ip++) {
                    const float *src = wpacked + (gi * rp + ip) * a_stride + k * MR;
                    i64 rows = min64(MR, s.og - ip * MR);
                    if (rows == MR)
                        for (int r = 0; r < MR; r++) dst[ip * MR + r] = src[r];  /* a constant count: one move */
                    else
                        for (i64 r = 0; r < rows; r++) dst[ip * MR + r] = src[r];
                }
                for (i64 r = s.og; r < width; r++) dst[r] = 0.0f;
            }
            weights_of = gi;
        }
        const float *src = frame + oy * s.sh * s.wp;
        for (i64 b = 0; b < blocks; b++) {
            i64 k0 = kc_start(s.kg, blocks, b), kc = kc_start(s.kg, blocks, b + 1) - k0;
            for (i64 ox0 = 0; ox0 < s.ow; ox0 += pix)
                cv_tile_any(nvc, (int)min64(pix, s.ow - ox0), s.sw, kc, wv + k0 * width, src + ox0 * s.sw,
                            taps + k0, row + ox0 * width, b == 0);
        }
        float *yrow = y + (nn * s.o + gi * s.og) * s.p + oy * s.ow;
        const float *bg = bias ? bias + gi * s.og : 0;
        for (i64 r = 0; r < s.og; r++) {
            float *out = yrow + r * s.p;
            if (bg)
                for (i64 p = 0; p < s.ow; p++) out[p] = row[p * width + r] + bg[r];
            else
                for (i64 p = 0; p < s.ow; p++) out[p] = row[p * width + r];
        }
    }
    free(frame); free(wv); free(row); free(taps);
    return 0;
}

#endif  /* V_ISA */
