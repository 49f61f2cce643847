/* The weight gradient of a layer with few input channels (an RGB or grey first layer) as
 * dot products along output rows, with no packing:
 *
 *     dW[o][c][ky][kx] = sum over images, oy, ox of dY[o][oy][ox] * X'[c][oy*sh + ky*dh][ox*sw + kx*dw]
 *
 * (X' the zero-padded input). VL consecutive output pixels of a row read VL consecutive
 * floats of dY, and, in a frame that stores each padded row of X as sw phases (columns
 * q = sw*j + phase at [phase][j]), VL consecutive floats for every tap; so a tile of DR_OB
 * output channels by DR_TB taps is DR_OB + DR_TB loads and DR_OB * DR_TB multiply-adds a
 * vector of pixels, each accumulator a vector of partial sums that is added across its
 * lanes once, at the end.
 *
 * Compiled after kernels/cpu_conv.c in one translation unit (kernels/native.py, SOURCES):
 * it uses that file's vector layer and geometry, and kernels/cpu_dense.c's v_hsum.
 *
 * Why: the GEMM path transposes dY into row panels and gathers a KC x NR panel of im2col
 * columns for every block of the reduction; with K = cg*kh*kw of 27 (3x3 over RGB) or 147
 * (the 7x7 stem), its 48-column tile is partly idle and the packing costs about as much as
 * the multiply-adds (VGG's CIFAR conv1, 64 x 3 x 32 x 32: 35% of the time in packing). The
 * cost here is the lanes past the end of a row (rows of 28 pixels fill 28 of 32).
 *
 * Work items are blocks of DR_OB output channels (of all groups, in order); an item sums its
 * channels over the whole batch by itself, images, bands of rows and rows in order, so the
 * bits depend on the shapes only, never on how the threads split the items. They differ
 * from the GEMM path's (a different order of the same sums).
 */
#if defined(V_ISA)

#if V_ISA == 512
#define DR_OB 4         /* output channels of a tile */
#define DR_TB 4         /* taps of a tile: 16 accumulators + 8 operands of 32 registers */
#else
#define DR_OB 4
#define DR_TB 2         /* 8 accumulators + 5 operands of 16 */
#endif
/* Keeps a loaded operand in its register: left alone, the compiler folds the load into each
 * of the DR_OB multiply-adds that use it, DR_OB loads where one would do, and the tile
 * becomes bound by loads (ResNet-20's conv1, 128 x 3 x 32 x 32: 1.5 ms, 0.86 with this). */
#define DR_IN_REGISTER(v) __asm__("" : "+v"(v))
#define DR_BAND_PIXELS 512  /* output pixels of a band: DR_OB rows of dY in 8 KiB, kept in L1 */

typedef struct {
    i64 wq, rowp, fsize;  /* a phase row's floats, a padded row's (sw phases), an image's frame */
} dr_frame_t;

static dr_frame_t dr_frame_geom(const geom_t *s)
{
    dr_frame_t f;
    f.wq = s->ow + (s->dw * (s->kw - 1)) / s->sw;
    f.rowp = s->sw * f.wq;
    f.fsize = s->cg * s->hp * f.rowp;
    return f;
}

/* The phase frame of cg channels of one image: frame[(c*hp + r)*rowp + ph*wq + j] =
 * X'[c][r][sw*j + ph], zero outside the image. */
static void dr_fill_frame(const float *x, const geom_t *s, const dr_frame_t *f, float *frame)
{
    for (i64 c = 0; c < s->cg; c++)
        for (i64 r = 0; r < s->hp; r++) {
            float *row = frame + (c * s->hp + r) * f->rowp;
            i64 ir = r - s->pt;
            if (ir < 0 || ir >= s->h) { memset(row, 0, (size_t)f->rowp * 4); continue; }
            const float *in = x + (c * s->h + ir) * s->w;
            for (i64 ph = 0; ph < s->sw; ph++) {
                float *out = row + ph * f->wq;
                i64 first = s->pl - ph;  /* j0..j1: columns sw*j + ph - pl inside the image */
                i64 j0 = first > 0 ? ceil_div(first, s->sw) : 0;
                i64 j1 = min64(f->wq, (s->w - 1 + first) >= 0 ? (s->w - 1 + first) / s->sw + 1 : 0);
                if (j1 < j0) j1 = j0;
                for (i64 j = 0; j < j0; j++) out[j] = 0.0f;
                const float *src = in + s->sw * j0 - first;
                for (i64 j = j0; j < j1; j++) out[j] = src[(j - j0) * s->sw];
                for (i64 j = j1; j < f->wq; j++) out[j] = 0.0f;
            }
        }
}

/* vacc[i][t] += the sums of dY rows d[i] times the frame at b[t] over the output rows
 * [y0, y1), lane by lane: VL pixels a step, the row's last step masked (both operands zero
 * past the row's end). A band's sums start from zero and are added to vacc once, so that each
 * lane's sum runs in blocks (about DR_BAND_PIXELS / VL terms, then one term a band), not in
 * one chain over the whole batch (5x the GEMM path's error at 64 x 32 x 32 pixels). */
