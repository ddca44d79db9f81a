// Convolution at stride 1 fused with 2x2 max pooling, for few input channels, on the CPU.
//
// XLA FFI handlers behind jaxnets.kernels.native (the Python side says when they run).
// Layouts are NHWC input, HWIO kernel. For every 2x2 pooling window the four convolution
// outputs are computed from the (KH+1) x (KW+1) input tile under the window and pooled at
// once, so the convolution output never reaches memory; the index of each window's first
// maximum (row-major, strict >) is kept for the backward pass. The backward pass has two
// handlers, so that XLA drops the input gradient where nothing reads it (a first layer).
//
// Each call splits the batch into one contiguous block of examples per thread of XLA's
// intra-op pool (split, in cpu_blocks.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "cpu_blocks.h"

namespace ffi = xla::ffi;
using jaxnets::pad_copy;
using jaxnets::split;

namespace {

// Largest kernel side (jaxnets.kernels.native.MAX_KERNEL_SIZE); larger kernels are refused.
constexpr int64_t kMaxKernel = 7;

// Where the tile of one pooling window starts, and the padded input it is cut from.
struct Geometry {
  int64_t n, h, w, ci, kh, kw, co;
  int64_t top, left, hp, wp, ph, pw;  // pads; padded size; pooled size

  Geometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k, int64_t pad_top,
           int64_t pad_bottom, int64_t pad_left, int64_t pad_right)
      : n(x[0]), h(x[1]), w(x[2]), ci(x[3]), kh(k[0]), kw(k[1]), co(k[3]),
        top(pad_top), left(pad_left), hp(x[1] + pad_top + pad_bottom),
        wp(x[2] + pad_left + pad_right), ph((hp - k[0] + 1) / 2), pw((wp - k[1] + 1) / 2) {}
};

// Copies example e of x into the zero-padded buffer `padded` (hp x wp x ci).
template <typename T>
void pad_example(const T* x, const Geometry& g, int64_t e, T* padded) {
  pad_copy(x + e * g.h * g.w * g.ci, g.h, g.w, g.ci, g.top, g.left, g.hp, g.wp, padded);
}

// Channel i of the input tile under pooling window (r, c): (kh + 1) x (kw + 1) values.
template <typename T>
inline void load_tile(const T* padded, const Geometry& g, int64_t r, int64_t c, int64_t i, T* tile) {
  for (int64_t u = 0; u <= g.kh; ++u)
    for (int64_t v = 0; v <= g.kw; ++v) tile[u * (g.kw + 1) + v] = padded[((2 * r + u) * g.wp + 2 * c + v) * g.ci + i];
}

// The four convolution outputs of pooling window (r, c), channels [0, CO), into out[j]. The
// sums stay in local arrays (registers), which the compiler cannot assume of `out`.
template <typename T, int CO>
inline void window_outputs(const T* padded, const T* k, const Geometry& g, int64_t r, int64_t c,
                           T (*out)[CO]) {
  T tile[(kMaxKernel + 1) * (kMaxKernel + 1)];
  T acc[4][CO] = {};
  for (int64_t i = 0; i < g.ci; ++i) {
    load_tile(padded, g, r, c, i, tile);
    for (int64_t a = 0; a < g.kh; ++a)
      for (int64_t b = 0; b < g.kw; ++b) {
        const T* kp = k + ((a * g.kw + b) * g.ci + i) * CO;
        const T* t = tile + a * (g.kw + 1) + b;
        const T v0 = t[0], v1 = t[1], v2 = t[g.kw + 1], v3 = t[g.kw + 2];
        for (int o = 0; o < CO; ++o) {
          acc[0][o] += v0 * kp[o];
          acc[1][o] += v1 * kp[o];
          acc[2][o] += v2 * kp[o];
          acc[3][o] += v3 * kp[o];
        }
      }
  }
  std::memcpy(out, acc, sizeof(acc));
}

