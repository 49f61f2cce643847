/* Depthwise convolution (groups == in_channels, any channel multiplier) and other
 * convolutions with few channels a group, on the CPU, float32.
 *
 * Compiled after kernels/cpu_conv.c and kernels/cpu_dense.c in one translation
 * unit (kernels/native.py, SOURCES), so it uses cpu_conv.c's vector layer and
 * helpers (geom_t, read_geom, scratch, ceil_div, min64). Everything here sits
 * inside V_ISA: a build for a CPU with neither AVX-512 nor AVX2 defines
 * native_isa() alone.
 *
 * A GEMM has nothing to share between output channels here (one input channel
 * each), so these are direct loops, vectorised along the output pixels, the
 * taps' weights broadcast from memory; or (the AVX-512 forward of most depthwise
 * layers, dwc_forward further down) along 16 channels.
 *
 * The phase frame. Each input channel is copied, zero padded, into sh*sw phase
 * planes: frame row r, column q lands in plane (r % sh, q % sw) at row r / sh,
 * column q / sw, every plane wq = ceil(wp / sw) columns wide. Output pixel
 * (oy, ox) then reads tap (ky, kx) at plane ((ky*dh) % sh, (kx*dw) % sw), index
 * (oy + ky*dh / sh) * wq + ox + kx*dw / sw: the output pixels, taken as one
 * "wide" row of oh * wq pixels (columns ow..wq-1 of each row are spare), read
 * each tap at a fixed offset from a plane, for any stride: one unaligned load
 * a vector. The forward writes the wide row and keeps the ow real columns of
 * each row; the gradients read dY laid out the same way with zeros in the
 * spare columns, so the spare pixels add nothing.
 *
 * The input gradient is the same frame read backwards: frame pixel j of plane
 * (py, px) gathers, for every tap of that phase, w[tap] * dYwide[j - offset(tap)]
 * (dY placed after a run of zeros, so indices below 0 read zeros; past the
 * end, zeros again; a column index below 0 wraps to a spare column of the row
 * above, a zero too, since wq - ow >= kx*dw / sw for every tap). So strided
 * convolutions need no scatter and no col2im.
 *
 * Every output element is summed by one call in an order fixed by the shapes
 * (taps in order, input channels in order; for dW images in order and lanes
 * added in order at the end), so results do not depend on the thread count.
 * Entry points return 0, or -1 when a scratch allocation failed.
 */
#if defined(V_ISA)

#if V_ISA == 512
static inline void dwk_storeu(float *p, vf v) { _mm512_storeu_ps(p, v); }
#else
static inline void dwk_storeu(float *p, vf v) { _mm256_storeu_ps(p, v); }
#endif

/* dst[0..n) = src[0..n): rows here are short (7..224 floats), where a call to memcpy costs
 * more than the copy. */
static inline void dwk_copy(float *restrict dst, const float *restrict src, i64 n)
{
    i64 i = 0;
    for (; i + VL <= n; i += VL) dwk_storeu(dst + i, v_loadu(src + i));
    if (i < n) v_storen(dst + i, v_loadn(src + i, n - i), n - i);
}

typedef struct {
    geom_t s;
    i64 hq, wq;    /* rows and columns of a phase plane */
    i64 len, lr;   /* the wide output row: oh * wq pixels, rounded up to whole vectors */
    i64 maxoff;    /* the largest tap offset within a plane */
    i64 plane;     /* floats a phase plane takes (every read of the wide row stays inside) */
    i64 chan;      /* floats a channel's frame takes: sh * sw planes */
    i64 taps;      /* kh * kw */
} dwg_t;

static dwg_t dwk_geom(const i64 *g)
{
    dwg_t d;
    d.s = read_geom(g);
    const geom_t *s = &d.s;
    d.hq = ceil_div(s->hp, s->sh);
    d.wq = ceil_div(s->wp, s->sw);
    d.len = s->oh * d.wq;
    d.lr = ceil_div(d.len, VL) * VL;
    d.maxoff = ((s->kh - 1) * s->dh / s->sh) * d.wq + (s->kw - 1) * s->dw / s->sw;
    /* the forward and dx compute 4 vectors at a time, reading up to 4*VL - 1 floats past the ends */
    i64 need = ceil_div(d.len, 4 * VL) * 4 * VL + d.maxoff;
    if (need < d.hq * d.wq + 4 * VL) need = d.hq * d.wq + 4 * VL;
    d.plane = ceil_div(need, VL) * VL;
    d.chan = s->sh * s->sw * d.plane;
    d.taps = s->kh * s->kw;
    return d;
}

/* Offset of tap t = ky*kw + kx into a channel's phase frame. */
static i64 dwk_tap(const dwg_t *d, i64 t)
{
    const geom_t *s = &d->s;
    i64 ky = t / s->kw, kx = t % s->kw, vy = ky * s->dh, vx = kx * s->dw;
    return ((vy % s->sh) * s->sw + vx % s->sw) * d->plane + (vy / s->sh) * d->wq + vx / s->sw;
}

/* One channel's phase frame (see the top of the file): writes the image's pixels only, every
 * time the same places, so a frame zeroed once keeps its zeros around the image. A negative
 * padding crops. */
