/* Element-wise activations on the CPU, float32: tanh and sigmoid, forward and backward.
 *
 * Compiled after kernels/cpu_conv.c in one translation unit (kernels/native.py, SOURCES), so
 * it uses that file's vector layer (vf, v_loadu, v_fma, v_loadn/v_storen, VL). Everything here
 * sits inside V_ISA. Every entry point takes element ranges [i0, i1) (and only pointers and
 * int64s), so the caller can split an array over threads; each element depends on its own
 * inputs alone, so the results do not depend on the split.
 *
 * The backward kernels are NumPy's expressions bit for bit: tanh's g * (1 - y*y) and sigmoid's
 * (g * y) * (1 - y), each product and difference rounded to float in that order, no FMA (the
 * intrinsics below are separate multiplies and subtractions, and -std=c11 keeps GCC from
 * contracting them).
 *
 * The forward kernels are not NumPy's bits (NumPy's float32 tanh is its own SIMD code): each
 * is one exponential, one division and no branch, and was measured against float64 over all
 * 2^32 float32 inputs (bench/results/scripts/activation_ulps.py, its output in
 * bench/results/activation-ulps-20261207.txt): tanh within 2.57 ulp, sigmoid within 2.41
 * (NumPy's np.tanh: 1.37, the array-API sigmoid: 3.64). A NaN gives the same NaN back,
 * tanh(+-inf) = +-1, tanh(+-0) = +-0, and the AVX2 build gives the AVX-512 build's bits.
 */
#if defined(V_ISA)