template <typename T, int CO>
void forward_block(const T* x, const T* k, T* y, int8_t* index, const Geometry& g, int64_t first,
                   int64_t last) {
  std::vector<T> padded(g.hp * g.wp * g.ci);
  T acc[4][CO];
  for (int64_t e = first; e < last; ++e) {
    pad_example(x, g, e, padded.data());
    for (int64_t r = 0; r < g.ph; ++r)
      for (int64_t c = 0; c < g.pw; ++c) {
        window_outputs<T, CO>(padded.data(), k, g, r, c, acc);
        const int64_t at = ((e * g.ph + r) * g.pw + c) * CO;
        for (int o = 0; o < CO; ++o) {
          // The same rule as jaxnets.kernels.pooling: the index of the first strict
          // maximum, and a NaN anywhere in the window makes the pooled value NaN.
          T best = acc[0][o];
          int8_t chosen = 0;
          bool nan = std::isnan(best);
          for (int j = 1; j < 4; ++j) {
            nan |= std::isnan(acc[j][o]);
            if (acc[j][o] > best) { best = acc[j][o]; chosen = int8_t(j); }
          }
          y[at + o] = nan ? std::numeric_limits<T>::quiet_NaN() : best;
          index[at + o] = chosen;
        }
      }
  }
}

// dy placed at each window's first maximum: grad[j][o] for the window's four outputs.
template <typename T, int CO>
inline void window_gradient(const T* dy, const int8_t* index, int64_t at, T (*grad)[CO]) {
  for (int j = 0; j < 4; ++j)
    for (int o = 0; o < CO; ++o) grad[j][o] = index[at + o] == j ? dy[at + o] : T(0);
}

// Adds this block's kernel gradient into dk (kh x kw x ci x CO), one example's sum at a time.
template <typename T, int CO>
void kernel_gradient_block(const T* x, const T* dy, const int8_t* index, T* dk, const Geometry& g,
                           int64_t first, int64_t last) {
  const int64_t size = g.kh * g.kw * g.ci * CO;
  std::vector<T> padded(g.hp * g.wp * g.ci), example(size);
  T grad[4][CO], tile[(kMaxKernel + 1) * (kMaxKernel + 1)];
  for (int64_t e = first; e < last; ++e) {
    pad_example(x, g, e, padded.data());
    std::fill(example.begin(), example.end(), T(0));
    for (int64_t r = 0; r < g.ph; ++r)
      for (int64_t c = 0; c < g.pw; ++c) {
        window_gradient<T, CO>(dy, index, ((e * g.ph + r) * g.pw + c) * CO, grad);
        for (int64_t i = 0; i < g.ci; ++i) {
          load_tile(padded.data(), g, r, c, i, tile);
          for (int64_t a = 0; a < g.kh; ++a)
            for (int64_t b = 0; b < g.kw; ++b) {
              T* dkp = example.data() + ((a * g.kw + b) * g.ci + i) * CO;
              const T* t = tile + a * (g.kw + 1) + b;
              const T v0 = t[0], v1 = t[1], v2 = t[g.kw + 1], v3 = t[g.kw + 2];
              for (int o = 0; o < CO; ++o)
                dkp[o] += v0 * grad[0][o] + v1 * grad[1][o] + v2 * grad[2][o] + v3 * grad[3][o];
            }
        }
      }
    for (int64_t s = 0; s < size; ++s) dk[s] += example[s];
  }
}

template <typename T, int CO>
void input_gradient_block(const T* k, const T* dy, const int8_t* index, T* dx, const Geometry& g,
                          int64_t first, int64_t last) {
  std::vector<T> padded(g.hp * g.wp * g.ci);
  T grad[4][CO];
  for (int64_t e = first; e < last; ++e) {
    std::fill(padded.begin(), padded.end(), T(0));
    for (int64_t r = 0; r < g.ph; ++r)
      for (int64_t c = 0; c < g.pw; ++c) {
        window_gradient<T, CO>(dy, index, ((e * g.ph + r) * g.pw + c) * CO, grad);
        for (int64_t a = 0; a < g.kh; ++a)
          for (int64_t b = 0; b < g.kw; ++b)
            for (int64_t i = 0; i < g.ci; ++i) {
              const T* kp = k + ((a * g.kw + b) * g.ci + i) * CO;
              for (int j = 0; j < 4; ++j) {
                T sum = T(0);
                for (int o = 0; o < CO; ++o) sum += grad[j][o] * kp[o];
                padded[((2 * r + j / 2 + a) * g.wp + 2 * c + j % 2 + b) * g.ci + i] += sum;
              }
            }
      }
    for (int64_t i = 0; i < g.h; ++i)  // the padding's gradient is dropped
      std::memcpy(dx + (e * g.h + i) * g.w * g.ci, padded.data() + ((i + g.top) * g.wp + g.left) * g.ci,
                  g.w * g.ci * sizeof(T));
  }
}

