/* Winograd's F(2x2, 3x3) for 3x3 stride-1 convolutions (forward, and the stride-1 input
 * gradient, which the Python side runs as a forward of dY with the flipped weights).
 *
 * Compiled after kernels/cpu_conv.c in one translation unit (kernels/native.py, SOURCES): it
 * uses that file's vector layer, geometry and register tile (panel_times_a), whose packed
 * operands it lays out directly.
 *
 * Why: a 2x2 block of outputs of a 3x3 correlation over one channel is
 *     Y = A^T [ (G g G^T) * (B^T d B) ] A
 * (d: the 4x4 input patch, g: the 3x3 kernel, *: elementwise), so across C input and K output
 * channels the 36 multiply-adds a channel pair spends on four outputs become 16, in 16 GEMMs
 * M[xi] (K x tiles) = U[xi] (K x C) . V[xi] (C x tiles), one per point xi of the 4x4 tile: 2.25
 * times fewer multiply-adds, paid for with the transforms of d (per input channel and tile)
 * and of M (per output channel and tile), which are additions only. It wins where both C and K
 * are wide enough for the GEMMs to dominate (wino_wins).
 *
 * Numerics: the transforms add and subtract before and after the products, so the rounding
 * differs from the GEMM path's (not the same bits), with errors of the same order
 * (tests/test_native_winograd.py: against PyTorch in float64, and at most 3x the GEMM path's). Every
 * output is summed in one fixed order (input channels in blocks of WINO_KC, in turn) whatever
 * the split of the work, so the bits do not depend on the thread count.
 *
 * Layout. Tiles (image, tile row, tile column), numbered across the batch, are cut into the
 * fewest even blocks of at most NR (a tile block: the GEMM's columns; 49 tiles are 25 and 24,
 * not 48 and 1, since every block reads all of U). A work item is (group, tile block, block of
 * output channels): it transforms its tiles' patches WINO_KC channels at a time into V, packed as the
 * register tile's B micro-panels (one per point, kc x NR), multiplies them by U (the
 * transformed weights, packed as the tile's A panels, per group and point) into M, and
 * transforms M into the output pixels. Patches reaching past the image read zeros (the
 * padding), tiles past the output's edge (odd sizes) are computed and not stored.
 */
#if defined(V_ISA)

#define WN 16           /* points of a 4x4 tile */
#define WINO_PREFETCH 8 /* columns ahead whose kernels wino_pack_panel prefetches */
#define WINO_KC 128     /* input channels a V chunk: 16 x 128 x 48 floats = 384 KiB, in L2 */
/* Floats from one point's V (or M) to the next: a line more than the data, so that the 16
 * points' rows fall in different sets of L1 (24 KiB apart, all 16 would share one 8-way set
 * and evict each other: 1.4x the time of a 128x32x14x14 layer). */
#define V_POINT (WINO_KC * NR + VL)

/* 3x3, stride 1, no dilation; AVX-512 only (the transforms pick a run's tiles out of image
 * rows with two-source permutes and masked loads and stores). */
int wino_serves(const i64 *g)
{
#if V_ISA == 512
    geom_t s = read_geom(g);
    return s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 && s.n * s.oh * s.ow > 0;
#else
    (void)g;
    return 0;
#endif
}

/* 2x2 output tiles of the whole batch. */
static i64 wino_tiles(const geom_t *s) { return s->n * ceil_div(s->oh, 2) * ceil_div(s->ow, 2); }

static i64 wino_tile_blocks(const geom_t *s) { return ceil_div(wino_tiles(s), NR); }

