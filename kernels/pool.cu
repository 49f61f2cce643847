// 2-D max and average pooling, forward and backward, as Backend.max_pool2d /
// avg_pool2d (backends/base.py):
//   x, grad_in          (N, C, H, W), contiguous;
//   y, grad_out, argmax (N, C, OH, OW); argmax is int64, the flat in-window
//                       index i*kw + j of the maximum;
//   divisor             (OH, OW), the element type: one divisor per output
//                       position (count_include_pad and the ceil_mode overhang
//                       are already in it: Backend.avg_pool_divisor).
// Window geometry as backends.base.Window; positions outside the input (user
// padding, ceil_mode overhang) read the dtype's lowest finite value for max
// pooling and zero for average pooling.
//
// Two variants of each kernel: the plain names use 64-bit indices (any size);
// the *_i32 ones use 32-bit indices (fewer instructions per index division)
// and, in the backward gathers, find the window offsets that read an element
// once per dimension instead of testing each with divisions. They serve
// tensors whose every index fits in 32 bits (kernels.fits_int32) and give the
// same bits. Every entry point takes
//   (inputs..., outputs..., long long n, c, h, w, oh, ow,
//    int kh, kw, sh, sw, dh, dw, pad_top, pad_left)
// (the _i32 ones take n, c, h, w, oh, ow as int) and kernels/__init__.py packs
// exactly that (tests/test_kernels_host.py checks).
#include "common.cuh"

// One thread per output: scan the window in (i, j) order; the first maximum
// wins, and every NaN replaces the best so far (the last NaN wins and NaN
// propagates, as in PyTorch).
template <typename T>
__device__ __forceinline__ void max_pool2d_forward_body(
    const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ argmax, long long n,
    long long c, long long h, long long w, long long oh, long long ow, int kh, int kw, int sh,
    int sw, int dh, int dw, int pad_top, int pad_left) {
  typedef typename Elem<T>::acc A;
  const long long total = n * c * oh * ow;
  for (long long idx = grid_start(); idx < total; idx += grid_step()) {
    const long long ox = idx % ow;
    const long long oy = (idx / ow) % oh;
    const T* __restrict__ plane = x + (idx / (oh * ow)) * h * w;
    A best = Elem<T>::lowest();
    long long best_k = 0;
    bool seen = false;
    for (int i = 0; i < kh; ++i) {
      const long long yy = oy * sh + (long long)i * dh - pad_top;
      const bool row_in = yy >= 0 && yy < h;
      for (int j = 0; j < kw; ++j) {
        const long long xx = ox * sw + (long long)j * dw - pad_left;
        if (!row_in || xx < 0 || xx >= w) continue;  // padding never wins, even over -inf
        const A v = Elem<T>::load(plane[yy * w + xx]);
        if (!seen || ieee_greater<A>(v, best) || is_nan(v)) {
          best = v;
          best_k = (long long)i * kw + j;
          seen = true;
        }
      }
    }
    y[idx] = Elem<T>::store(best);
    argmax[idx] = best_k;
  }
}

// Gather: one thread per input element loops over the output windows that
// contain it, kernel offsets in (i, j) order, and adds the gradient of those
// whose argmax points at it.
template <typename T>
__device__ __forceinline__ void max_pool2d_backward_body(
    const T* __restrict__ grad_out, const long long* __restrict__ argmax,
    T* __restrict__ grad_in, long long n, long long c, long long h, long long w, long long oh,
    long long ow, int kh, int kw, int sh, int sw, int dh, int dw, int pad_top, int pad_left) {
  typedef typename Elem<T>::acc A;
  const long long total = n * c * h * w;
  for (long long idx = grid_start(); idx < total; idx += grid_step()) {
    const long long xx = idx % w;
    const long long yy = (idx / w) % h;
    const long long base = (idx / (h * w)) * oh * ow;  // start of this (n, c) output plane
    A acc = 0;
    for (int i = 0; i < kh; ++i) {
      const long long oy = window_origin(yy + pad_top, i, sh, dh, oh);
      if (oy < 0) continue;
      for (int j = 0; j < kw; ++j) {
        const long long ox = window_origin(xx + pad_left, j, sw, dw, ow);
        if (ox < 0) continue;
        const long long o = base + oy * ow + ox;
        if (argmax[o] == (long long)i * kw + j) acc = ieee_add<A>(acc, Elem<T>::load(grad_out[o]));
      }
    }
    grad_in[idx] = Elem<T>::store(acc);
  }
}

