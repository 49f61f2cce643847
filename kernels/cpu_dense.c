/* Dense (fully connected) layers and optimizer updates on the CPU, float32.
 *
 * Compiled after kernels/cpu_conv.c in one translation unit (kernels/native.py,
 * SOURCES), so it uses that file's vector layer (vf, v_load, v_fma, VL, ...)
 * and its gemm_f32. Everything here sits inside V_ISA: a build for a CPU
 * with neither AVX-512 nor AVX2 defines native_isa() alone.
 */
#if defined(V_ISA)

#endif  /* V_ISA */