/* Whether it should also beat the GEMM path (bench/results/winograd-vs-gemm-20261207.txt: this
 * 2-core Zen 4, forward and input gradient): channels enough for the 16 GEMMs to outweigh the
 * transforms (16 -> 16 tied; 16 -> 32 and 32 -> 32 won, 0.7-0.85x the time), tiles enough to
 * pay for transforming the weights (one 14x14 image's 49 tiles at 512 channels tied, one 7x7
 * image's 16 lost, 1.5x), and tiles that fit the image: 7x7 (16 tiles of 2x2 for 49 pixels,
 * 1.31x the work) read 0.87-1.17x at 64 channels over four runs, and is taken only from 256
 * (ResNet layer4 at batch 8: 0.77-0.85x). */
int wino_wins(const i64 *g)
{
    if (!wino_serves(g)) return 0;
    geom_t s = read_geom(g);
    i64 tiles = wino_tiles(&s), pixels = s.n * s.p;
    int fits = 16 * tiles <= 5 * pixels;  /* at most 1.25 times the outputs */
    return s.cg >= 16 && s.og >= 16 && s.cg * s.og >= 512 && tiles >= 64 &&
           (fits || (s.cg >= 256 && s.og >= 256));
}

/* Work items of conv2d_fwd_wino_f32: (group, tile block, one of kblocks blocks of output
 * channels), in that order. */
i64 wino_items(const i64 *g, i64 kblocks)
{
    geom_t s = read_geom(g);
    return s.groups * wino_tile_blocks(&s) * kblocks;
}

/* Tile blocks of the layer (for the Python side's split). */
i64 wino_blocks(const i64 *g)
{
    geom_t s = read_geom(g);
    return wino_tile_blocks(&s);
}

/* Floats of U: per group and point, the row panels (MR output channels) over the group's
 * input channels, rows past og zero. */
i64 wino_packed_size(const i64 *g)
{
    geom_t s = read_geom(g);
    return s.groups * WN * ceil_div(s.og, MR) * MR * s.cg;
}

#if !(V_ISA == 512 && MR == 8)
/* u = G k G^T for one 3x3 kernel k (row-major), G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]. */
static void wino_kernel(const float *k, float *u)
{
    float t[4][3];
    for (int j = 0; j < 3; j++) {
        float a = k[j], b = k[3 + j], c = k[6 + j];
        t[0][j] = a; t[1][j] = 0.5f * ((a + c) + b); t[2][j] = 0.5f * ((a + c) - b); t[3][j] = c;
    }
    for (int i = 0; i < 4; i++) {
        float a = t[i][0], b = t[i][1], c = t[i][2];
        u[i * 4 + 0] = a; u[i * 4 + 1] = 0.5f * ((a + c) + b); u[i * 4 + 2] = 0.5f * ((a + c) - b); u[i * 4 + 3] = c;
    }
}
#endif

#if V_ISA == 512 && MR == 8
/* Fetch the kernels of one column (rows r at col + r * rs, taps up to last_tap) into L1 ahead
 * of the gathers, which otherwise wait on each line: in an input gradient's U a column's
 * kernels lie C*9 floats from the next column's, past what the hardware prefetchers follow
 * (ResNet layer4's 512x512 3x3 input gradient at batch 8: 10.0 -> 7.5 ms,
 * bench/results/wino-prefetch-20261207.txt). */
static inline void wino_prefetch_column(const float *col, i64 rows, i64 rs, i64 last_tap)
{
    for (i64 r = 0; r < rows; r++) {
        _mm_prefetch((const char *)(col + r * rs), _MM_HINT_T0);
        _mm_prefetch((const char *)(col + r * rs + last_tap), _MM_HINT_T0);
    }
}
#endif

/* Row panel `panel` of one group's U from kernels read as src[r * rs + q * cs + taps[t]] for the
 * panel's row r (output channel), column q (input channel) and tap t = ky * 3 + kx. On
 * AVX-512 a vector holds the MR rows of two columns, which lie side by side in U: 9 gathers
 * and 16 stores for 16 kernels (one by one, the scattered stores cost more than the GEMM of a
 * batch-1 7x7 layer saves). */
