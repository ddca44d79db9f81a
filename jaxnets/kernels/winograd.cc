// A 3x3 convolution at stride 1 fused with 2x2 max pooling by Winograd's F(2x2, 3x3), on the CPU.
//
// XLA FFI handlers behind jaxnets.kernels.native; the algorithm and its notation are those of
// jaxnets/kernels/winograd.py (V = B^T d B, M[xi] = V[xi] U[xi], Y = A^T M A). Where the JAX
// version runs every step as its own pass over the whole chunk of examples, these run all the
// steps for a group of tiles of one example while the group is in cache: input transform, the
// 16 products, output transform and pooling; and backward, dM from dy at the first maxima, dU
// += V^T dM, dV = dM U^T and the input gradient's tiles added back where they overlap. The
// kernel's transforms (U = G g G^T and dW = G^T dU G) stay in JAX: they are tiny.
//
// Channels are handled as vectors of the target's widest width (GCC/Clang vector extensions:
// 64 bytes with AVX-512, 32 with AVX, 16 otherwise), so the channel counts must be 1, 2, 4, 8 or 16
// such vectors (native.py checks, asking jaxnets_vector_bytes). Each call gives every thread of XLA's pool one block of
// examples (split, in cpu_blocks.h); the kernel gradient is summed per block, then in block order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "cpu_blocks.h"

namespace ffi = xla::ffi;

namespace {

// The widest vectors this build's target has, and how many of them it keeps in registers: a
// wider vector type than the hardware's would be split and spilled by the compiler.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64, kRegisters = 32;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32, kRegisters = 16;
#elif defined(__aarch64__)
constexpr int kVectorBytes = 16, kRegisters = 32;
#else
constexpr int kVectorBytes = 16, kRegisters = 16;
#endif

template <typename T> struct Lanes;
template <> struct Lanes<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
  typedef int32_t mask __attribute__((vector_size(kVectorBytes)));  // what comparing two vectors gives
  typedef int8_t bytes __attribute__((vector_size(kVectorBytes / 4)));  // the pooling indices of one vector
};
template <> struct Lanes<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
  typedef int64_t mask __attribute__((vector_size(kVectorBytes)));
  typedef int8_t bytes __attribute__((vector_size(kVectorBytes / 8)));
};
template <typename T> using Vec = typename Lanes<T>::type;
template <typename T> using Mask = typename Lanes<T>::mask;
template <typename T> using Bytes = typename Lanes<T>::bytes;
template <typename T> constexpr int64_t kLanes = kVectorBytes / sizeof(T);

template <typename T> inline Vec<T> load(const T* p) { Vec<T> v; std::memcpy(&v, p, sizeof(v)); return v; }
template <typename T> inline void store(T* p, const Vec<T>& v) { std::memcpy(p, &v, sizeof(v)); }

// Tiles of one example processed together: their transformed input and output stay in cache.
constexpr int64_t kGroup = 32;

struct Geometry {
  int64_t n, h, w, ci, co, top, left, hp, wp, th, tw;

  Geometry(ffi::Span<const int64_t> x, int64_t co, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
           int64_t pad_right)
      : n(x[0]), h(x[1]), w(x[2]), ci(x[3]), co(co), top(pad_top), left(pad_left),
        hp(x[1] + pad_top + pad_bottom), wp(x[2] + pad_left + pad_right),
        th((hp - 2) / 2), tw((wp - 2) / 2) {}
  int64_t tiles() const { return th * tw; }
};

