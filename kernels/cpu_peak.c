/* The machine's measured FMA peak, float32: a short calibrated loop of
 * independent fused multiply-adds, for the bench's roofline line.
 *
 * Compiled after the other kernels/cpu_*.c in one translation unit
 * (kernels/native.py, SOURCES), so it uses cpu_conv.c's vector layer.
 * Everything here sits inside V_ISA.
 */
#if defined(V_ISA)

#endif  /* V_ISA */