static void wino_pack_panel(const float *src, i64 rows, i64 cols, i64 rs, i64 cs, const i64 *taps, i64 rp,
                            i64 panel, float *u_group)
{
    i64 plane = rp * MR * cols;  /* one point's panels */
    float *out = u_group + panel * MR * cols;
#if V_ISA == 512 && MR == 8
    const __m512 half = _mm512_set1_ps(0.5f);
    int32_t lane_off[VL];  /* lane l: row l % MR of column l / MR, from column q0 */
    __mmask16 live_rows = 0;
    for (int l = 0; l < VL; l++) {
        int live = l % MR < rows;
        lane_off[l] = live ? (int32_t)((l % MR) * rs + (l / MR) * cs) : 0;
        live_rows |= (__mmask16)(live << l);
    }
    __m512i off = _mm512_loadu_si512(lane_off);
    const __m512i two_columns = _mm512_set1_epi32((int32_t)(2 * cs));
    i64 last_tap = 0;
    for (int t = 0; t < 9; t++) last_tap = taps[t] > last_tap ? taps[t] : last_tap;
    for (i64 q0 = 0; q0 < cols; q0 += 2, off = _mm512_add_epi32(off, two_columns)) {
        __mmask16 stored = q0 + 1 < cols ? (__mmask16)0xFFFF : (__mmask16)0xFF, live = live_rows & stored;
        for (i64 q = q0 + WINO_PREFETCH; q < min64(q0 + WINO_PREFETCH + 2, cols); q++)
            wino_prefetch_column(src + q * cs, rows, rs, last_tap);
        __m512 k[9], t[12];
        for (int i = 0; i < 9; i++)
            k[i] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live,
                                            _mm512_add_epi32(off, _mm512_set1_epi32((int32_t)taps[i])), src, 4);
        for (int j = 0; j < 3; j++) {  /* G k: rows */
            __m512 a = k[j], b = k[3 + j], c = k[6 + j], ac = _mm512_add_ps(a, c);
            t[0 * 3 + j] = a;
            t[1 * 3 + j] = _mm512_mul_ps(half, _mm512_add_ps(ac, b));
            t[2 * 3 + j] = _mm512_mul_ps(half, _mm512_sub_ps(ac, b));
            t[3 * 3 + j] = c;
        }
        float *o = out + q0 * MR;
        for (int i = 0; i < 4; i++) {  /* (G k) G^T: columns */
            __m512 a = t[i * 3], b = t[i * 3 + 1], c = t[i * 3 + 2], ac = _mm512_add_ps(a, c);
            _mm512_mask_storeu_ps(o + (i * 4 + 0) * plane, stored, a);
            _mm512_mask_storeu_ps(o + (i * 4 + 1) * plane, stored, _mm512_mul_ps(half, _mm512_add_ps(ac, b)));
            _mm512_mask_storeu_ps(o + (i * 4 + 2) * plane, stored, _mm512_mul_ps(half, _mm512_sub_ps(ac, b)));
            _mm512_mask_storeu_ps(o + (i * 4 + 3) * plane, stored, c);
        }
    }
#else
    for (i64 q = 0; q < cols; q++)
        for (i64 r = 0; r < MR; r++) {
            float k[9], u[WN];
            if (r < rows) {
                const float *p = src + r * rs + q * cs;
                for (int t = 0; t < 9; t++) k[t] = p[taps[t]];
                wino_kernel(k, u);
            } else {
                for (int t = 0; t < WN; t++) u[t] = 0.0f;
            }
            for (int t = 0; t < WN; t++) out[t * plane + q * MR + r] = u[t];
        }
#endif
}