#if V_ISA == 512
static inline void act_storeu(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline vf act_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf act_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf act_div(vf a, vf b) { return _mm512_div_ps(a, b); }
/* max(lo, v) that keeps a NaN v (vmaxps returns its second operand when either is NaN) */
static inline vf act_max_keep_nan(vf lo, vf v) { return _mm512_max_ps(lo, v); }
static inline vf act_abs(vf v) { return _mm512_abs_ps(v); }
static inline vf act_min(vf a, vf b) { return _mm512_min_ps(a, b); }
/* 2^n for integral n in [-126, 127] */
static inline vf act_pow2(vf n) { return _mm512_scalef_ps(v_set1(1.0f), n); }
static inline vf act_round(vf v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT); }
/* p * 2^n for integral n in [-150, 0], rounded once */
static inline vf act_ldexp(vf p, vf n) { return _mm512_scalef_ps(p, n); }
static inline vf act_or(vf a, vf b)
{
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}
static inline vf act_sign(vf v)  /* the sign bit alone */
{
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u)));
}
/* where(a < b, x, y) (false for NaN) */
static inline vf act_where_lt(vf a, vf b, vf x, vf y)
{
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
}
/* where(v is NaN, nan, y) */
static inline vf act_keep_nan_of(vf v, vf nan, vf y)
{
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), y, nan);
}
#else
static inline void act_storeu(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline vf act_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf act_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf act_div(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf act_max_keep_nan(vf lo, vf v) { return _mm256_max_ps(lo, v); }
static inline vf act_abs(vf v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
static inline vf act_min(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline __m256 act_pow2i(__m256i n)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}
static inline vf act_pow2(vf n) { return act_pow2i(_mm256_cvtps_epi32(n)); }
static inline vf act_round(vf v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT); }
/* Two exact-or-once-rounded steps: p * 2^(n/2) stays normal (n >= -150), so only the second
 * multiply rounds, as scalef does in one. */
static inline vf act_ldexp(vf p, vf n)
{
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    return _mm256_mul_ps(_mm256_mul_ps(p, act_pow2i(n1)), act_pow2i(n2));
}
static inline vf act_sign(vf v) { return _mm256_and_ps(v, _mm256_set1_ps(-0.0f)); }
static inline vf act_or(vf a, vf b) { return _mm256_or_ps(a, b); }
static inline vf act_where_lt(vf a, vf b, vf x, vf y)
{
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
}
static inline vf act_keep_nan_of(vf v, vf nan, vf y)
{
    return _mm256_blendv_ps(y, nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}
#endif

/* exp(v) for v <= 0 (NaN stays NaN): exp(v) = 2^n e^r, n = round(v / ln 2), |r| <= ln(2)/2,
 * e^r = 1 + r + r^2 q(r) with q a degree-4 minimax fit (relative error 3e-9). Arguments below
 * -104 give 0, as exp does in float (exp(-104) is under half the smallest denormal);
 * results in the denormal range are rounded once. */
static inline vf act_exp_nonpos(vf v)
{
    v = act_max_keep_nan(v_set1(-104.0f), v);
    vf n = act_round(act_mul(v, v_set1(1.44269502f)));
    vf r = v_fma(n, v_set1(-0.693147182f), v);       /* ln 2 in two parts: r is v - n ln 2 */
    r = v_fma(n, v_set1(1.90465432e-9f), r);         /* to well under an ulp */
    vf q = v_set1(0.00138146f);
    q = v_fma(q, r, v_set1(0.00836870819f));
    q = v_fma(q, r, v_set1(0.041668389f));
    q = v_fma(q, r, v_set1(0.166665211f));
    q = v_fma(q, r, v_set1(0.49999994f));
    q = v_fma(q, r, v_set1(1.0f));
    q = v_fma(q, r, v_set1(1.0f));
    return act_ldexp(q, n);
}

/* tanh of one vector, computed on a = |x| and given the sign of x at the end (so -0 gives
 * -0): tanh(a) = m / (m + 2) with m = expm1(2a) = 2^n (1 + t) - 1, n = round(2a / ln 2),
 * t = e^r - 1 = r + r^2 q(r) on |r| <= ln(2)/2 (q a degree-4 minimax fit, relative error
 * 1.3e-8 of t), and 2^n t + (2^n - 1) in one FMA, so m keeps its relative accuracy near 0
 * (tiny a give m = 2a exactly, and tanh = a). a is clamped at 9.25, past which tanh rounds
 * to 1 (m + 2 rounds to m), so large |x| and +-inf give +-1 exactly. One division, no
 * branch: the rounding of m + 2 near a = 0 is most of the 2.5 ulp. */
static inline vf act_tanh(vf x)
{
    vf a = act_abs(x);
    vf z = act_mul(act_min(a, v_set1(9.25f)), v_set1(2.0f));  /* min: a NaN a gives 9.25 */
    vf n = act_round(act_mul(z, v_set1(1.44269502f)));
    vf r = v_fma(n, v_set1(-0.693147182f), z);          /* ln 2 in two parts: r = z - n ln 2 */
    r = v_fma(n, v_set1(1.90465432e-9f), r);
    vf q = v_set1(0.00138825143f);
    q = v_fma(q, r, v_set1(0.00836651213f));
    q = v_fma(q, r, v_set1(0.0416672006f));
    q = v_fma(q, r, v_set1(0.166665435f));
    q = v_fma(q, r, v_set1(0.49999997f));
    vf t = v_fma(q, act_mul(r, r), r);
    vf p = act_pow2(n);
    vf m = v_fma(p, t, act_sub(p, v_set1(1.0f)));
    vf y = act_div(m, v_add(m, v_set1(2.0f)));
    return act_keep_nan_of(x, x, act_or(y, act_sign(x)));
}

/* sigmoid of one vector, NumPy's (the engine's array-API) formula with one exp: e = exp(-|x|),
 * 1 / (1 + e) for x >= 0, e / (1 + e) below (so no overflow, and full relative accuracy in the
 * negative tail, denormals included); sigmoid(0) = 0.5, and +-large gives 1 and 0 exactly. */
static inline vf act_sigmoid(vf x)
{
    vf e = act_exp_nonpos(act_or(x, v_set1(-0.0f)));    /* -|x| */
    vf one = v_set1(1.0f);
    vf s = act_div(act_where_lt(x, v_zero(), e, one), v_add(one, e));
    return act_keep_nan_of(x, x, s);
}

void tanh_f32(const float *x, float *y, i64 i0, i64 i1)
{
    i64 i = i0;
    for (; i + VL <= i1; i += VL) act_storeu(y + i, act_tanh(v_loadu(x + i)));
    if (i < i1) v_storen(y + i, act_tanh(v_loadn(x + i, i1 - i)), i1 - i);
}

void sigmoid_f32(const float *x, float *y, i64 i0, i64 i1)
{
    i64 i = i0;
    for (; i + VL <= i1; i += VL) act_storeu(y + i, act_sigmoid(v_loadu(x + i)));
    if (i < i1) v_storen(y + i, act_sigmoid(v_loadn(x + i, i1 - i)), i1 - i);
}

/* a * b, and where both are NaN, a's NaN (quieted), as x86's multiply gives it for its first
 * operand, which NumPy's loops pass in their order; GCC may swap the operands of a plain
 * multiply, so the choice is made explicit. */
static inline vf act_mul_ordered(vf a, vf b) { return act_keep_nan_of(a, act_mul(a, a), act_mul(a, b)); }

/* dx = g * (1 - y*y), NumPy's three roundings in its order. */
static inline vf act_tanh_grad(vf g, vf y)
{
    return act_mul_ordered(g, act_sub(v_set1(1.0f), act_mul(y, y)));
}

/* dx = (g * y) * (1 - y), NumPy's order for grad_out * y * (1 - y). */
static inline vf act_sigmoid_grad(vf g, vf y)
{
    return act_mul_ordered(act_mul_ordered(g, y), act_sub(v_set1(1.0f), y));
}

void tanh_backward_f32(const float *g, const float *y, float *dx, i64 i0, i64 i1)
{
    i64 i = i0;
    for (; i + VL <= i1; i += VL) act_storeu(dx + i, act_tanh_grad(v_loadu(g + i), v_loadu(y + i)));
    if (i < i1) {
        i64 n = i1 - i;
        v_storen(dx + i, act_tanh_grad(v_loadn(g + i, n), v_loadn(y + i, n)), n);
    }
}

void sigmoid_backward_f32(const float *g, const float *y, float *dx, i64 i0, i64 i1)
{
    i64 i = i0;
    for (; i + VL <= i1; i += VL) act_storeu(dx + i, act_sigmoid_grad(v_loadu(g + i), v_loadu(y + i)));
    if (i < i1) {
        i64 n = i1 - i;
        v_storen(dx + i, act_sigmoid_grad(v_loadn(g + i, n), v_loadn(y + i, n)), n);
    }
}

#endif  /* V_ISA */
