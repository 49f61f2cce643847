/* Depthwise convolution (groups == in_channels) on the CPU, float32.
 *
 * Compiled after kernels/cpu_conv.c and kernels/cpu_dense.c in one translation
 * unit (kernels/native.py, SOURCES), so it uses cpu_conv.c's vector layer and
 * helpers. Everything here sits inside V_ISA: a build for a CPU with neither
 * AVX-512 nor AVX2 defines native_isa() alone.
 */
#if defined(V_ISA)

#endif  /* V_ISA */