/* U from w (O, C/groups, 3, 3) of the forward geometry g: items [i0, i1) of (group, row panel). */
void wino_pack_weights_f32(const float *w, const i64 *g, float *out, i64 i0, i64 i1)
{
    geom_t s = read_geom(g);
    i64 rp = ceil_div(s.og, MR), taps[9];
    for (int t = 0; t < 9; t++) taps[t] = t;
    for (i64 i = i0; i < i1; i++) {
        i64 gi = i / rp, r0 = (i % rp) * MR;
        wino_pack_panel(w + (gi * s.og + r0) * s.cg * 9, min64(MR, s.og - r0), s.cg, s.cg * 9, 9, taps, rp, i % rp,
                        out + gi * WN * rp * MR * s.cg);
    }
}

/* U of an input gradient run as a forward of dY, straight from w (O, C/groups, kh, kw) of the
 * convolution geometry g: rows are its input channels, columns its output channels, taps
 * ys[ty] x xs[tx] (3 each, reversed for the flip). Items [i0, i1) of (group, panel of MR
 * input channels); the layout is wino_pack_weights_f32's for C outputs and O inputs. */
void wino_pack_weights_t_f32(const float *w, const i64 *g, const i64 *ys, const i64 *xs, float *out, i64 i0, i64 i1)
{
    geom_t s = read_geom(g);
    i64 rp = ceil_div(s.cg, MR), kk = s.kh * s.kw, taps[9];
    for (int ty = 0; ty < 3; ty++)
        for (int tx = 0; tx < 3; tx++) taps[ty * 3 + tx] = ys[ty] * s.kw + xs[tx];
    for (i64 i = i0; i < i1; i++) {
        i64 gi = i / rp, c0 = (i % rp) * MR;
        wino_pack_panel(w + (gi * s.og * s.cg + c0) * kk, min64(MR, s.cg - c0), s.og, kk, s.cg * kk, taps, rp,
                        i % rp, out + gi * WN * rp * MR * s.og);
    }
}

#if V_ISA == 512
/* A run of a block's tiles that lie side by side in one tile row and in one vector of lanes:
 * lanes [lane, lane + cnt) of the block are tiles tx .. tx + cnt - 1 of row ty of image nn. */
typedef struct {
    int lane, cnt;
    i64 in_off;            /* x offset (from its group's channel c of image 0) of the patches' top-left */
    int nvec;              /* vectors a patch row of the run reads (2 * cnt + 2 floats) */
    __mmask16 cols[3];     /* which floats of those vectors lie in the image */
    __mmask16 rows[4];     /* all lanes where patch row i lies in the image, else none */
    i64 out_off;           /* y offset (from channel r of image 0) of the first tile's top-left */
    __mmask16 out_lo, out_hi;  /* floats of an output row's two vectors inside the image */
    int below;             /* the tiles' second output row lies in the image */
} wseg_t;

/* The runs of tiles [t0, t0 + nt) (at most nt + 2 * NV: a run breaks at each tile row and
 * each vector of lanes). */
static int wino_segments(const geom_t *s, i64 t0, i64 nt, wseg_t *seg)
{
    i64 th = ceil_div(s->oh, 2), tw = ceil_div(s->ow, 2);
    int n = 0;
    for (i64 l = 0; l < nt;) {
        i64 t = t0 + l, nn = t / (th * tw), ty = t / tw % th, tx = t % tw;
        i64 cnt = min64(min64(tw - tx, nt - l), VL - l % VL);
        wseg_t *g = seg + n++;
        g->lane = (int)l; g->cnt = (int)cnt;
        i64 col0 = 2 * tx - s->pl, row0 = 2 * ty - s->pt;
        g->in_off = nn * s->c * s->h * s->w + row0 * s->w + col0;
        for (int k = 0; k < 3; k++) {
            g->cols[k] = 0;
            for (int j = 0; j < VL; j++) {
                i64 col = col0 + k * VL + j;
                if (k * VL + j < 2 * cnt + 2 && col >= 0 && col < s->w) g->cols[k] |= (__mmask16)(1u << j);
            }
        }
        g->nvec = (int)ceil_div(2 * cnt + 2, VL);
        for (int i = 0; i < 4; i++) g->rows[i] = row0 + i >= 0 && row0 + i < s->h ? (__mmask16)0xFFFF : 0;
        g->out_off = nn * s->o * s->p + 2 * ty * s->ow + 2 * tx;
        i64 width = min64(2 * cnt, s->ow - 2 * tx);  /* floats of an output row */
        g->out_lo = lanes_mask(min64(width, VL));
        g->out_hi = width > VL ? lanes_mask(width - VL) : 0;
        g->below = 2 * ty + 1 < s->oh;
        l += cnt;
    }
    return n;
}