// Calls body.template operator()<CO>() for the shapes compiled here, else refuses the call.
template <typename Body>
ffi::Error by_channels(const Geometry& g, const Body& body) {
  if (g.kh > kMaxKernel || g.kw > kMaxKernel)
    return ffi::Error::InvalidArgument("conv_pool: kernel sides must be at most 7");
  switch (g.co) {
    case 8: body.template operator()<8>(); break;
    case 16: body.template operator()<16>(); break;
    case 32: body.template operator()<32>(); break;
    case 64: body.template operator()<64>(); break;
    default:
      return ffi::Error::InvalidArgument("conv_pool: output channels must be 8, 16, 32 or 64");
  }
  return ffi::Error::Success();
}

template <ffi::DataType D>
ffi::Error forward(ffi::ThreadPool pool, ffi::Buffer<D> x, ffi::Buffer<D> k, ffi::ResultBuffer<D> y,
                   ffi::ResultBuffer<ffi::S8> index, int64_t pad_top, int64_t pad_bottom,
                   int64_t pad_left, int64_t pad_right) {
  using T = ffi::NativeType<D>;
  const Geometry g(x.dimensions(), k.dimensions(), pad_top, pad_bottom, pad_left, pad_right);
  return by_channels(g, [&]<int CO>() {
    split(pool, g.n, [&](int64_t, int64_t first, int64_t last) {
      forward_block<T, CO>(x.typed_data(), k.typed_data(), y->typed_data(), index->typed_data(), g,
                           first, last);
    });
  });
}

template <ffi::DataType D>
ffi::Error kernel_gradient(ffi::ThreadPool pool, ffi::Buffer<D> x, ffi::Buffer<D> dy,
                           ffi::Buffer<ffi::S8> index, ffi::ResultBuffer<D> dk, int64_t pad_top,
                           int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  using T = ffi::NativeType<D>;
  const Geometry g(x.dimensions(), dk->dimensions(), pad_top, pad_bottom, pad_left, pad_right);
  return by_channels(g, [&]<int CO>() {
    jaxnets::split_and_sum(pool, g.n, g.kh * g.kw * g.ci * g.co, dk->typed_data(),
                           [&](T* block_sum, int64_t first, int64_t last) {
      kernel_gradient_block<T, CO>(x.typed_data(), dy.typed_data(), index.typed_data(), block_sum, g, first, last);
    });
  });
}

template <ffi::DataType D>
ffi::Error input_gradient(ffi::ThreadPool pool, ffi::Buffer<D> k, ffi::Buffer<D> dy,
                          ffi::Buffer<ffi::S8> index, ffi::ResultBuffer<D> dx, int64_t pad_top,
                          int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  using T = ffi::NativeType<D>;
  const Geometry g(dx->dimensions(), k.dimensions(), pad_top, pad_bottom, pad_left, pad_right);
  return by_channels(g, [&]<int CO>() {
    split(pool, g.n, [&](int64_t, int64_t first, int64_t last) {
      input_gradient_block<T, CO>(k.typed_data(), dy.typed_data(), index.typed_data(), dx->typed_data(),
                                  g, first, last);
    });
  });
}

}  // namespace

#define JAXNETS_HANDLERS(SUFFIX, D)                                                                           \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvPoolForward##SUFFIX, forward<D>, JAXNETS_BIND_FORWARD(D));                \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvPoolKernelGradient##SUFFIX, kernel_gradient<D>, JAXNETS_BIND_GRADIENT(D)); \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvPoolInputGradient##SUFFIX, input_gradient<D>, JAXNETS_BIND_GRADIENT(D));

JAXNETS_HANDLERS(F32, ffi::F32)
JAXNETS_HANDLERS(F64, ffi::F64)