static void dwk_frame(const float *x, const dwg_t *d, float *fr)
{
    const geom_t *s = &d->s;
    i64 q0 = s->pl > 0 ? s->pl : 0, q1 = min64(s->wp, s->pl + s->w);
    i64 r0 = s->pt > 0 ? s->pt : 0, r1 = min64(s->hp, s->pt + s->h);
    if (q1 <= q0) return;
    i64 py = r0 % s->sh, ry = r0 / s->sh;  /* phase and row within it, kept without divisions */
    for (i64 r = r0; r < r1; r++) {
        const float *src = x + (r - s->pt) * s->w - s->pl;  /* src[q] = x[r - pt][q - pl] */
        float *row = fr + py * s->sw * d->plane + ry * d->wq;
        if (++py == s->sh) { py = 0; ry++; }
        if (s->sw == 1) dwk_copy(row + q0, src + q0, q1 - q0);
        else if (s->sw == 2) {  /* columns q0.. go to planes q0 % 2 and the other, from index q0 / 2 on */
            float *first = row + (q0 % 2) * d->plane, *second = row + ((q0 + 1) % 2) * d->plane;
            deinterleave2(first + q0 / 2, second + (q0 + 1) / 2, src + q0, q1 - q0);
        } else
            for (i64 q = q0; q < q0 + s->sw && q < q1; q++) {  /* one phase plane at a time */
                float *dst = row + (q % s->sw) * d->plane;
                for (i64 qq = q, k = q / s->sw; qq < q1; qq += s->sw, k++) dst[k] = src[qq];
            }
    }
}

/* A plane of dY (oh, ow) as a wide row of pitch wq into a buffer zeroed beforehand: the
 * spare columns and the tail are never written, so they stay zero. */
static void dwk_wide_dy(const float *dy, const dwg_t *d, float *out)
{
    const geom_t *s = &d->s;
    if (d->wq == s->ow) dwk_copy(out, dy, s->p);
    else
        for (i64 oy = 0; oy < s->oh; oy++) dwk_copy(out + oy * d->wq, dy + oy * s->ow, s->ow);
}

/* The first n floats of a0..a3 (all of them for n >= 4*VL) to dst. */
static inline void dwk_store4(float *dst, i64 n, vf a0, vf a1, vf a2, vf a3)
{
    if (n >= 4 * VL) {
        dwk_storeu(dst, a0);
        dwk_storeu(dst + VL, a1);
        dwk_storeu(dst + 2 * VL, a2);
        dwk_storeu(dst + 3 * VL, a3);
        return;
    }
    v_storen(dst, a0, n);
    if (n > VL) v_storen(dst + VL, a1, n - VL);
    if (n > 2 * VL) v_storen(dst + 2 * VL, a2, n - 2 * VL);
    if (n > 3 * VL) v_storen(dst + 3 * VL, a3, n - 3 * VL);
}

/* dst[i] = b + sum_c sum_t w[c*T + t] * fr[c*chan + off[t] + i] for i < len (whole vectors
 * are computed; the last store is cut at len). T a constant where the caller can. */
static inline __attribute__((always_inline)) void
dwk_rows(const float *fr, i64 chan, i64 cg, const i64 *off, const float *w, const i64 T, float b,
         float *dst, i64 len)
{
    for (i64 i = 0; i < len; i += 4 * VL) {  /* 4 chains of FMAs; the frame has room past len */
        vf a0 = v_set1(b), a1 = a0, a2 = a0, a3 = a0;
        for (i64 c = 0; c < cg; c++) {
            const float *f = fr + c * chan + i, *wc = w + c * T;
            for (i64 t = 0; t < T; t++) {
                vf wv = v_set1(wc[t]);
                const float *p = f + off[t];
                a0 = v_fma(wv, v_loadu(p), a0);
                a1 = v_fma(wv, v_loadu(p + VL), a1);
                a2 = v_fma(wv, v_loadu(p + 2 * VL), a2);
                a3 = v_fma(wv, v_loadu(p + 3 * VL), a3);
            }
        }
        dwk_store4(dst + i, len - i, a0, a1, a2, a3);
    }
}

static void dwk_rows_any(const float *fr, i64 chan, i64 cg, const i64 *off, const float *w, i64 T, float b,
                         float *dst, i64 len)
{
    switch (T) {
    case 9: dwk_rows(fr, chan, cg, off, w, 9, b, dst, len); break;
    case 25: dwk_rows(fr, chan, cg, off, w, 25, b, dst, len); break;
    default: dwk_rows(fr, chan, cg, off, w, T, b, dst, len); break;
    }
}

/* Stride 1, dilation 1, a square K x K kernel, one input channel: R output rows of NV vectors
 * (columns c0 on) at once. Each vector of a frame row is loaded once and multiplied into every
 * one of the R rows whose taps read it (up to K of them), where dwk_rows loads a vector for
 * every multiply-add: K*K*R*NV multiply-adds for (R + K - 1)*K*NV loads (5x5, 7 rows: 175 for
 * 55). Each output element is summed as by dwk_rows: the bias, then the taps in order (rows
 * j of the frame ascending, so ky ascending, kx ascending within), the same bits. ks, rows and
 * nvec are constants at each call (K, R, NV above). AVX-512 only (dwk_blocks_serve). */