/* V (16 points, V_POINT apart; kc rows of nv vectors) = B^T d B for the channels [c0, c0 + kc)
 * of the block, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: per run of tiles, the patch
 * rows are read as vectors along the image row (each tile two floats on from the last), their
 * row combinations taken there, and each combination's four columns j, j + 1 of the tiles
 * (even and odd floats, and the same one tile on) picked out by permutes; no gathers. */
/* Row combination t (the run's floats along the image row, three vectors) -> columns j of
 * the tiles (floats 2l + j of the run), combined: V points (i, 0..3) stored at o. */
static inline __attribute__((always_inline)) void
wino_columns(__m512 t0, __m512 t1, __m512 t2, float *o, __mmask16 store)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i next = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);  /* one lane on */
    const __m512i next_odd = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17);
    __m512 e0 = _mm512_permutex2var_ps(t0, even, t1), o1 = _mm512_permutex2var_ps(t0, odd, t1);
    __m512 e2 = _mm512_permutex2var_ps(e0, next, t2), o3 = _mm512_permutex2var_ps(o1, next_odd, t2);
    _mm512_mask_storeu_ps(o, store, _mm512_sub_ps(e0, e2));
    _mm512_mask_storeu_ps(o + V_POINT, store, _mm512_add_ps(o1, e2));
    _mm512_mask_storeu_ps(o + 2 * V_POINT, store, _mm512_sub_ps(e2, o1));
    _mm512_mask_storeu_ps(o + 3 * V_POINT, store, _mm512_sub_ps(o1, o3));
}

/* One run's patches of one channel (x at the top-left of the first) into V at o; nvec
 * vectors along each patch row. */
static inline __attribute__((always_inline)) void
wino_input_run(const int nvec, const wseg_t *sg, const float *x, i64 w, float *o)
{
    __mmask16 store = lanes_mask(sg->cnt);
    const __m512 z = _mm512_setzero_ps();
    __m512 d0[3], d1[3], d2[3], d3[3];
    for (int k = 0; k < 3; k++) {
        if (k < nvec) {
            d0[k] = _mm512_maskz_loadu_ps(sg->cols[k] & sg->rows[0], x + k * VL);
            d1[k] = _mm512_maskz_loadu_ps(sg->cols[k] & sg->rows[1], x + w + k * VL);
            d2[k] = _mm512_maskz_loadu_ps(sg->cols[k] & sg->rows[2], x + 2 * w + k * VL);
            d3[k] = _mm512_maskz_loadu_ps(sg->cols[k] & sg->rows[3], x + 3 * w + k * VL);
        } else {
            d0[k] = d1[k] = d2[k] = d3[k] = z;
        }
    }
    /* B^T d: the rows' combinations, along the image row */
    wino_columns(_mm512_sub_ps(d0[0], d2[0]), _mm512_sub_ps(d0[1], d2[1]), nvec > 2 ? _mm512_sub_ps(d0[2], d2[2]) : z,
                 o, store);
    wino_columns(_mm512_add_ps(d1[0], d2[0]), _mm512_add_ps(d1[1], d2[1]), nvec > 2 ? _mm512_add_ps(d1[2], d2[2]) : z,
                 o + 4 * V_POINT, store);
    wino_columns(_mm512_sub_ps(d2[0], d1[0]), _mm512_sub_ps(d2[1], d1[1]), nvec > 2 ? _mm512_sub_ps(d2[2], d1[2]) : z,
                 o + 8 * V_POINT, store);
    wino_columns(_mm512_sub_ps(d1[0], d3[0]), _mm512_sub_ps(d1[1], d3[1]), nvec > 2 ? _mm512_sub_ps(d1[2], d3[2]) : z,
                 o + 12 * V_POINT, store);
}