// One thread per output: window sum in (i, j) order (padding adds zero), then
// one division by that position's divisor.
template <typename T>
__device__ __forceinline__ void avg_pool2d_forward_body(
    const T* __restrict__ x, const T* __restrict__ divisor, T* __restrict__ y, long long n,
    long long c, long long h, long long w, long long oh, long long ow, int kh, int kw, int sh,
    int sw, int dh, int dw, int pad_top, int pad_left) {
  typedef typename Elem<T>::acc A;
  const long long total = n * c * oh * ow;
  for (long long idx = grid_start(); idx < total; idx += grid_step()) {
    const long long pos = idx % (oh * ow);  // (oy, ox) flattened
    const long long ox = pos % ow;
    const long long oy = pos / ow;
    const T* __restrict__ plane = x + (idx / (oh * ow)) * h * w;
    A acc = 0;
    for (int i = 0; i < kh; ++i) {
      const long long yy = oy * sh + (long long)i * dh - pad_top;
      if (yy < 0 || yy >= h) continue;
      for (int j = 0; j < kw; ++j) {
        const long long xx = ox * sw + (long long)j * dw - pad_left;
        if (xx < 0 || xx >= w) continue;
        acc = ieee_add<A>(acc, Elem<T>::load(plane[yy * w + xx]));
      }
    }
    y[idx] = Elem<T>::store(ieee_div<A>(acc, Elem<T>::load(divisor[pos])));
  }
}

// Gather: one thread per input element adds grad_out / divisor of every output
// window that contains it, kernel offsets in (i, j) order.
template <typename T>
__device__ __forceinline__ void avg_pool2d_backward_body(
    const T* __restrict__ grad_out, const T* __restrict__ divisor, T* __restrict__ grad_in,
    long long n, long long c, long long h, long long w, long long oh, long long ow, int kh,
    int kw, int sh, int sw, int dh, int dw, int pad_top, int pad_left) {
  typedef typename Elem<T>::acc A;
  const long long total = n * c * h * w;
  for (long long idx = grid_start(); idx < total; idx += grid_step()) {
    const long long xx = idx % w;
    const long long yy = (idx / w) % h;
    const long long base = (idx / (h * w)) * oh * ow;
    A acc = 0;
    for (int i = 0; i < kh; ++i) {
      const long long oy = window_origin(yy + pad_top, i, sh, dh, oh);
      if (oy < 0) continue;
      for (int j = 0; j < kw; ++j) {
        const long long ox = window_origin(xx + pad_left, j, sw, dw, ow);
        if (ox < 0) continue;
        const long long pos = oy * ow + ox;
        acc = ieee_add<A>(acc, ieee_div<A>(Elem<T>::load(grad_out[base + pos]),
                                           Elem<T>::load(divisor[pos])));
      }
    }
    grad_in[idx] = Elem<T>::store(acc);
  }
}

// ---- 32-bit variants -------------------------------------------------------

template <typename T>
__device__ __forceinline__ void max_pool2d_forward_i32_body(
    const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ argmax, int n, int c,
    int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int dh, int dw, int pad_top,
    int pad_left) {
  typedef typename Elem<T>::acc A;
  const unsigned int total = (unsigned int)n * c * oh * ow;
  for (unsigned int idx = grid_start_u32(); idx < total; idx += grid_step_u32()) {
    const unsigned int ox = idx % ow;
    const unsigned int t = idx / ow;
    const unsigned int oy = t % oh;
    const T* __restrict__ plane = x + (t / oh) * h * w;
    const int y0 = (int)oy * sh - pad_top, x0 = (int)ox * sw - pad_left;
    A best = Elem<T>::lowest();
    int best_k = 0;
    bool seen = false;
    for (int i = 0; i < kh; ++i) {
      const int yy = y0 + i * dh;
      if ((unsigned int)yy >= (unsigned int)h) continue;  // padding never wins, even over -inf
      for (int j = 0; j < kw; ++j) {
        const int xx = x0 + j * dw;
        if ((unsigned int)xx >= (unsigned int)w) continue;
        const A v = Elem<T>::load(plane[yy * w + xx]);
        if (!seen || ieee_greater<A>(v, best) || is_nan(v)) {
          best = v;
          best_k = i * kw + j;
          seen = true;
        }
      }
    }
    y[idx] = Elem<T>::store(best);
    argmax[idx] = best_k;
  }
}

