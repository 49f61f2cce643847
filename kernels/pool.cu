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
// propagates, as in PyTorch). X: the index policy (common.cuh), Wide for the
// 64-bit entry points, Narrow for the _i32 ones.
template <typename T, typename X>
__device__ __forceinline__ void max_pool2d_forward_body(
    const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ argmax, typename X::Int n,
    typename X::Int c, typename X::Int h, typename X::Int w, typename X::Int oh,
    typename X::Int ow, int kh, int kw, int sh, int sw, int dh, int dw, int pad_top, int pad_left) {
  typedef typename Elem<T>::acc A;
  typedef typename X::Int I;
  typedef typename X::UInt U;
  typedef typename X::Loop L;
  const L total = (L)n * c * oh * ow;
  for (L idx = X::start(); idx < total; idx += X::step()) {
    const L ox = idx % ow;
    const L t = idx / ow;
    const L oy = t % oh;
    const T* __restrict__ plane = x + (t / oh) * h * w;
    const I y0 = (I)oy * sh - pad_top, x0 = (I)ox * sw - pad_left;
    A best = Elem<T>::lowest();
    int best_k = 0;
    bool seen = false;
    for (int i = 0; i < kh; ++i) {
      const I yy = y0 + (I)i * dh;
      if ((U)yy >= (U)h) continue;  // padding never wins, even over -inf
      for (int j = 0; j < kw; ++j) {
        const I xx = x0 + (I)j * dw;
        if ((U)xx >= (U)w) continue;
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
// one division by that position's divisor. X: the index policy, as above.
template <typename T, typename X>
__device__ __forceinline__ void avg_pool2d_forward_body(
    const T* __restrict__ x, const T* __restrict__ divisor, T* __restrict__ y, typename X::Int n,
    typename X::Int c, typename X::Int h, typename X::Int w, typename X::Int oh,
    typename X::Int ow, int kh, int kw, int sh, int sw, int dh, int dw, int pad_top, int pad_left) {
  typedef typename Elem<T>::acc A;
  typedef typename X::Int I;
  typedef typename X::UInt U;
  typedef typename X::Loop L;
  const L positions = (L)oh * ow;
  const L total = (L)n * c * positions;
  for (L idx = X::start(); idx < total; idx += X::step()) {
    const L p = idx / positions;
    const L pos = idx - p * positions;  // (oy, ox) flattened
    const L ox = pos % ow;
    const L oy = pos / ow;
    const T* __restrict__ plane = x + p * h * w;
    const I y0 = (I)oy * sh - pad_top, x0 = (I)ox * sw - pad_left;
    A acc = 0;
    for (int i = 0; i < kh; ++i) {
      const I yy = y0 + (I)i * dh;
      if ((U)yy >= (U)h) continue;
      for (int j = 0; j < kw; ++j) {
        const I xx = x0 + (I)j * dw;
        if ((U)xx >= (U)w) continue;
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

// ---- the 32-bit gathers: the taps that read an element found once -----------

// Where one thread of a 32-bit pooling gather stands: the start of its (n, c)
// output plane, and per dimension the window taps that read its element.
struct PoolGather {
  unsigned int base;
  Taps ti, tj;
};

__device__ __forceinline__ PoolGather pool_gather_at(unsigned int idx, int h, int w, int oh, int ow,
                                                     int kh, int kw, int sh, int sw, int dh, int dw,
                                                     int pad_top, int pad_left) {
  PoolGather g;
  const unsigned int xx = idx % w;
  const unsigned int t = idx / w;
  const unsigned int yy = t % h;
  g.base = (t / h) * oh * ow;
  g.ti = taps_reading((int)yy + pad_top, kh, sh, dh, oh);
  g.tj = taps_reading((int)xx + pad_left, kw, sw, dw, ow);
  return g;
}

// visit(i, j, o): every window tap (i, j) that reads the element, in (i, j)
// order, with o the flat index of its output in the (n, c) plane.
template <typename Visit>
__device__ __forceinline__ void for_each_tap(const PoolGather& g, int ow, Visit visit) {
  for (int i = g.ti.first, oy = g.ti.o_first; i <= g.ti.last; i += g.ti.step, oy -= g.ti.o_step) {
    for (int j = g.tj.first, ox = g.tj.o_first; j <= g.tj.last; j += g.tj.step, ox -= g.tj.o_step) {
      visit(i, j, (unsigned int)(oy * ow + ox));
    }
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
    const PoolGather g = pool_gather_at(idx, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pad_top, pad_left);
    A acc = 0;
    for_each_tap(g, ow, [&](int i, int j, unsigned int pos) {
      const unsigned int o = g.base + pos;
      if (argmax[o] == i * kw + j) acc = ieee_add<A>(acc, Elem<T>::load(grad_out[o]));
    });
    grad_in[idx] = Elem<T>::store(acc);
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
    const PoolGather g = pool_gather_at(idx, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pad_top, pad_left);
    A acc = 0;
    for_each_tap(g, ow, [&](int, int, unsigned int pos) {
      acc = ieee_add<A>(acc, ieee_div<A>(Elem<T>::load(grad_out[g.base + pos]),
                                         Elem<T>::load(divisor[pos])));
    });
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

// V is the variant's name part, empty (64-bit) or _i32, with its parameter list
// and index policy X.
#define POOL_ENTRY_POINTS_OF(V, PARAMS, X, SUFFIX, T)                                         \
  extern "C" __global__ void max_pool2d_forward##V##_##SUFFIX(                            \
      const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ argmax, PARAMS) { \
    max_pool2d_forward_body<T, X>(x, y, argmax, POOL_ARGS);                               \
  }                                                                                       \
  extern "C" __global__ void max_pool2d_backward##V##_##SUFFIX(                           \
      const T* __restrict__ grad_out, const long long* __restrict__ argmax,               \
      T* __restrict__ grad_in, PARAMS) {                                                  \
    max_pool2d_backward##V##_body<T>(grad_out, argmax, grad_in, POOL_ARGS);               \
  }                                                                                       \
  extern "C" __global__ void avg_pool2d_forward##V##_##SUFFIX(                            \
      const T* __restrict__ x, const T* __restrict__ divisor, T* __restrict__ y, PARAMS) {  \
    avg_pool2d_forward_body<T, X>(x, divisor, y, POOL_ARGS);                              \
  }                                                                                       \
  extern "C" __global__ void avg_pool2d_backward##V##_##SUFFIX(                           \
      const T* __restrict__ grad_out, const T* __restrict__ divisor,                      \
      T* __restrict__ grad_in, PARAMS) {                                                  \
    avg_pool2d_backward##V##_body<T>(grad_out, divisor, grad_in, POOL_ARGS);              \
  }

#define POOL_ENTRY_POINTS(SUFFIX, T)                     \
  POOL_ENTRY_POINTS_OF(, POOL_PARAMS, Wide, SUFFIX, T)   \
  POOL_ENTRY_POINTS_OF(_i32, POOL_PARAMS_I32, Narrow, SUFFIX, T)

POOL_ENTRY_POINTS(f32, float)
POOL_ENTRY_POINTS(f64, double)
#ifndef KERNELS_NO_FP16
POOL_ENTRY_POINTS(f16, __half)
#endif
