// im2col and its adjoint col2im, the layout of Backend.im2col (backends/base.py):
//   x   (N, C, H, W), contiguous;
//   col (C*kh*kw, N*OH*OW), i.e. a contiguous (C, kh, kw, N, OH, OW) buffer.
// Window geometry as backends.base.Window: output (oh, ow), kernel offset
// (i, j) reads padded row oh*sh + i*dh and column ow*sw + j*dw; padded row r
// is input row r - pad_top. Everything outside the input is zero (that covers
// the bottom/right padding and any ceil_mode overhang: no sizes needed).
//
// Every entry point takes
//   (inputs..., outputs..., long long n, c, h, w, oh, ow,
//    int kh, kw, sh, sw, dh, dw, pad_top, pad_left)
// and kernels/__init__.py packs exactly that (tests/test_kernels_host.py checks).
#include "common.cuh"

// One thread per column entry: coalesced writes, and reads of neighbouring
// threads (consecutive ow) are close in x.
template <typename T>
__device__ __forceinline__ void im2col_body(const T* __restrict__ x, T* __restrict__ col,
                                            long long n, long long c, long long h, long long w,
                                            long long oh, long long ow, int kh, int kw, int sh,
                                            int sw, int dh, int dw, int pad_top, int pad_left) {
  const long long total = c * kh * kw * n * oh * ow;
  for (long long idx = grid_start(); idx < total; idx += grid_step()) {
    long long t = idx;
    const long long ox = t % ow;
    t /= ow;
    const long long oy = t % oh;
    t /= oh;
    const long long b = t % n;
    t /= n;
    const int j = (int)(t % kw);
    t /= kw;
    const int i = (int)(t % kh);
    const long long ch = t / kh;
    const long long y = oy * sh + (long long)i * dh - pad_top;
    const long long xx = ox * sw + (long long)j * dw - pad_left;
    T v = Elem<T>::store(0);
    if (y >= 0 && y < h && xx >= 0 && xx < w) v = x[((b * c + ch) * h + y) * w + xx];
    col[idx] = v;
  }
}

// Gather: one thread per image element sums the column entries that read it,
// kernel offsets in (i, j) order. No atomics, so the result is deterministic
// (and bitwise equal to the NumPy backend's, which adds in the same order).
template <typename T>
__device__ __forceinline__ void col2im_body(const T* __restrict__ col, T* __restrict__ x,
                                            long long n, long long c, long long h, long long w,
                                            long long oh, long long ow, int kh, int kw, int sh,
                                            int sw, int dh, int dw, int pad_top, int pad_left) {
  typedef typename Elem<T>::acc A;
  const long long total = n * c * h * w;
  const long long plane = n * oh * ow;  // stride of one (c, i, j) row of col
  for (long long idx = grid_start(); idx < total; idx += grid_step()) {
    long long t = idx;
    const long long xx = t % w;
    t /= w;
    const long long y = t % h;
    t /= h;
    const long long ch = t % c;
    const long long b = t / c;
    const long long py = y + pad_top, px = xx + pad_left;  // padded coordinates
    A acc = 0;
    for (int i = 0; i < kh; ++i) {
      const long long oy = window_origin(py, i, sh, dh, oh);
      if (oy < 0) continue;
      for (int j = 0; j < kw; ++j) {
        const long long ox = window_origin(px, j, sw, dw, ow);
        if (ox < 0) continue;
        const long long row = (ch * kh + i) * kw + j;
        acc += Elem<T>::load(col[row * plane + (b * oh + oy) * ow + ox]);
      }
    }
    x[idx] = Elem<T>::store(acc);
  }
}

#define CONV_PARAMS                                                                        \
  long long n, long long c, long long h, long long w, long long oh, long long ow, int kh,  \
      int kw, int sh, int sw, int dh, int dw, int pad_top, int pad_left
#define CONV_ARGS n, c, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pad_top, pad_left

#define CONV_ENTRY_POINTS(SUFFIX, T)                                                        \
  extern "C" __global__ void im2col_##SUFFIX(const T* __restrict__ x, T* __restrict__ col, \
                                             CONV_PARAMS) {                                \
    im2col_body<T>(x, col, CONV_ARGS);                                                     \
  }                                                                                        \
  extern "C" __global__ void col2im_##SUFFIX(const T* __restrict__ col, T* __restrict__ x, \
                                             CONV_PARAMS) {                                \
    col2im_body<T>(col, x, CONV_ARGS);                                                     \
  }

CONV_ENTRY_POINTS(f32, float)
CONV_ENTRY_POINTS(f64, double)
#ifndef KERNELS_NO_FP16
CONV_ENTRY_POINTS(f16, __half)
#endif
