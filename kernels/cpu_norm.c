/* Per-channel maps and sums on the CPU, float32. Batch normalisation's affine map:
 *
 *     y[n, c, i] = (x[n, c, i] - mean[c]) * scale[c] (+ bias[c])
 *
 * one pass where NumPy makes three (a subtraction, a product, a sum, each writing a
 * temporary). The same float32 operations in the same order as the engine's NumPy
 * expression (engine/ops/normalization.py), none fused (-std=c11 keeps the compiler from
 * contracting into an FMA), so the same bits.
 *
 * Compiled after kernels/cpu_conv.c in one translation unit (kernels/native.py, SOURCES);
 * it uses that file's vector layer. Everything here sits inside V_ISA.
 */
#if defined(V_ISA)

#if V_ISA == 512
static inline vf bn_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf bn_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline void bn_storeu(float *p, vf v) { _mm512_storeu_ps(p, v); }
#else
static inline vf bn_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf bn_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline void bn_storeu(float *p, vf v) { _mm256_storeu_ps(p, v); }
#endif

/* Planes [p0, p1) of x (N*C planes of hw floats, plane p of channel p % c) into y; bias NULL
 * for none. */
void bn_apply_f32(const float *x, const float *mean, const float *scale, const float *bias, float *y, i64 c, i64 hw,
                  i64 p0, i64 p1)
{
    for (i64 p = p0; p < p1; p++) {
        i64 ch = p % c;
        const float *in = x + p * hw;
        float *out = y + p * hw;
        vf m = v_set1(mean[ch]), s = v_set1(scale[ch]), b = v_set1(bias ? bias[ch] : 0.0f);
        i64 i = 0;
        for (; i + VL <= hw; i += VL) {
            vf t = bn_mul(bn_sub(v_loadu(in + i), m), s);
            if (bias) t = v_add(t, b);
            bn_storeu(out + i, t);
        }
        if (i < hw) {
            vf t = bn_mul(bn_sub(v_loadn(in + i, hw - i), m), s);
            if (bias) t = v_add(t, b);
            v_storen(out + i, t, hw - i);
        }
    }
}

/* db[c] = sum over n and the plane of dy[n, c, :] for the channels [c0, c1) of dy (N, C, HW):
 * a convolution's bias gradient. Each channel is summed in float64 (VL lanes, images in
 * order, then the lanes in order), so it is more accurate than a float32 sum and the same
 * whatever the split of the channels between threads. */
void channel_sum_f32(const float *dy, float *db, i64 n, i64 c, i64 hw, i64 c0, i64 c1)
{
    for (i64 ch = c0; ch < c1; ch++) {
        double lanes[VL];
#if V_ISA == 512
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        for (i64 img = 0; img < n; img++) {
            const float *in = dy + (img * c + ch) * hw;
            for (i64 i = 0; i < hw; i += VL) {
                __m512 v = v_loadn(in + i, hw - i);
                lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
                hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
            }
        }
        _mm512_storeu_pd(lanes, lo);
        _mm512_storeu_pd(lanes + 8, hi);
#else
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
        for (i64 img = 0; img < n; img++) {
            const float *in = dy + (img * c + ch) * hw;
            for (i64 i = 0; i < hw; i += VL) {
                __m256 v = v_loadn(in + i, hw - i);
                lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
                hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
            }
        }
        _mm256_storeu_pd(lanes, lo);
        _mm256_storeu_pd(lanes + 4, hi);
#endif
        double total = 0.0;
        for (int j = 0; j < VL; j++) total += lanes[j];
        db[ch] = (float)total;
    }
}

#endif  /* V_ISA */
