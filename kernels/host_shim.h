// Run the kernels/*.cu sources on the CPU, for tests without a GPU.
//
// Compile a translation unit that includes this header first, then a kernel
// source, then one SHIM_EXPORT(entry) line per entry point, with
//   g++ -std=c++17 -shared -fPIC
// It defines the CUDA keywords and built-ins the kernels use (blockIdx,
// blockDim, threadIdx, gridDim are thread_local globals) and, for each
// exported entry point, two C functions:
//   void launch_<entry>(unsigned grid, unsigned block, void** args)
//       runs every thread of a 1-D grid one after the other; args[k] points at
//       the k-th kernel argument, as for cuLaunchKernel;
//   const char* signature_<entry>(void)
//       one letter per kernel parameter: 'p' pointer, 'q' long long, 'i' int,
//       so a caller can check its argument packing.
// Running threads one after the other is exact for these kernels: they use no
// shared memory, no barriers and no atomics, and every thread writes only its
// own outputs.
//
// float16: where the compiler has _Float16 it stands in for __half (same IEEE
// binary16 format, round-to-nearest-even conversions); elsewhere the _f16
// entry points are left out (KERNELS_NO_FP16) and shim_has_fp16() returns 0.
#ifndef KERNELS_HOST_SHIM_H
#define KERNELS_HOST_SHIM_H

#include <cstddef>
#include <utility>

#define KERNELS_HOST_SHIM 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// __restrict__ is a GNU C++ keyword already.

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 gridDim, blockDim, blockIdx, threadIdx;

#if defined(__FLT16_MAX__) && !defined(KERNELS_NO_FP16)
typedef _Float16 __half;
inline float __half2float(__half v) { return static_cast<float>(v); }
inline __half __float2half_rn(float v) { return static_cast<__half>(v); }
extern "C" int shim_has_fp16(void) { return 1; }
#else
#ifndef KERNELS_NO_FP16
#define KERNELS_NO_FP16 1
#endif
extern "C" int shim_has_fp16(void) { return 0; }
#endif

namespace shim {

template <typename T>
struct type_code;
template <typename T>
struct type_code<T*> {
  static constexpr char value = 'p';
};
template <>
struct type_code<long long> {
  static constexpr char value = 'q';
};
template <>
struct type_code<int> {
  static constexpr char value = 'i';
};

template <typename... A>
const char* signature(void (*)(A...)) {
  static const char codes[] = {type_code<A>::value..., '\0'};
  return codes;
}

template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
  kernel(*static_cast<A*>(args[I])...);
}

template <typename... A>
void launch(void (*kernel)(A...), unsigned int grid, unsigned int block, void** args) {
  gridDim = dim3(grid);
  blockDim = dim3(block);
  for (unsigned int b = 0; b < grid; ++b) {
    for (unsigned int t = 0; t < block; ++t) {
      blockIdx = dim3(b);
      threadIdx = dim3(t);
      call(kernel, args, std::index_sequence_for<A...>{});
    }
  }
}

}  // namespace shim

#define SHIM_EXPORT(entry)                                                                \
  extern "C" void launch_##entry(unsigned int grid, unsigned int block, void** args) {   \
    shim::launch(entry, grid, block, args);                                               \
  }                                                                                       \
  extern "C" const char* signature_##entry(void) { return shim::signature(entry); }

#endif  // KERNELS_HOST_SHIM_H