template <typename T>
__device__ __forceinline__ void max_pool2d_backward_i32_body(
    const T* __restrict__ grad_out, const long long* __restrict__ argmax,
    T* __restrict__ grad_in, int n, int c, int h, int w, int oh, int ow, int kh, int kw, int sh,
    int sw, int dh, int dw, int pad_top, int pad_left) {
  typedef typename Elem<T>::acc A;
  const unsigned int total = (unsigned int)n * c * h * w;
  for (unsigned int idx = grid_start_u32(); idx < total; idx += grid_step_u32()) {
    const unsigned int xx = idx % w;
    const unsigned int t = idx / w;
    const unsigned int yy = t % h;
    const unsigned int base = (t / h) * oh * ow;  // start of this (n, c) output plane
    const Taps ti = taps_reading((int)yy + pad_top, kh, sh, dh, oh);
    const Taps tj = taps_reading((int)xx + pad_left, kw, sw, dw, ow);
    A acc = 0;
    for (int i = ti.first, oy = ti.o_first; i <= ti.last; i += ti.step, oy -= ti.o_step) {
      for (int j = tj.first, ox = tj.o_first; j <= tj.last; j += tj.step, ox -= tj.o_step) {
        const unsigned int o = base + oy * ow + ox;
        if (argmax[o] == i * kw + j) acc = ieee_add<A>(acc, Elem<T>::load(grad_out[o]));
      }
    }
    grad_in[idx] = Elem<T>::store(acc);
  }
}

template <typename T>
__device__ __forceinline__ void avg_pool2d_forward_i32_body(
    const T* __restrict__ x, const T* __restrict__ divisor, T* __restrict__ y, int n, int c,
    int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int dh, int dw, int pad_top,
    int pad_left) {
  typedef typename Elem<T>::acc A;
  const unsigned int positions = (unsigned int)oh * ow;
  const unsigned int total = (unsigned int)n * c * positions;
  for (unsigned int idx = grid_start_u32(); idx < total; idx += grid_step_u32()) {
    const unsigned int p = idx / positions;
    const unsigned int pos = idx - p * positions;  // (oy, ox) flattened
    const unsigned int ox = pos % ow;
    const unsigned int oy = pos / ow;
    const T* __restrict__ plane = x + p * h * w;
    const int y0 = (int)oy * sh - pad_top, x0 = (int)ox * sw - pad_left;
    A acc = 0;
    for (int i = 0; i < kh; ++i) {
      const int yy = y0 + i * dh;
      if ((unsigned int)yy >= (unsigned int)h) continue;
      for (int j = 0; j < kw; ++j) {
        const int xx = x0 + j * dw;
        if ((unsigned int)xx >= (unsigned int)w) continue;
        acc = ieee_add<A>(acc, Elem<T>::load(plane[yy * w + xx]));
      }
    }
    y[idx] = Elem<T>::store(ieee_div<A>(acc, Elem<T>::load(divisor[pos])));
  }
}

template <typename T>
__device__ __forceinline__ void avg_pool2d_backward_i32_body(
    const T* __restrict__ grad_out, const T* __restrict__ divisor, T* __restrict__ grad_in, int n,
    int c, int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int dh, int dw,
    int pad_top, int pad_left) {
  typedef typename Elem<T>::acc A;
  const unsigned int total = (unsigned int)n * c * h * w;
  for (unsigned int idx = grid_start_u32(); idx < total; idx += grid_step_u32()) {
    const unsigned int xx = idx % w;
    const unsigned int t = idx / w;
    const unsigned int yy = t % h;
    const unsigned int base = (t / h) * oh * ow;
    const Taps ti = taps_reading((int)yy + pad_top, kh, sh, dh, oh);
    const Taps tj = taps_reading((int)xx + pad_left, kw, sw, dw, ow);
    A acc = 0;
    for (int i = ti.first, oy = ti.o_first; i <= ti.last; i += ti.step, oy -= ti.o_step) {
      for (int j = tj.first, ox = tj.o_first; j <= tj.last; j += tj.step, ox -= tj.o_step) {
        const unsigned int pos = oy * ow + ox;
        acc = ieee_add<A>(acc, ieee_div<A>(Elem<T>::load(grad_out[base + pos]),
                                           Elem<T>::load(divisor[pos])));
      }
    }
    grad_in[idx] = Elem<T>::store(acc);
  }
}