#if V_ISA == 512
#define DWK_NV 4
#define DWK_R 7
static inline int dwk_block_rows(int nv) { return nv == 1 ? 7 : nv == 2 ? 6 : nv == 3 ? 5 : 4; }

static inline __attribute__((always_inline)) void
dwk_block(const float *fr, i64 wq, const float *w, const int ks, const int rows, const int nvec, float b, float *y,
          i64 ow, i64 oy0, i64 c0)
{
    vf acc[DWK_R][DWK_NV];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nvec; v++) acc[r][v] = v_set1(b);
    for (int j = 0; j < rows + ks - 1; j++) {
        const float *row = fr + (oy0 + j) * wq + c0;
        for (int kx = 0; kx < ks; kx++) {
            vf xv[DWK_NV];
            for (int v = 0; v < nvec; v++) xv[v] = v_loadu(row + kx + v * VL);
            for (int r = 0; r < rows; r++) {
                int ky = j - r;
                if (ky < 0 || ky >= ks) continue;
                vf wv = v_set1(w[ky * ks + kx]);
                for (int v = 0; v < nvec; v++) acc[r][v] = v_fma(wv, xv[v], acc[r][v]);
            }
        }
    }
    for (int r = 0; r < rows; r++) {
        float *dst = y + (oy0 + r) * ow + c0;
        for (int v = 0; v < nvec; v++) {
            i64 n = ow - c0 - v * VL;
            if (n >= VL) dwk_storeu(dst + v * VL, acc[r][v]);
            else if (n > 0) v_storen(dst + v * VL, acc[r][v], n);
        }
    }
}

#define DWK_BLOCK_K(K)                                                                          \
    switch (nv) {                                                                               \
    case 1: dwk_block(fr, wq, w, K, dwk_block_rows(1), 1, b, y, ow, oy0, c0); return;           \
    case 2: dwk_block(fr, wq, w, K, dwk_block_rows(2), 2, b, y, ow, oy0, c0); return;           \
    case 3: dwk_block(fr, wq, w, K, dwk_block_rows(3), 3, b, y, ow, oy0, c0); return;           \
    default: dwk_block(fr, wq, w, K, dwk_block_rows(4), 4, b, y, ow, oy0, c0); return;          \
    }

static void dwk_block_any(const float *fr, i64 wq, const float *w, int k, int nv, float b, float *y, i64 ow,
                          i64 oy0, i64 c0)
{
    switch (k) {
    case 3: DWK_BLOCK_K(3)
    case 5: DWK_BLOCK_K(5)
    default: DWK_BLOCK_K(7)
    }
}

/* One output plane (oh, ow) of y from a channel's frame (row pitch wq) by blocks of rows and
 * column blocks of DWK_NV vectors; a last block of rows that would run past the plane starts
 * higher instead, computing a few rows twice (the same values). */
static void dwk_plane_blocked(const float *fr, i64 wq, const float *w, int k, float b, float *y, i64 oh, i64 ow)
{
    for (i64 c0 = 0; c0 < ow; c0 += DWK_NV * VL) {
        int nv = (int)min64(DWK_NV, ceil_div(ow - c0, VL)), rows = dwk_block_rows(nv);
        for (i64 oy0 = 0; oy0 < oh; oy0 += rows)
            dwk_block_any(fr, wq, w, k, nv, b, y, ow, min64(oy0, oh - rows), c0);
    }
}

/* Channels in the vector (AVX-512). 16 channels of an image are laid out pixel by pixel, each
 * pixel one vector of the 16 channels (a 16x16 transpose of 16 pixels of 16 planes at a time),
 * into a zero-padded frame of a band of rows; every output pixel is then a vector of
 * multiply-adds with the weights' vectors: aligned loads and every lane used, whatever the
 * width or the stride, and the output pixels go back to the planes by the same transpose.
 * On rows of a vector or less (EfficientNet's 5x5 at 14x14 and 7x7) the planar loops use
 * 77-88% of the lanes with unaligned loads, or a broadcast per multiply-add; at stride 2 they
 * read phase planes, one load per multiply-add. Each output element is summed as there: the
 * bias, then the taps in order (ky, then kx), the same bits. Scratch: a band's frame (at most
 * DWC_FRAME_MAX floats) and output pixels (DWC_OUT_MAX), the weights. */
#define DWC_FRAME_MAX (2304 * VL)  /* frame pixels: 48x48, 144 KiB */
#define DWC_OUT_MAX (1024 * VL)    /* output pixels: 32x32, 64 KiB */