/* V (16 points, V_POINT apart; kc rows of nv vectors) = B^T d B for the channels [c0, c0 + kc)
 * of the block, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: per run of tiles, the patch
 * rows are read as vectors along the image row (each tile two floats on from the last), their
 * row combinations taken there, and the four columns of every tile (floats 2l .. 2l + 3 of the
 * run: even, odd, and each one tile on) picked out by permutes; no gathers. Channel
 * by channel, every run in turn: a channel's V rows (16 x 3 lines) stay in L1 while the runs
 * fill them. */
static void wino_input(const float *xg, const geom_t *s, i64 c0, i64 kc, int nv, const wseg_t *seg, int nseg,
                       float *v)
{
    i64 plane = s->h * s->w;
    for (i64 q = 0; q < kc; q++) {
        const float *xc = xg + (c0 + q) * plane;
        float *o = v + q * nv * VL;
        for (int g = 0; g < nseg; g++) {
            const wseg_t *sg = seg + g;
            switch (sg->nvec) {
            case 1: wino_input_run(1, sg, xc + sg->in_off, s->w, o + sg->lane); break;
            case 2: wino_input_run(2, sg, xc + sg->in_off, s->w, o + sg->lane); break;
            default: wino_input_run(3, sg, xc + sg->in_off, s->w, o + sg->lane); break;
            }
        }
    }
}

/* The outputs of rows [r0, r1) of the block's tiles: y = A^T m A (+ bias), A^T = [1 1 1 0;
 * 0 1 -1 -1], from M (16 points, rows of NR floats, ld apart per point); each run's outputs of
 * an image row interleaved by permutes and stored as (at most two) vectors. */
