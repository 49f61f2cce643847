// im2col and its adjoint col2im, the layout of Backend.im2col (backends/base.py):
//   x   (N, C, H, W), contiguous;
//   col (C*kh*kw, N*OH*OW), i.e. a contiguous (C, kh, kw, N, OH, OW) buffer.
// Window geometry as backends.base.Window: output (oh, ow), kernel offset
// (i, j) reads padded row oh*sh + i*dh and column ow*sw + j*dw; padded row r
// is input row r - pad_top. Everything outside the input is zero (that covers
// the bottom/right padding and any ceil_mode overhang: no sizes needed).
//
// Two variants of each kernel:
//   im2col, col2im           64-bit indices, one thread per output element:
//                            any size;
//   im2col_i32, col2im_i32   32-bit indices, one thread per (channel, image,
//                            output position) walking the kh*kw taps
//                            (im2col), or per input pixel visiting only the
//                            taps that read it (col2im): for tensors whose
//                            every index fits in 32 bits (kernels.fits_int32).
// Both give the same bits. Every entry point takes
//   (inputs..., outputs..., long long n, c, h, w, oh, ow,
//    int kh, kw, sh, sw, dh, dw, pad_top, pad_left)
// (the _i32 ones take n, c, h, w, oh, ow as int) and kernels/__init__.py packs
// exactly that (tests/test_kernels_host.py checks).
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
        acc = ieee_add<A>(acc, Elem<T>::load(col[row * plane + (b * oh + oy) * ow + ox]));
      }
    }
    x[idx] = Elem<T>::store(acc);
  }
}

// One thread per (channel, image, output position): three divisions locate it,
// then it walks the kh*kw taps, one column row (N*OH*OW entries) apart, so a
// warp's stores stay coalesced (consecutive ox) and no tap divides.
template <typename T>
__device__ __forceinline__ void im2col_i32_body(const T* __restrict__ x, T* __restrict__ col, int n,
                                                int c, int h, int w, int oh, int ow, int kh, int kw,
                                                int sh, int sw, int dh, int dw, int pad_top,
                                                int pad_left) {
  const unsigned int plane = (unsigned int)n * oh * ow;  // entries of one col row
  const unsigned int total = (unsigned int)c * plane;
  const unsigned int taps = (unsigned int)kh * kw;
  for (unsigned int idx = grid_start_u32(); idx < total; idx += grid_step_u32()) {
    const unsigned int ch = idx / plane;
    const unsigned int q = idx - ch * plane;  // the column: (b, oy, ox) flattened
    const unsigned int ox = q % ow;
    const unsigned int t = q / ow;
    const unsigned int oy = t % oh;
    const unsigned int b = t / oh;
    const int y0 = (int)oy * sh - pad_top;
    const int x0 = (int)ox * sw - pad_left;
    const T* __restrict__ src = x + (b * c + ch) * h * w;
    T* __restrict__ dst = col + ch * taps * plane + q;
    for (int i = 0; i < kh; ++i) {
      const int y = y0 + i * dh;
      const bool row_in = (unsigned int)y < (unsigned int)h;
      for (int j = 0; j < kw; ++j) {
        const int xx = x0 + j * dw;
        *dst = (row_in && (unsigned int)xx < (unsigned int)w) ? src[y * w + xx] : Elem<T>::store(0);
        dst += plane;
      }
    }
  }
}

// Gather, one thread per image element, as col2im_body, but the taps that read
// the element are found once per dimension (taps_reading) instead of testing
// every (i, j) with divisions; same (i, j) order, so the same bits.
template <typename T>
__device__ __forceinline__ void col2im_i32_body(const T* __restrict__ col, T* __restrict__ x, int n,
                                                int c, int h, int w, int oh, int ow, int kh, int kw,
                                                int sh, int sw, int dh, int dw, int pad_top,
                                                int pad_left) {
  typedef typename Elem<T>::acc A;
  const unsigned int plane = (unsigned int)n * oh * ow;
  const unsigned int total = (unsigned int)n * c * h * w;
  for (unsigned int idx = grid_start_u32(); idx < total; idx += grid_step_u32()) {
    const unsigned int xx = idx % w;
    unsigned int t = idx / w;
    const unsigned int y = t % h;
    t /= h;
    const unsigned int ch = t % c;
    const unsigned int b = t / c;
    const Taps ti = taps_reading((int)y + pad_top, kh, sh, dh, oh);
    const Taps tj = taps_reading((int)xx + pad_left, kw, sw, dw, ow);
    const T* __restrict__ base = col + ch * kh * kw * plane + b * oh * ow;
    A acc = 0;
    for (int i = ti.first, oy = ti.o_first; i <= ti.last; i += ti.step, oy -= ti.o_step) {
      const T* __restrict__ row = base + (unsigned int)(i * kw) * plane + oy * ow;
      for (int j = tj.first, ox = tj.o_first; j <= tj.last; j += tj.step, ox -= tj.o_step) {
        acc = ieee_add<A>(acc, Elem<T>::load(row[(unsigned int)j * plane + ox]));
      }
    }
    x[idx] = Elem<T>::store(acc);
  }
}

#define CONV_PARAMS                                                                        \
  long long n, long long c, long long h, long long w, long long oh, long long ow, int kh,  \
      int kw, int sh, int sw, int dh, int dw, int pad_top, int pad_left
#define CONV_PARAMS_I32                                                                  \
  int n, int c, int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int dh, int dw, \
      int pad_top, int pad_left
#define CONV_ARGS n, c, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pad_top, pad_left

// V is the variant's name part: empty (64-bit) or _i32, with its parameter list.
#define CONV_ENTRY_POINTS_OF(V, PARAMS, SUFFIX, T)                                          \
  extern "C" __global__ void im2col##V##_##SUFFIX(const T* __restrict__ x,                 \
                                                  T* __restrict__ col, PARAMS) {          \
    im2col##V##_body<T>(x, col, CONV_ARGS);                                                \
  }                                                                                        \
  extern "C" __global__ void col2im##V##_##SUFFIX(const T* __restrict__ col,               \
                                                  T* __restrict__ x, PARAMS) {            \
    col2im##V##_body<T>(col, x, CONV_ARGS);                                                \
  }

#define CONV_ENTRY_POINTS(SUFFIX, T)                     \
  CONV_ENTRY_POINTS_OF(, CONV_PARAMS, SUFFIX, T)         \
  CONV_ENTRY_POINTS_OF(_i32, CONV_PARAMS_I32, SUFFIX, T)

CONV_ENTRY_POINTS(f32, float)
CONV_ENTRY_POINTS(f64, double)
#ifndef KERNELS_NO_FP16
CONV_ENTRY_POINTS(f16, __half)
#endif
