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

// Grid-stride loop over [0, total) with 64-bit indices:
//   for (long long i = grid_start(); i < total; i += grid_step())
__device__ __forceinline__ long long grid_start() {
  return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_step() {
  return (long long)blockDim.x * gridDim.x;
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
