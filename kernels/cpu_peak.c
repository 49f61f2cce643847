/* The machine's measured FMA peak, float32: a short calibrated loop of
 * independent fused multiply-adds, for the bench's roofline line.
 *
 * Compiled after the other kernels/cpu_*.c in one translation unit
 * (kernels/native.py, SOURCES), so it uses cpu_conv.c's vector layer.
 * Everything here sits inside V_ISA.
 */
#if defined(V_ISA)

/* Independent accumulator chains: an FMA's latency (4 cycles on current x86)
 * times the FMA ports (2) needs at least 8 chains in flight; 12 leaves slack
 * and still fits the 16 AVX2 registers with the two constants. */
#define PEAK_CHAINS 12

/* Runs `iters` rounds of PEAK_CHAINS vector FMAs (acc = acc * m + a, which
 * converges to a / (1 - m): no overflow, no denormals), writes the sum of the
 * accumulators to *sink (so the loop cannot be dropped) and returns the FLOPs
 * done: iters * PEAK_CHAINS * VL * 2. */
long long peak_fma_f32(long long iters, float *sink) {
    const vf m = v_set1(0.999999f), a = v_set1(1e-6f);
    vf acc[PEAK_CHAINS];
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = v_set1((float)c * 1e-3f);
    for (long long i = 0; i < iters; i++) {
        /* written out so each accumulator stays in its own register */
        acc[0] = v_fma(acc[0], m, a);   acc[1] = v_fma(acc[1], m, a);
        acc[2] = v_fma(acc[2], m, a);   acc[3] = v_fma(acc[3], m, a);
        acc[4] = v_fma(acc[4], m, a);   acc[5] = v_fma(acc[5], m, a);
        acc[6] = v_fma(acc[6], m, a);   acc[7] = v_fma(acc[7], m, a);
        acc[8] = v_fma(acc[8], m, a);   acc[9] = v_fma(acc[9], m, a);
        acc[10] = v_fma(acc[10], m, a); acc[11] = v_fma(acc[11], m, a);
    }
    vf total = acc[0];
    for (int c = 1; c < PEAK_CHAINS; c++) total = v_add(total, acc[c]);
    float lanes[VL] __attribute__((aligned(64)));
    v_store(lanes, total);
    float s = 0.0f;
    for (int l = 0; l < VL; l++) s += lanes[l];
    *sink = s;
    return iters * PEAK_CHAINS * VL * 2;
}

#endif  /* V_ISA */