// C[r][0, NV lanes) = (C +) sum_k A[r * a_row + k * a_k] * B[k * b_row + (0, NV lanes)], r < R:
// R rows of a matrix product with the sums in registers (R x NV vectors).
template <typename T, int R, int NV>
inline void rows_times(const T* a, int64_t a_row, int64_t a_k, const T* b, int64_t b_row, int64_t depth, T* c,
                       int64_t c_row, bool add) {
  Vec<T> acc[R][NV] = {};
  for (int64_t k = 0; k < depth; ++k) {
    Vec<T> bk[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bk[j] = load(b + k * b_row + j * kLanes<T>);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const T ar = a[r * a_row + k * a_k];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[r][j] += ar * bk[j];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      T* out = c + r * c_row + j * kLanes<T>;
      store(out, add ? load(out) + acc[r][j] : acc[r][j]);
    }
}

// The whole product C (rows x NV vectors) = (C +) A B: blocks of 6 rows and of as many columns
// as leave registers for the row's broadcast and the columns' loads.
template <typename T, int NV>
void times(const T* a, int64_t a_row, int64_t a_k, const T* b, int64_t b_row, int64_t depth, T* c, int64_t c_row,
           int64_t rows, bool add) {
  constexpr int R = 6, NB = std::min(NV, kRegisters == 32 ? 4 : 2);
  for (int j = 0; j < NV; j += NB) {
    const T* bj = b + j * kLanes<T>;
    T* cj = c + j * kLanes<T>;
    int64_t r = 0;
    for (; r + R <= rows; r += R)
      rows_times<T, R, NB>(a + r * a_row, a_row, a_k, bj, b_row, depth, cj + r * c_row, c_row, add);
    for (; r < rows; ++r) rows_times<T, 1, NB>(a + r * a_row, a_row, a_k, bj, b_row, depth, cj + r * c_row, c_row, add);
  }
}

// Runs body.template operator()<NV>() with NV = vectors per row of `channels` (1, 2, 4, 8 or 16).
// jaxnets.kernels.native.whole_vectors asks the library for its vector width.
template <typename T, typename Body>
bool by_vectors(int64_t channels, const Body& body) {
  switch (channels / kLanes<T>) {
    case 1: body.template operator()<1>(); return true;
    case 2: body.template operator()<2>(); return true;
    case 4: body.template operator()<4>(); return true;
    case 8: body.template operator()<8>(); return true;
    case 16: body.template operator()<16>(); return true;
    default: return false;
  }
}

// V[xi][t] = (B^T d B)[xi] for tiles [t0, t0 + count) of the padded example: (16, count, ci).
template <typename T>
void input_tiles(const T* padded, const Geometry& g, int64_t t0, int64_t count, T* v) {
  const int64_t L = kLanes<T>;
  for (int64_t t = 0; t < count; ++t) {
    const int64_t r = (t0 + t) / g.tw, c = (t0 + t) % g.tw;
    for (int64_t i = 0; i < g.ci; i += L) {
      Vec<T> d[4][4], half[4][4];
      for (int u = 0; u < 4; ++u)
        for (int x = 0; x < 4; ++x) d[u][x] = load(padded + ((2 * r + u) * g.wp + 2 * c + x) * g.ci + i);
      for (int x = 0; x < 4; ++x) {  // rows: B^T d
        half[0][x] = d[0][x] - d[2][x];
        half[1][x] = d[1][x] + d[2][x];
        half[2][x] = d[2][x] - d[1][x];
        half[3][x] = d[1][x] - d[3][x];
      }
      for (int p = 0; p < 4; ++p) {  // columns: (B^T d) B
        const Vec<T> e[4] = {half[p][0] - half[p][2], half[p][1] + half[p][2], half[p][2] - half[p][1],
                             half[p][1] - half[p][3]};
        for (int q = 0; q < 4; ++q) store(v + ((4 * p + q) * count + t) * g.ci + i, e[q]);
      }
    }
  }
}

// Y = A^T M A for tile t, then the pooled maximum and the index of the first maximum, a vector
// of output channels at a time.
template <typename T>
void pool_outputs(const T* m, const Geometry& g, int64_t count, int64_t t, T* y, int8_t* index) {
  for (int64_t o = 0; o < g.co; o += kLanes<T>) {
    Vec<T> s[16];
    for (int xi = 0; xi < 16; ++xi) s[xi] = load(m + (xi * count + t) * g.co + o);
    Vec<T> half[2][4];
    for (int x = 0; x < 4; ++x) {
      half[0][x] = s[x] + s[4 + x] + s[8 + x];
      half[1][x] = s[4 + x] - s[8 + x] - s[12 + x];
    }
    const Vec<T> out[4] = {half[0][0] + half[0][1] + half[0][2], half[0][1] - half[0][2] - half[0][3],
                           half[1][0] + half[1][1] + half[1][2], half[1][1] - half[1][2] - half[1][3]};
    // The rule of jaxnets.kernels.pooling: first strict maximum; a NaN makes the value NaN.
    Vec<T> best = out[0];
    Mask<T> chosen = {}, nan = out[0] != out[0];
    for (int j = 1; j < 4; ++j) {
      const Mask<T> later = out[j] > best;
      best = later ? out[j] : best;
      chosen = later ? chosen - chosen + j : chosen;
      nan |= out[j] != out[j];
    }
    store(y + o, nan ? best - best + std::numeric_limits<T>::quiet_NaN() : best);
    const Bytes<T> bytes = __builtin_convertvector(chosen, Bytes<T>);
    std::memcpy(index + o, &bytes, sizeof(bytes));
  }
}

template <typename T, int NV>
void forward_block(const T* x, const T* u, T* y, int8_t* index, const Geometry& g, int64_t first, int64_t last) {
  std::vector<T> padded(g.hp * g.wp * g.ci), v(16 * kGroup * g.ci), m(16 * kGroup * g.co);
  for (int64_t e = first; e < last; ++e) {
    jaxnets::pad_copy(x + e * g.h * g.w * g.ci, g.h, g.w, g.ci, g.top, g.left, g.hp, g.wp, padded.data());
    for (int64_t t0 = 0; t0 < g.tiles(); t0 += kGroup) {
      const int64_t count = std::min(kGroup, g.tiles() - t0);
      input_tiles(padded.data(), g, t0, count, v.data());
      for (int xi = 0; xi < 16; ++xi)  // M[xi] = V[xi] U[xi]
        times<T, NV>(v.data() + xi * count * g.ci, g.ci, 1, u + xi * g.ci * g.co, g.co, g.ci,
                     m.data() + xi * count * g.co, g.co, count, false);
      for (int64_t t = 0; t < count; ++t) {
        const int64_t at = (e * g.tiles() + t0 + t) * g.co;
        pool_outputs(m.data(), g, count, t, y + at, index + at);
      }
    }
  }
}

// dM = A dY A^T for tiles [t0, t0 + count), dY = dy at each window's first maximum: (16, count, co).
template <typename T>
void output_gradient(const T* dy, const int8_t* index, const Geometry& g, int64_t e, int64_t t0, int64_t count,
                     T* dm) {
  for (int64_t t = 0; t < count; ++t) {
    const int64_t at = (e * g.tiles() + t0 + t) * g.co;
    for (int64_t o = 0; o < g.co; o += kLanes<T>) {
      Bytes<T> bytes;
      std::memcpy(&bytes, index + at + o, sizeof(bytes));
      const Mask<T> chosen = __builtin_convertvector(bytes, Mask<T>);
      const Vec<T> grad = load(dy + at + o), zero = {};
      Vec<T> b[4];
      for (int j = 0; j < 4; ++j) b[j] = chosen == j ? grad : zero;
      // Column-wise A^T applied to dY (2 x 2 -> 2 x 4), then row-wise (-> 4 x 4).
      const Vec<T> col[2][4] = {{b[0], b[0] + b[1], b[0] - b[1], -b[1]}, {b[2], b[2] + b[3], b[2] - b[3], -b[3]}};
      for (int x = 0; x < 4; ++x) {
        const Vec<T> rows[4] = {col[0][x], col[0][x] + col[1][x], col[0][x] - col[1][x], -col[1][x]};
        for (int p = 0; p < 4; ++p) store(dm + ((4 * p + x) * count + t) * g.co + o, rows[p]);
      }
    }
  }
}

// Adds each tile's B dV B^T into the padded input gradient of its example.
template <typename T>
void add_input_tiles(const T* dv, const Geometry& g, int64_t t0, int64_t count, T* dpadded) {
  const int64_t L = kLanes<T>;
  for (int64_t t = 0; t < count; ++t) {
    const int64_t r = (t0 + t) / g.tw, c = (t0 + t) % g.tw;
    for (int64_t i = 0; i < g.ci; i += L) {
      Vec<T> s[4][4], half[4][4];
      for (int p = 0; p < 4; ++p)
        for (int q = 0; q < 4; ++q) s[p][q] = load(dv + ((4 * p + q) * count + t) * g.ci + i);
      for (int q = 0; q < 4; ++q) {  // rows: B dV (the transpose of B^T's rows)
        half[0][q] = s[0][q];
        half[1][q] = s[1][q] - s[2][q] + s[3][q];
        half[2][q] = s[1][q] + s[2][q] - s[0][q];
        half[3][q] = -s[3][q];
      }
      for (int u = 0; u < 4; ++u) {  // columns: (B dV) B^T
        const Vec<T> d[4] = {half[u][0], half[u][1] - half[u][2] + half[u][3], half[u][1] + half[u][2] - half[u][0],
                             -half[u][3]};
        for (int x = 0; x < 4; ++x) {
          T* at = dpadded + ((2 * r + u) * g.wp + 2 * c + x) * g.ci + i;
          store(at, load(at) + d[x]);
        }
      }
    }
  }
}

template <typename T, int NVO, int NVI>
void backward_block(const T* x, const T* dy, const int8_t* index, const T* u_t, T* du, T* dx, const Geometry& g,
                    int64_t first, int64_t last) {
  std::vector<T> padded(g.hp * g.wp * g.ci), dpadded(g.hp * g.wp * g.ci);
  std::vector<T> v(16 * kGroup * g.ci), dm(16 * kGroup * g.co), dv(16 * kGroup * g.ci);
  for (int64_t e = first; e < last; ++e) {
    jaxnets::pad_copy(x + e * g.h * g.w * g.ci, g.h, g.w, g.ci, g.top, g.left, g.hp, g.wp, padded.data());
    std::fill(dpadded.begin(), dpadded.end(), T(0));
    for (int64_t t0 = 0; t0 < g.tiles(); t0 += kGroup) {
      const int64_t count = std::min(kGroup, g.tiles() - t0);
      input_tiles(padded.data(), g, t0, count, v.data());
      output_gradient(dy, index, g, e, t0, count, dm.data());
      for (int xi = 0; xi < 16; ++xi) {
        // dU[xi] += V[xi]^T dM[xi]: rows are input channels, the sum runs over tiles.
        times<T, NVO>(v.data() + xi * count * g.ci, 1, g.ci, dm.data() + xi * count * g.co, g.co, count,
                      du + xi * g.ci * g.co, g.co, g.ci, true);
        // dV[xi] = dM[xi] U[xi]^T
        times<T, NVI>(dm.data() + xi * count * g.co, g.co, 1, u_t + xi * g.co * g.ci, g.ci, g.co,
                      dv.data() + xi * count * g.ci, g.ci, count, false);
      }
      add_input_tiles(dv.data(), g, t0, count, dpadded.data());
    }
    for (int64_t i = 0; i < g.h; ++i)  // the padding's gradient is dropped
      std::memcpy(dx + (e * g.h + i) * g.w * g.ci, dpadded.data() + ((i + g.top) * g.wp + g.left) * g.ci,
                  g.w * g.ci * sizeof(T));
  }
}

ffi::Error unsupported() {
  return ffi::Error::InvalidArgument("winograd: channel counts must be 1, 2, 4, 8 or 16 vectors (jaxnets_vector_bytes)");
}

template <ffi::DataType D>
ffi::Error forward(ffi::ThreadPool pool, ffi::Buffer<D> x, ffi::Buffer<D> u, ffi::ResultBuffer<D> y,
                   ffi::ResultBuffer<ffi::S8> index, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                   int64_t pad_right) {
  using T = ffi::NativeType<D>;
  const Geometry g(x.dimensions(), u.dimensions()[2], pad_top, pad_bottom, pad_left, pad_right);
  if (g.ci % kLanes<T> != 0) return unsupported();
  const bool ok = by_vectors<T>(g.co, [&]<int NV>() {
    jaxnets::split(pool, g.n, [&](int64_t, int64_t first, int64_t last) {
      forward_block<T, NV>(x.typed_data(), u.typed_data(), y->typed_data(), index->typed_data(), g, first, last);
    });
  });
  return ok ? ffi::Error::Success() : unsupported();
}

template <ffi::DataType D>
ffi::Error backward(ffi::ThreadPool pool, ffi::Buffer<D> x, ffi::Buffer<D> dy, ffi::Buffer<ffi::S8> index,
                    ffi::Buffer<D> u_t, ffi::ResultBuffer<D> du, ffi::ResultBuffer<D> dx, int64_t pad_top,
                    int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  using T = ffi::NativeType<D>;
  const Geometry g(x.dimensions(), u_t.dimensions()[1], pad_top, pad_bottom, pad_left, pad_right);
  bool ok = false;
  by_vectors<T>(g.co, [&]<int NVO>() {
    ok = by_vectors<T>(g.ci, [&]<int NVI>() {
      jaxnets::split_and_sum(pool, g.n, 16 * g.ci * g.co, du->typed_data(),
                             [&](T* block_sum, int64_t first, int64_t last) {
        backward_block<T, NVO, NVI>(x.typed_data(), dy.typed_data(), index.typed_data(), u_t.typed_data(), block_sum,
                                    dx->typed_data(), g, first, last);
      });
    });
  });
  if (!ok) return unsupported();
  return ffi::Error::Success();
}

}  // namespace

// The vector width this build uses, for the Python side's channel check.
extern "C" int jaxnets_vector_bytes() { return kVectorBytes; }

#define JAXNETS_WINOGRAD_HANDLERS(SUFFIX, D)                                            \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(WinogradForward##SUFFIX, forward<D>, JAXNETS_BIND_FORWARD(D)); \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(WinogradBackward##SUFFIX, backward<D>,                          \
                                ffi::Ffi::Bind()                                                \
                                    .Ctx<ffi::ThreadPool>()                                     \
                                    .Arg<ffi::Buffer<D>>() /* x */                              \
                                    .Arg<ffi::Buffer<D>>() /* dy */                             \
                                    .Arg<ffi::Buffer<ffi::S8>>() /* index */                    \
                                    .Arg<ffi::Buffer<D>>() /* U^T */                            \
                                    .Ret<ffi::Buffer<D>>() /* dU */                             \
                                    .Ret<ffi::Buffer<D>>() /* dx */ JAXNETS_PADS);

JAXNETS_WINOGRAD_HANDLERS(F32, ffi::F32)
JAXNETS_WINOGRAD_HANDLERS(F64, ffi::F64)