static inline __attribute__((always_inline)) void
dr_tile(const float *const *d, const float *const *b, i64 rowstep, i64 ow, i64 y0, i64 y1, float *vacc,
        i64 vacc_row)
{
    vf acc[DR_OB][DR_TB];
    for (int i = 0; i < DR_OB; i++)
        for (int t = 0; t < DR_TB; t++) acc[i][t] = v_zero();
    i64 full = ow / VL * VL, tail = ow - full;
    for (i64 oy = y0; oy < y1; oy++) {
        i64 dro = oy * ow, bro = oy * rowstep;
        for (i64 ox = 0; ox < full; ox += VL) {
            vf a[DR_OB];
            for (int i = 0; i < DR_OB; i++) {
                a[i] = v_loadu(d[i] + dro + ox);
                DR_IN_REGISTER(a[i]);
            }
            for (int t = 0; t < DR_TB; t++) {
                vf bv = v_loadu(b[t] + bro + ox);
                DR_IN_REGISTER(bv);
                for (int i = 0; i < DR_OB; i++) acc[i][t] = v_fma(a[i], bv, acc[i][t]);
            }
        }
        if (tail) {
            vf a[DR_OB];
            for (int i = 0; i < DR_OB; i++) {
                a[i] = v_loadn(d[i] + dro + full, tail);
                DR_IN_REGISTER(a[i]);
            }
            for (int t = 0; t < DR_TB; t++) {
                vf bv = v_loadn(b[t] + bro + full, tail);
                DR_IN_REGISTER(bv);
                for (int i = 0; i < DR_OB; i++) acc[i][t] = v_fma(a[i], bv, acc[i][t]);
            }
        }
    }
    for (int i = 0; i < DR_OB; i++)
        for (int t = 0; t < DR_TB; t++) {
            float *v = vacc + i * vacc_row + t * VL;
            v_store(v, v_add(v_load(v), acc[i][t]));
        }
}

/* Whether conv2d_dw_rows_f32 serves this convolution: its phase frame of one image's cg
 * channels is indexed with 32-bit offsets. */
int dw_rows_serves(const i64 *g)
{
    geom_t s = read_geom(g);
    return dr_frame_geom(&s).fsize <= INT32_MAX;
}

/* Items: blocks of DR_OB output channels of each group. */
i64 dw_rows_items(const i64 *g)
{
    geom_t s = read_geom(g);
    return s.groups * ceil_div(s.og, DR_OB);
}

/* dW (O, C/groups, kh, kw), overwritten, for the items [b0, b1) (dw_rows_items): each
 * block's channels summed over the whole batch. Returns -1 where scratch memory runs out. */
int conv2d_dw_rows_f32(const float *x, const float *dy, float *dw, i64 b0, i64 b1, const i64 *g)
{
    geom_t s = read_geom(g);
    dr_frame_t f = dr_frame_geom(&s);
    i64 nob = ceil_div(s.og, DR_OB), ktiles = ceil_div(s.kg, DR_TB), kgp = ktiles * DR_TB;
    i64 vacc_row = kgp * VL;  /* one output channel's vector accumulators */
    i64 band = DR_BAND_PIXELS / s.ow > 1 ? DR_BAND_PIXELS / s.ow : 1;
    float *frame = scratch((size_t)f.fsize);
    float *zeros = scratch((size_t)(s.p + VL));
    float *vacc = scratch((size_t)(nob * DR_OB * vacc_row));
    int32_t *toff = scratch((size_t)kgp);
    if (!frame || !zeros || !vacc || !toff) {
        free(frame); free(zeros); free(vacc); free(toff);
        return -1;
    }
    memset(zeros, 0, (size_t)(s.p + VL) * 4);
    i64 t = 0;
    for (i64 c = 0; c < s.cg; c++)
        for (i64 ky = 0; ky < s.kh; ky++)
            for (i64 kx = 0; kx < s.kw; kx++)
                toff[t++] = (int32_t)((c * s.hp + ky * s.dh) * f.rowp + (s.dw * kx) % s.sw * f.wq + s.dw * kx / s.sw);
    for (; t < kgp; t++) toff[t] = toff[s.kg - 1];  /* past the last tap: the last again, not stored */
    while (b0 < b1) {
        i64 gi = b0 / nob, ob0 = b0 % nob, ob1 = min64(nob, ob0 + (b1 - b0));  /* this group's blocks */
        memset(vacc, 0, (size_t)((ob1 - ob0) * DR_OB * vacc_row) * 4);
        for (i64 nn = 0; nn < s.n; nn++) {
            dr_fill_frame(x + (nn * s.c + gi * s.cg) * s.h * s.w, &s, &f, frame);
            const float *dyn = dy + (nn * s.o + gi * s.og) * s.p;
            for (i64 y0 = 0; y0 < s.oh; y0 += band) {
                i64 y1 = min64(s.oh, y0 + band);
                for (i64 ob = ob0; ob < ob1; ob++) {
                    const float *d[DR_OB];
                    for (int i = 0; i < DR_OB; i++) {
                        i64 o = ob * DR_OB + i;
                        d[i] = o < s.og ? dyn + o * s.p : zeros;  /* past the last channel: zeros */
                    }
                    float *va = vacc + (ob - ob0) * DR_OB * vacc_row;
                    for (i64 kt = 0; kt < ktiles; kt++) {
                        const float *b[DR_TB];
                        for (int j = 0; j < DR_TB; j++) b[j] = frame + toff[kt * DR_TB + j];
                        dr_tile(d, b, s.sh * f.rowp, s.ow, y0, y1, va + kt * DR_TB * VL, vacc_row);
                    }
                }
            }
        }
        for (i64 ob = ob0; ob < ob1; ob++)
            for (i64 i = 0; i < DR_OB && ob * DR_OB + i < s.og; i++) {
                i64 o = ob * DR_OB + i;
                const float *va = vacc + ((ob - ob0) * DR_OB + i) * vacc_row;
                float *out = dw + (gi * s.og + o) * s.kg;
                for (i64 k = 0; k < s.kg; k++) out[k] = v_hsum(v_load(va + k * VL));
            }
        b0 += ob1 - ob0;
    }
    free(frame); free(zeros); free(vacc); free(toff);
    return 0;
}

#endif /* V_ISA */
