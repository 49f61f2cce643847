// Shared by every kernel source (kernels.read_source inlines it in place of
// the .cu file's include line): the element types, their accumulation types,
// and the grid-stride loop.
//
// Element types and entry-point suffixes:
//   float  (_f32) accumulates in float, like cuDNN's default;
//   double (_f64) accumulates in double;
//   __half (_f16) is storage only and accumulates in float.
// Compiling with -DKERNELS_NO_FP16 leaves the _f16 entry points out, so that
// the float32/float64 kernels never depend on the cuda_fp16.h header.
// kernels/host_shim.h defines KERNELS_HOST_SHIM and its own __half to run the
// same code on the CPU.
#ifndef KERNELS_COMMON_CUH
#define KERNELS_COMMON_CUH

#if !defined(KERNELS_NO_FP16) && !defined(KERNELS_HOST_SHIM)
#include <cuda_fp16.h>
#endif

template <typename T>
struct Elem;

template <>
struct Elem<float> {
  typedef float acc;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
  // The dtype's lowest finite value pads max pooling: -inf trips argmax bugs.
  static __device__ __forceinline__ float lowest() { return -3.40282346638528859812e+38f; }
};

template <>
struct Elem<double> {
  typedef double acc;
  static __device__ __forceinline__ double load(double v) { return v; }
  static __device__ __forceinline__ double store(double v) { return v; }
  static __device__ __forceinline__ double lowest() { return -1.79769313486231570815e+308; }
};

#ifndef KERNELS_NO_FP16
template <>
struct Elem<__half> {
  typedef float acc;
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ float lowest() { return -65504.0f; }
};
#endif

// NaN test without math headers (valid without fast-math, which we never use).
template <typename A>
__device__ __forceinline__ bool is_nan(A v) { return v != v; }

// IEEE float32 arithmetic under CuPy's -ftz=true.
// CuPy compiles every RawModule with -ftz=true, appended after the caller's
// options (cupy/cuda/compiler.py, _compile_with_cache_cuda), so a -ftz=false of
// ours comes first and loses. That flag makes float32 add, divide and compare
// instructions treat subnormal inputs and results as zero. The kernels' few
// float32 operations (sums in col2im and pooling, the average's division, max
// pooling's comparison) go through these helpers, which spell them as PTX
// without .ftz: subnormals survive and results equal NumPy's. float64 has no
// flush mode; float16 data accumulates in float32 and goes through them too.
// tests/test_kernels_compile.py checks that no .ftz instruction is left.
template <typename A>
__device__ __forceinline__ A ieee_add(A a, A b) { return a + b; }
template <typename A>
__device__ __forceinline__ A ieee_div(A a, A b) { return a / b; }
template <typename A>
__device__ __forceinline__ bool ieee_greater(A a, A b) { return a > b; }

#ifndef KERNELS_HOST_SHIM
template <>
__device__ __forceinline__ float ieee_add<float>(float a, float b) {
  float r;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
template <>
__device__ __forceinline__ float ieee_div<float>(float a, float b) {
  float r;
  asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
// The NaN test from the bits: no float compare at all (v != v would be a
// setp.*.ftz under -ftz=true; harmless for NaN, but the bits need no argument).
template <>
__device__ __forceinline__ bool is_nan<float>(float v) {
  return (__float_as_uint(v) & 0x7fffffffu) > 0x7f800000u;
}
template <>
__device__ __forceinline__ bool ieee_greater<float>(float a, float b) {
  unsigned int r;
  asm("{\n\t.reg .pred p;\n\tsetp.gt.f32 p, %1, %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
      : "=r"(r)
      : "f"(a), "f"(b));
  return r != 0;
}
#endif

// Grid-stride loop over [0, total) with 64-bit indices:
//   for (long long i = grid_start(); i < total; i += grid_step())
__device__ __forceinline__ long long grid_start() {
  return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_step() {
  return (long long)blockDim.x * gridDim.x;
}

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// Grid-stride loop over [0, total) with 32-bit indices, for the *_i32 kernels
// (total < 2**31, so idx + step never wraps an unsigned int):
//   for (unsigned int i = grid_start_u32(); i < total; i += grid_step_u32())
__device__ __forceinline__ unsigned int grid_start_u32() {
  return blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ unsigned int grid_step_u32() { return blockDim.x * gridDim.x; }

// Index policies of the two kernel variants, for bodies shared by both:
//   Wide   (64-bit kernels): sizes and coordinates long long, any size;
//   Narrow (_i32 kernels):   sizes and coordinates int, every index < 2**31,
//                            the grid-stride counter unsigned (never wraps).
// Int: sizes and coordinates; UInt: its unsigned twin (one compare tests
// 0 <= v < size); Loop: the grid-stride counter.
struct Wide {
  typedef long long Int;
  typedef unsigned long long UInt;
  typedef long long Loop;
  static __device__ __forceinline__ Loop start() { return grid_start(); }
  static __device__ __forceinline__ Loop step() { return grid_step(); }
};
struct Narrow {
  typedef int Int;
  typedef unsigned int UInt;
  typedef unsigned int Loop;
  static __device__ __forceinline__ Loop start() { return grid_start_u32(); }
  static __device__ __forceinline__ Loop step() { return grid_step_u32(); }
};

// The kernel offsets t in [0, k) whose window reads padded coordinate p, i.e.
// p == o * s + t * d for an output 0 <= o < out, found once per thread (the
// gather kernels used to test every offset with divisions). They form a
// progression: t = first, first + step, ..., <= last, at outputs
// o = o_first, o_first - o_step, ... (empty when first > last). Visiting them
// in that order keeps the (i, j) summation order of the 64-bit kernels.
// Assumes p >= 0 and every product below fits in an int (kernels.fits_int32).
struct Taps {
  int first, last, step, o_first, o_step;
};

__device__ __forceinline__ Taps taps_reading(int p, int k, int s, int d, int out) {
  Taps r;
  int g = 1;  // gcd(s, d): consecutive solutions of p - t*d == 0 (mod s) are s/g apart
  if (s != 1 && d != 1) {
    int a = s, b = d;
    while (b != 0) {
      const int m = a % b;
      a = b;
      b = m;
    }
    g = a;
  }
  r.step = s / g;
  r.o_step = d / g;
  r.last = imin(k - 1, d == 1 ? p : p / d);  // t * d <= p
  const int over = p - (out - 1) * s;         // t * d >= p - (out - 1) * s
  int t = over > 0 ? (d == 1 ? over : (over + d - 1) / d) : 0;
  r.first = r.last + 1;  // none yet
  if (s == 1) {
    r.first = t;
  } else {
    const int stop = imin(r.last, t + r.step - 1);
    for (; t <= stop; ++t) {
      if ((p - t * d) % s == 0) {
        r.first = t;
        break;
      }
    }
  }
  r.o_first = s == 1 ? p - r.first * d : (p - r.first * d) / s;
  return r;
}

// The output position (o) whose window, at kernel offset k, reads padded
// coordinate p: p == o * stride + k * dilation, 0 <= o < out. Returns -1 when
// there is none. Used by the gather (backward) kernels.
__device__ __forceinline__ long long window_origin(long long p, int k, int stride, int dilation,
                                                   long long out) {
  const long long r = p - (long long)k * dilation;
  if (r < 0 || r % stride != 0) return -1;
  const long long o = r / stride;
  return o < out ? o : -1;
}

#endif  // KERNELS_COMMON_CUH