#define POOL_PARAMS                                                                        \
  long long n, long long c, long long h, long long w, long long oh, long long ow, int kh,  \
      int kw, int sh, int sw, int dh, int dw, int pad_top, int pad_left
#define POOL_PARAMS_I32                                                                  \
  int n, int c, int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int dh, int dw, \
      int pad_top, int pad_left
#define POOL_ARGS n, c, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pad_top, pad_left

#define POOL_ENTRY_POINTS(SUFFIX, T)                                                       \
  extern "C" __global__ void max_pool2d_forward_##SUFFIX(                                 \
      const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ argmax,         \
      POOL_PARAMS) {                                                                      \
    max_pool2d_forward_body<T>(x, y, argmax, POOL_ARGS);                                  \
  }                                                                                       \
  extern "C" __global__ void max_pool2d_backward_##SUFFIX(                                \
      const T* __restrict__ grad_out, const long long* __restrict__ argmax,               \
      T* __restrict__ grad_in, POOL_PARAMS) {                                             \
    max_pool2d_backward_body<T>(grad_out, argmax, grad_in, POOL_ARGS);                    \
  }                                                                                       \
  extern "C" __global__ void avg_pool2d_forward_##SUFFIX(                                 \
      const T* __restrict__ x, const T* __restrict__ divisor, T* __restrict__ y,          \
      POOL_PARAMS) {                                                                      \
    avg_pool2d_forward_body<T>(x, divisor, y, POOL_ARGS);                                 \
  }                                                                                       \
  extern "C" __global__ void avg_pool2d_backward_##SUFFIX(                                \
      const T* __restrict__ grad_out, const T* __restrict__ divisor,                      \
      T* __restrict__ grad_in, POOL_PARAMS) {                                             \
    avg_pool2d_backward_body<T>(grad_out, divisor, grad_in, POOL_ARGS);                   \
  }                                                                                       \
  extern "C" __global__ void max_pool2d_forward_i32_##SUFFIX(                             \
      const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ argmax,         \
      POOL_PARAMS_I32) {                                                                  \
    max_pool2d_forward_i32_body<T>(x, y, argmax, POOL_ARGS);                              \
  }                                                                                       \
  extern "C" __global__ void max_pool2d_backward_i32_##SUFFIX(                            \
      const T* __restrict__ grad_out, const long long* __restrict__ argmax,               \
      T* __restrict__ grad_in, POOL_PARAMS_I32) {                                         \
    max_pool2d_backward_i32_body<T>(grad_out, argmax, grad_in, POOL_ARGS);                \
  }                                                                                       \
  extern "C" __global__ void avg_pool2d_forward_i32_##SUFFIX(                             \
      const T* __restrict__ x, const T* __restrict__ divisor, T* __restrict__ y,          \
      POOL_PARAMS_I32) {                                                                  \
    avg_pool2d_forward_i32_body<T>(x, divisor, y, POOL_ARGS);                             \
  }                                                                                       \
  extern "C" __global__ void avg_pool2d_backward_i32_##SUFFIX(                            \
      const T* __restrict__ grad_out, const T* __restrict__ divisor,                      \
      T* __restrict__ grad_in, POOL_PARAMS_I32) {                                         \
    avg_pool2d_backward_i32_body<T>(grad_out, divisor, grad_in, POOL_ARGS);               \
  }

POOL_ENTRY_POINTS(f32, float)
POOL_ENTRY_POINTS(f64, double)
#ifndef KERNELS_NO_FP16
POOL_ENTRY_POINTS(f16, __half)
#endif