static void wino_output(const float *m, i64 ld, const geom_t *s, i64 gi, i64 r0, i64 r1, int nv,
                        const wseg_t *seg, int nseg, const float *bias, float *y)
{
    const __m512i zip = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    for (i64 r = r0; r < r1; r++) {
        const float *mr = m + (r - r0) * NR;
        __m512 b = _mm512_set1_ps(bias ? bias[gi * s->og + r] : 0.0f);
        float *yr = y + (gi * s->og + r) * s->p;
        int g = 0;
        for (int vv = 0; vv < nv; vv++) {
            __m512 a0[4], a1[4];
            for (int j = 0; j < 4; j++) {  /* A^T m: rows */
                __m512 m0 = _mm512_load_ps(mr + (0 * 4 + j) * ld + vv * VL);
                __m512 m1 = _mm512_load_ps(mr + (1 * 4 + j) * ld + vv * VL);
                __m512 m2 = _mm512_load_ps(mr + (2 * 4 + j) * ld + vv * VL);
                __m512 m3 = _mm512_load_ps(mr + (3 * 4 + j) * ld + vv * VL);
                a0[j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                a1[j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
            }
            __m512 y00 = _mm512_add_ps(_mm512_add_ps(a0[0], a0[1]), a0[2]);
            __m512 y01 = _mm512_sub_ps(_mm512_sub_ps(a0[1], a0[2]), a0[3]);
            __m512 y10 = _mm512_add_ps(_mm512_add_ps(a1[0], a1[1]), a1[2]);
            __m512 y11 = _mm512_sub_ps(_mm512_sub_ps(a1[1], a1[2]), a1[3]);
            if (bias) {
                y00 = _mm512_add_ps(y00, b); y01 = _mm512_add_ps(y01, b);
                y10 = _mm512_add_ps(y10, b); y11 = _mm512_add_ps(y11, b);
            }
            for (; g < nseg && seg[g].lane < (vv + 1) * VL; g++) {
                const wseg_t *sg = seg + g;
                /* an output row of the run: columns 0 and 1 of its tiles by turns */
                __m512i lo = _mm512_add_epi32(zip, _mm512_set1_epi32(sg->lane % VL));
                __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(VL / 2));
                float *yp = yr + sg->out_off, *below = yp + s->ow;
                _mm512_mask_storeu_ps(yp, sg->out_lo, _mm512_permutex2var_ps(y00, lo, y01));
                if (sg->out_hi) _mm512_mask_storeu_ps(yp + VL, sg->out_hi, _mm512_permutex2var_ps(y00, hi, y01));
                if (sg->below) {
                    _mm512_mask_storeu_ps(below, sg->out_lo, _mm512_permutex2var_ps(y10, lo, y11));
                    if (sg->out_hi) _mm512_mask_storeu_ps(below + VL, sg->out_hi, _mm512_permutex2var_ps(y10, hi, y11));
                }
            }
        }
    }
}
#endif

/* y (N, O, OH, OW) for the work items [w0, w1) of wino_items(g, kblocks), U from
 * wino_pack_weights_f32 (or _t_f32), bias (O,) or NULL. Only where wino_serves. */
int conv2d_fwd_wino_f32(const float *x, const float *u, const float *bias, float *y, i64 w0, i64 w1, const i64 *g,
                        i64 kblocks)
{
#if V_ISA == 512
    geom_t s = read_geom(g);
    i64 blocks = wino_tile_blocks(&s), tiles = wino_tiles(&s);
    i64 rp = ceil_div(s.og, MR), a_stride = MR * s.cg, plane = rp * a_stride, chunks = ceil_div(s.cg, WINO_KC);
    i64 max_rows = ceil_div(rp, kblocks) * MR;
    i64 m_point = max_rows * NR + VL;
    float *v = scratch((size_t)(WN * V_POINT)), *m = scratch((size_t)(WN * m_point));
    wseg_t seg[NR + 2 * NV];
    if (!v || !m) { free(v); free(m); return -1; }
    memset(v, 0, sizeof(float) * WN * V_POINT);  /* lanes past a short block's tiles: finite, never stored */
    for (i64 w = w0; w < w1; w++) {
        i64 gi = w / (blocks * kblocks), tb = w / kblocks % blocks, kb = w % kblocks;
        i64 t0 = tiles * tb / blocks, nt = tiles * (tb + 1) / blocks - t0;  /* even blocks of at most NR */
        i64 r0 = (rp * kb / kblocks) * MR, r1 = min64(s.og, (rp * (kb + 1) / kblocks) * MR);
        if (r1 <= r0) continue;
        int nv = (int)ceil_div(nt, VL);
        int nseg = wino_segments(&s, t0, nt, seg);
        const float *ug = u + gi * WN * plane + (r0 / MR) * a_stride;
        for (i64 ch = 0; ch < chunks; ch++) {
            i64 c0 = s.cg * ch / chunks, kc = s.cg * (ch + 1) / chunks - c0;
            wino_input(x + gi * s.cg * s.h * s.w, &s, c0, kc, nv, seg, nseg, v);
            for (int p = 0; p < WN; p++)
                panel_times_a(nv, kc, ug + p * plane + c0 * MR, a_stride, v + p * V_POINT, m + p * m_point, NR,
                              r1 - r0, nt, ch == 0, 0);
        }
        wino_output(m, m_point, &s, gi, r0, r1, nv, seg, nseg, bias, y);
    }
    free(v); free(m);
    return 0;
#else
    (void)x; (void)u; (void)bias; (void)y; (void)w0; (void)w1; (void)g; (void)kblocks;
    return -1;
#endif
}

#endif  /* V_ISA */