/* In place: lane j of r[i] goes to lane i of r[j]. */
static inline void dwc_transpose16(vf r[16])
{
    vf t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(u[h + i], u[h + 4 + i], 0x88);
            t[h + 4 + i] = _mm512_shuffle_f32x4(u[h + i], u[h + 4 + i], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

typedef struct {
    i64 x;        /* output pixels a chunk of a row computes: 16, 14 or 7 */
    i64 fw;       /* frame columns (the chunks may read past wp) */
    i64 rows;     /* output rows a band computes */
    i64 fh;       /* frame rows a band reads */
} dwc_t;

/* Whether a band of b output rows fits the scratch: its frame and its output pixels. */
static int dwc_band_fits(const geom_t *s, const dwc_t *c, i64 b)
{
    return ((b - 1) * s->sh + s->kh) * c->fw * VL <= DWC_FRAME_MAX && b * s->ow * VL <= DWC_OUT_MAX;
}

static dwc_t dwc_layout(const geom_t *s)
{
    dwc_t c;
    static const i64 xs[3] = {16, 14, 7};
    i64 best = 0;
    for (int k = 0; k < 3; k++)  /* the width that computes the fewest spare pixels, the widest of ties */
        if (ceil_div(s->ow, xs[k]) * xs[k] < ceil_div(s->ow, xs[best]) * xs[best]) best = k;
    c.x = xs[best];
    i64 reach = (ceil_div(s->ow, c.x) * c.x - 1) * s->sw + s->kw;
    c.fw = reach > s->pl + s->w ? reach : s->pl + s->w;  /* >= wp too */
    i64 most = s->oh;
    while (most > 1 && !dwc_band_fits(s, &c, most)) most--;
    c.rows = ceil_div(s->oh, ceil_div(s->oh, most));  /* bands of even height */
    c.fh = (c.rows - 1) * s->sh + s->kh;
    return c;
}

/* One chunk of an output row: X output pixels from the frame row r0 on, column q0 on, the
 * taps' weights wv (K*K vectors); the first n of them to out (pixels of VL floats). */
static inline __attribute__((always_inline)) void
dwc_chunk(const float *fr, i64 fw, const float *wv, vf bias, const int K, const int S, const int X, i64 r0, i64 q0,
          float *out, i64 n)
{
    vf acc[16];
#pragma GCC unroll 16
    for (int j = 0; j < X; j++) acc[j] = bias;
    for (int ky = 0; ky < K; ky++) {
        const float *row = fr + ((r0 + ky) * fw + q0) * VL;
        vf wk[7];
#pragma GCC unroll 7
        for (int kx = 0; kx < K; kx++) wk[kx] = v_load(wv + (ky * K + kx) * VL);
#pragma GCC unroll 40
        for (int q = 0; q < (X - 1) * S + K; q++) {
            vf xv = v_load(row + q * VL);
#pragma GCC unroll 7
            for (int kx = 0; kx < K; kx++) {
                int d = q - kx;  /* output pixel d / S reads this pixel with tap kx */
                if (d >= 0 && d % S == 0 && d / S < X) acc[d / S] = v_fma(wk[kx], xv, acc[d / S]);
            }
        }
    }
#pragma GCC unroll 16
    for (int j = 0; j < X; j++)
        if (j < n) v_store(out + j * VL, acc[j]);
}

#define DWC_CHUNK_X(K, S)                                                                             \
    switch (x) {                                                                                      \
    case 16: dwc_chunk(fr, fw, wv, bias, K, S, 16, r0, q0, out, n); return;                           \
    case 14: dwc_chunk(fr, fw, wv, bias, K, S, 14, r0, q0, out, n); return;                           \
    default: dwc_chunk(fr, fw, wv, bias, K, S, 7, r0, q0, out, n); return;                            \
    }

static void dwc_chunk_any(const float *fr, i64 fw, const float *wv, vf bias, int k, int s, int x, i64 r0, i64 q0,
                          float *out, i64 n)
{
    switch (k * 4 + s) {
    case 13: DWC_CHUNK_X(3, 1)
    case 14: DWC_CHUNK_X(3, 2)
    case 21: DWC_CHUNK_X(5, 1)
    case 22: DWC_CHUNK_X(5, 2)
    case 29: DWC_CHUNK_X(7, 1)
    default: DWC_CHUNK_X(7, 2)
    }
}

/* Channels [c0, c0 + nc) (nc <= VL) of image n: y planes from x planes (see above), by bands
 * of output rows. fr: a frame zeroed once (a band's image pixels are written to the same
 * places each time; rows that are padding in one band and image in another are zeroed as
 * they come), ob: the band's output pixels, wv: K*K + 1 vectors of room. */
static void dwc_group(const float *x, const float *w, const float *bias, float *y, const geom_t *s, const dwc_t *c,
                      i64 n, i64 c0, i64 nc, float *fr, float *ob, float *wv)
{
    i64 taps = s->kh * s->kw, hw = s->h * s->w, st = s->sh;
    for (i64 t = 0; t < taps; t++)
        for (i64 l = 0; l < VL; l++) wv[t * VL + l] = l < nc ? w[(c0 + l) * taps + t] : 0.0f;
    for (i64 l = 0; l < VL; l++) wv[taps * VL + l] = l < nc && bias ? bias[c0 + l] : 0.0f;
    vf bv = v_load(wv + taps * VL);
    const float *xc = x + (n * s->c + c0) * hw;
    float *yc = y + (n * s->o + c0) * s->p;
    int banded = c->rows < s->oh, ahead = n * s->c + c0 + 2 * VL <= s->n * s->c;
    for (i64 oy0 = 0; oy0 < s->oh; oy0 += c->rows) {
        i64 oy1 = min64(s->oh, oy0 + c->rows), r0 = oy0 * st, r1 = (oy1 - 1) * st + s->kh;
        i64 iy0 = r0 - s->pt > 0 ? r0 - s->pt : 0, iy1 = min64(s->h, r1 - s->pt);  /* image rows read */
        if (banded)
            for (i64 r = r0; r < r1; r++)
                if (r < s->pt || r >= s->pt + s->h) memset(fr + (r - r0) * c->fw * VL, 0, (size_t)(c->fw * VL) * 4);
        /* the image's pixels into the frame, 16 at a time */
        i64 iy = iy0, ix = 0;
        for (i64 p0 = iy0 * s->w; p0 < iy1 * s->w; p0 += VL) {
            i64 m = min64(VL, iy1 * s->w - p0);
            vf r[16];
            for (int l = 0; l < 16; l++) r[l] = l < nc ? v_loadn(xc + l * hw + p0, m) : v_zero();
            if (ahead)  /* the same pixels of the next 16 planes (the next group's, mostly), on the way */
                for (int l = 0; l < 16; l++) _mm_prefetch((const char *)(xc + (VL + l) * hw + p0), _MM_HINT_T0);
            dwc_transpose16(r);
            for (i64 j = 0; j < m; j++) {
                v_store(fr + ((iy + s->pt - r0) * c->fw + ix + s->pl) * VL, r[j]);
                if (++ix == s->w) { ix = 0; iy++; }
            }
        }
        /* the band's output pixels */
        int k = (int)s->kh, xw = (int)c->x;
        for (i64 oy = oy0; oy < oy1; oy++)
            for (i64 ox = 0; ox < s->ow; ox += xw)
                dwc_chunk_any(fr, c->fw, wv, bv, k, (int)st, xw, (oy - oy0) * st, ox * st,
                              ob + ((oy - oy0) * s->ow + ox) * VL, min64(xw, s->ow - ox));
        /* back to the planes, 16 pixels at a time */
        i64 pb = (oy1 - oy0) * s->ow;
        for (i64 p0 = 0; p0 < pb; p0 += VL) {
            i64 m = min64(VL, pb - p0);
            vf r[16];
            for (int j = 0; j < 16; j++) r[j] = j < m ? v_load(ob + (p0 + j) * VL) : v_zero();
            dwc_transpose16(r);
            float *dst = yc + oy0 * s->ow + p0;
            for (i64 l = 0; l < nc; l++) {
                if (m == VL) dwk_storeu(dst + l * s->p, r[l]);
                else v_storen(dst + l * s->p, r[l], m);
            }
        }
    }
}

/* y for the items [w0, w1) of (image, channel), channels in the vector. */
static int dwc_forward(const float *x, const float *w, const float *bias, float *y, i64 w0, i64 w1, const geom_t *s)
{
    dwc_t c = dwc_layout(s);
    i64 taps = s->kh * s->kw;
    float *fr = scratch((size_t)(c.fh * c.fw * VL)), *ob = scratch((size_t)((c.rows * s->ow + VL) * VL));
    float *wv = scratch((size_t)((taps + 1) * VL));
    if (!fr || !ob || !wv) { free(fr); free(ob); free(wv); return -1; }
    memset(fr, 0, (size_t)(c.fh * c.fw * VL) * 4);
    for (i64 item = w0; item < w1;) {
        i64 n = item / s->c, c0 = item % s->c, nc = min64(VL, min64(s->c - c0, w1 - item));
        dwc_group(x, w, bias, y, s, &c, n, c0, nc, fr, ob, wv);
        item += nc;
    }
    free(fr); free(ob); free(wv);
    return 0;
}

#endif  /* V_ISA == 512 */

/* Whether dwk_plane_blocked computes this layer's planes: the AVX-512 build, stride 1,
 * dilation 1, a 3x3, 5x5 or 7x7 kernel, one input channel a group, at least as many output
 * rows as a block, and rows wider than a vector: a weight broadcast then serves two or more
 * multiply-adds. (Rows of one vector or less take a broadcast per multiply-add here, as many
 * loads as dwk_rows does, whose wide row packs them into whole vectors: 14x14 3x3 was 9-15%
 * slower, 7x7 33%. The AVX2 build, with half the registers for blocks of 5 rows of 2
 * vectors, was 1.1-1.7x slower on SimpleCNN's and LeNet-5's first layers.) */
static int dwk_blocks_serve(const geom_t *s)
{
#if V_ISA != 512
    (void)s;
    return 0;
#else
    return s->sh == 1 && s->sw == 1 && s->dh == 1 && s->dw == 1 && s->kh == s->kw &&
           (s->kh == 3 || s->kh == 5 || s->kh == 7) && s->cg == 1 && s->oh >= DWK_R && s->ow > VL;
#endif
}

/* Whether the forward of s runs with channels in the vector (dwc_forward): the AVX-512 build,
 * one channel a group in and out, a square 3x3, 5x5 or 7x7 kernel, stride 1 or 2 both ways,
 * no dilation, no negative padding, bands of rows that fit the scratch (taller than the rows
 * two bands share). Unless `always`: channels that fill 3/4 of their vectors or more, and
 * where the blocks of rows serve (stride 1, rows wider than a vector) whole vectors of them
 * and not a 3x3 on rows wider than 32: there it took 1.22x the time of those blocks (which
 * need no transposes) on one 32x112x112 image, 1.27x on 64 images of 128x56x56, 1.31x with
 * 24 channels at 56x56 (1.29x with a 5x5). The cases measured:
 * bench/results/dw-channel-vectors-20261207.txt. */
static int dwc_serves(const geom_t *s, int always)
{
#if V_ISA != 512
    (void)s; (void)always;
    return 0;
#else
    if (!(s->cg == 1 && s->og == 1 && s->kh == s->kw && (s->kh == 3 || s->kh == 5 || s->kh == 7) &&
          s->sh == s->sw && (s->sh == 1 || s->sh == 2) && s->dh == 1 && s->dw == 1 && s->pt >= 0 && s->pl >= 0 &&
          s->p >= 1))
        return 0;
    if (!always) {
        i64 lanes = ceil_div(s->c, VL) * VL;  /* where the blocks of rows serve, all of them filled */
        if (dwk_blocks_serve(s) ? s->c < lanes || (s->kh == 3 && s->ow > 32) : 4 * s->c < 3 * lanes) return 0;
    }
    dwc_t c = dwc_layout(s);  /* bands that transpose the rows they share twice at most half their rows */
    return dwc_band_fits(s, &c, c.rows) && (c.rows == s->oh || c.rows * s->sh >= 2 * (s->kh - s->sh));
#endif
}

/* How the forward of geometry g computes its planes (for tests): 2 channels in the vector,
 * 1 blocks of rows, 0 the wide row. */
int dw_forward_kind(const i64 *g)
{
    geom_t s = read_geom(g);
    return dwc_serves(&s, 0) ? 2 : dwk_blocks_serve(&s) ? 1 : 0;
}

/* How many planes of `floats` to frame before computing them: about 16 KiB's worth. */
static i64 dwk_batch(i64 floats)
{
    i64 b = 4096 / floats;
    return b < 1 ? 1 : (b > 16 ? 16 : b);
}

/* Work items of the forward and the input gradient: (image, group). */
i64 dw_items(const i64 *g)
{
    geom_t s = read_geom(g);
    return s.n * s.groups;
}

/* y (N, O, OH, OW) for the items [w0, w1) of (image, group): w (O, C/groups, kh, kw),
 * bias (O,) or NULL. kinds: bit 1 lets channels go in the vector (dwc_forward) where that
 * serves (bit 2 as well: wherever dwc_forward can), bit 0 planes go by blocks of rows
 * (dwk_plane_blocked) where that serves; else planes go by the wide row. */
int dw_conv_fwd_f32(const float *x, const float *w, const float *bias, float *y, i64 w0, i64 w1, const i64 *g,
                    i64 kinds)
{
    dwg_t d = dwk_geom(g);
    const geom_t *s = &d.s;
#if V_ISA == 512
    if ((kinds & 2) && dwc_serves(s, (int)(kinds & 4))) return dwc_forward(x, w, bias, y, w0, w1, s);
#endif
    i64 batch = dwk_batch(s->cg * d.chan);
    float *fr = scratch((size_t)(batch * s->cg * d.chan)), *wide = scratch((size_t)(d.lr + 4 * VL));
    i64 *off = scratch((size_t)(2 * d.taps));  /* i64: two floats each */
    if (!fr || !wide || !off) { free(fr); free(wide); free(off); return -1; }
    memset(fr, 0, (size_t)(batch * s->cg * d.chan) * 4);
    for (i64 t = 0; t < d.taps; t++) off[t] = dwk_tap(&d, t);
    int direct = d.wq == s->ow;  /* no spare columns: the wide row is the output plane */
#if V_ISA == 512
    int blocked = (kinds & 1) && dwk_blocks_serve(s);
#else
    (void)kinds;  /* the AVX2 build keeps the wide row (dwk_blocks_serve) */
#endif
    for (i64 b0 = w0; b0 < w1; b0 += batch) {
        /* frame a few items, then compute them: the loads then never wait on the frames' stores */
        i64 b1 = min64(w1, b0 + batch);
        for (i64 item = b0; item < b1; item++) {
            i64 n = item / s->groups, gi = item % s->groups;
            for (i64 c = 0; c < s->cg; c++)
                dwk_frame(x + (n * s->c + gi * s->cg + c) * s->h * s->w, &d, fr + ((item - b0) * s->cg + c) * d.chan);
        }
        for (i64 item = b0; item < b1; item++) {
            i64 n = item / s->groups, gi = item % s->groups;
            const float *fi = fr + (item - b0) * s->cg * d.chan;
            for (i64 o = 0; o < s->og; o++) {
                i64 oo = gi * s->og + o;
                float *yo = y + (n * s->o + oo) * s->p, *dst = direct ? yo : wide;
#if V_ISA == 512
                if (blocked) {
                    dwk_plane_blocked(fi, d.wq, w + oo * d.taps, (int)s->kh, bias ? bias[oo] : 0.0f, yo, s->oh,
                                      s->ow);
                    continue;
                }
#endif
                dwk_rows_any(fi, d.chan, s->cg, off, w + oo * s->cg * d.taps, d.taps, bias ? bias[oo] : 0.0f,
                             dst, d.len);
                if (!direct)
                    for (i64 oy = 0; oy < s->oh; oy++) dwk_copy(yo + oy * s->ow, wide + oy * d.wq, s->ow);
            }
        }
    }
    free(fr); free(wide); free(off);
    return 0;
}

/* dx (N, C, H, W) for the items [w0, w1) of (image, group), from dy (N, O, OH, OW) and
 * w (O, C/groups, kh, kw): every frame pixel gathers its taps from the wide dY rows (see
 * the top of the file), then the image's part of the frame is copied out (pixels no tap
 * reads get 0). */
int dw_conv_dx_f32(const float *dy, const float *w, float *dx, i64 w0, i64 w1, const i64 *g)
{
    dwg_t d = dwk_geom(g);
    const geom_t *s = &d.s;
    i64 phases = s->sh * s->sw, lead = ceil_div(d.maxoff, VL) * VL;  /* zeros before each dY row */
    i64 ext = lead + d.plane + 4 * VL;                               /* floats of one extended dY */
    float *dye = scratch((size_t)(s->og * ext)), *fr = scratch((size_t)d.chan);
    i64 *off = scratch((size_t)(4 * d.taps));  /* two tables of i64 */
    float *wt = scratch((size_t)(d.taps * s->og + VL));
    i64 *start = scratch((size_t)(2 * (phases + 1)));
    if (!dye || !fr || !off || !wt || !start) { free(dye); free(fr); free(off); free(wt); free(start); return -1; }
    memset(dye, 0, (size_t)(s->og * ext) * 4);
    /* taps sorted by phase: start[ph] .. start[ph+1]-1, each tap's offset within its plane */
    i64 *order = off + d.taps, k = 0;
    for (i64 ph = 0; ph < phases; ph++) {
        start[ph] = k;
        for (i64 t = 0; t < d.taps; t++) {
            i64 o = dwk_tap(&d, t);
            if (o / d.plane == ph) { order[k] = t; off[k] = o % d.plane; k++; }
        }
    }
    start[phases] = k;
    i64 span = d.hq * d.wq;  /* the plane pixels that map to frame pixels */
    for (i64 item = w0; item < w1; item++) {
        i64 n = item / s->groups, gi = item % s->groups;
        for (i64 o = 0; o < s->og; o++)
            dwk_wide_dy(dy + (n * s->o + gi * s->og + o) * s->p, &d, dye + o * ext + lead);
        for (i64 c = 0; c < s->cg; c++) {
            /* the weights of channel c, by (phase-sorted tap, output channel) */
            for (i64 kk = 0; kk < d.taps; kk++)
                for (i64 o = 0; o < s->og; o++)
                    wt[kk * s->og + o] = w[((gi * s->og + o) * s->cg + c) * d.taps + order[kk]];
            for (i64 ph = 0; ph < phases; ph++) {
                float *dst = fr + ph * d.plane;
                i64 t0 = start[ph], t1 = start[ph + 1];
                for (i64 j = 0; j < span; j += 4 * VL) {  /* dY's extension has room past span */
                    vf a0 = v_zero(), a1 = a0, a2 = a0, a3 = a0;
                    for (i64 kk = t0; kk < t1; kk++)
                        for (i64 o = 0; o < s->og; o++) {
                            vf wv = v_set1(wt[kk * s->og + o]);
                            const float *p = dye + o * ext + lead + j - off[kk];
                            a0 = v_fma(wv, v_loadu(p), a0);
                            a1 = v_fma(wv, v_loadu(p + VL), a1);
                            a2 = v_fma(wv, v_loadu(p + 2 * VL), a2);
                            a3 = v_fma(wv, v_loadu(p + 3 * VL), a3);
                        }
                    dwk_store4(dst + j, span - j, a0, a1, a2, a3);
                }
            }
            /* copy out: dx[iy][ix] = frame[iy + pt][ix + pl] where the frame reaches */
            float *out = dx + (n * s->c + gi * s->cg + c) * s->h * s->w;
            i64 ix1 = min64(s->w, s->wp - s->pl);  /* columns the frame covers: ix < ix1 */
            for (i64 iy = 0; iy < s->h; iy++) {
                float *row = out + iy * s->w;
                i64 r = iy + s->pt;
                if (r < 0 || r >= s->hp || ix1 <= 0) { memset(row, 0, (size_t)s->w * 4); continue; }
                const float *src = fr + (r % s->sh) * s->sw * d.plane + (r / s->sh) * d.wq;
                i64 ix0 = s->pl < 0 ? -s->pl : 0;
                if (ix0 > 0) memset(row, 0, (size_t)min64(ix0, s->w) * 4);
                if (s->sw == 1) {
                    if (ix1 > ix0) dwk_copy(row + ix0, src + ix0 + s->pl, ix1 - ix0);
                } else if (s->sw == 2) {  /* frame column u = ix + pl: plane u % 2, index u / 2 */
                    i64 u0 = ix0 + s->pl;
                    if (ix1 > ix0)
                        interleave2(row + ix0, src + (u0 % 2) * d.plane + u0 / 2,
                                    src + ((u0 + 1) % 2) * d.plane + (u0 + 1) / 2, ix1 - ix0);
                } else {
                    for (i64 ix = ix0; ix < ix0 + s->sw && ix < ix1; ix++) {  /* one phase plane at a time */
                        const float *from = src + ((ix + s->pl) % s->sw) * d.plane;
                        for (i64 xx = ix, k = (ix + s->pl) / s->sw; xx < ix1; xx += s->sw, k++) row[xx] = from[k];
                    }
                }
                if (ix1 < s->w) memset(row + (ix1 > 0 ? ix1 : 0), 0, (size_t)(s->w - (ix1 > 0 ? ix1 : 0)) * 4);
            }
        }
    }
    free(dye); free(fr); free(off); free(wt); free(start);
    return 0;
}

/* acc[t] += sum over the wide row of dyw[i] * f[off[t] + i], for TC taps at once. */
static inline __attribute__((always_inline)) void
dwk_dw_taps(const float *dyw, const float *f, const i64 *off, const int TC, i64 lr, vf *acc)
{
    vf a[12];
    for (int t = 0; t < TC; t++) a[t] = v_load((const float *)&acc[t]);
    for (i64 i = 0; i < lr; i += VL) {
        vf dv = v_loadu(dyw + i);
        for (int t = 0; t < TC; t++) a[t] = v_fma(dv, v_loadu(f + off[t] + i), a[t]);
    }
    for (int t = 0; t < TC; t++) v_store((float *)&acc[t], a[t]);
}

static void dwk_dw_chunk(const float *dyw, const float *f, const i64 *off, int tc, i64 lr, vf *acc)
{
    switch (tc) {
#define DWK_CASE(n) case n: dwk_dw_taps(dyw, f, off, n, lr, acc); break;
    DWK_CASE(1) DWK_CASE(2) DWK_CASE(3) DWK_CASE(4) DWK_CASE(5) DWK_CASE(6)
    DWK_CASE(7) DWK_CASE(8) DWK_CASE(9) DWK_CASE(10) DWK_CASE(11) DWK_CASE(12)
#undef DWK_CASE
    default: break;
    }
}

/* dW (O, C/groups, kh, kw) of the items [i0, i1), summed over every image in order from
 * x (N, C, H, W) and dy (N, O, OH, OW); overwritten. Item i is group i / blocks, its output
 * channels [b * ob, b * ob + ob) for b = i % blocks (blocks = ceil(O/groups / ob)), so that
 * threads share a layer of few groups (one input channel: one group). Each weight's sum runs
 * in VL lanes over the wide rows, images in turn, and the lanes are added in order at the
 * end: the same bits for any ob and any split. */
int dw_conv_dw_f32(const float *x, const float *dy, float *dw, i64 i0, i64 i1, i64 ob, const i64 *g)
{
    dwg_t d = dwk_geom(g);
    const geom_t *s = &d.s;
    i64 T = d.taps, blocks = ceil_div(s->og, ob), nacc = ob * s->cg * T;
    float *fr = scratch((size_t)(s->cg * d.chan)), *dyw = scratch((size_t)(ob * d.lr));
    i64 *off = scratch((size_t)(2 * T));
    vf *acc = scratch((size_t)(nacc * VL));
    if (!fr || !dyw || !off || !acc) { free(fr); free(dyw); free(off); free(acc); return -1; }
    memset(fr, 0, (size_t)(s->cg * d.chan) * 4);
    memset(dyw, 0, (size_t)(ob * d.lr) * 4);
    for (i64 t = 0; t < T; t++) off[t] = dwk_tap(&d, t);
    i64 chunks = ceil_div(T, 12), per = ceil_div(T, chunks);  /* taps summed at once: <= 12 */
    for (i64 i = i0; i < i1; i++) {
        i64 gi = i / blocks, o0 = (i % blocks) * ob, on = min64(ob, s->og - o0);
        memset(acc, 0, (size_t)(nacc * VL) * 4);
        for (i64 n = 0; n < s->n; n++) {
            for (i64 c = 0; c < s->cg; c++)
                dwk_frame(x + (n * s->c + gi * s->cg + c) * s->h * s->w, &d, fr + c * d.chan);
            for (i64 o = 0; o < on; o++)
                dwk_wide_dy(dy + (n * s->o + gi * s->og + o0 + o) * s->p, &d, dyw + o * d.lr);
            for (i64 o = 0; o < on; o++)
                for (i64 c = 0; c < s->cg; c++)
                    for (i64 t0 = 0; t0 < T; t0 += per)
                        dwk_dw_chunk(dyw + o * d.lr, fr + c * d.chan, off + t0, (int)min64(per, T - t0), d.lr,
                                     acc + (o * s->cg + c) * T + t0);
        }
        for (i64 o = 0; o < on; o++)
            for (i64 k = 0; k < s->cg * T; k++) {
                const float *lanes = (const float *)&acc[o * s->cg * T + k];
                float sum = 0.0f;
                for (int l = 0; l < VL; l++) sum += lanes[l];
                dw[(gi * s->og + o0 + o) * s->cg * T + k] = sum;
            }
    }
    free(fr); free(dyw); free(off); free(acc);
    return 0;
}

#endif  /* V_ISA */
