// What the CPU kernels' FFI handlers share: zero padding and splitting a batch over XLA's threads.
#ifndef JAXNETS_KERNELS_CPU_BLOCKS_H_
#define JAXNETS_KERNELS_CPU_BLOCKS_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace jaxnets {

// Copies one h x w x c example into the zero-padded hp x wp x c buffer `padded`, its top left
// corner at (top, left).
template <typename T>
void pad_copy(const T* example, int64_t h, int64_t w, int64_t c, int64_t top, int64_t left, int64_t hp,
              int64_t wp, T* padded) {
  std::fill(padded, padded + hp * wp * c, T(0));
  for (int64_t i = 0; i < h; ++i)
    std::memcpy(padded + ((i + top) * wp + left) * c, example + i * w * c, w * c * sizeof(T));
}

// The number of blocks `split` makes of `count` items.
inline int64_t split_parts(xla::ffi::ThreadPool& pool, int64_t count) {
  return std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), count));
}

// Splits [0, count) into one contiguous block per thread of XLA's intra-op pool and runs
// work(block, first, last) on each. A thread keeps to its block through the whole call, so the
// data it touches stays in its CPU's caches (XLA's own operations are split afresh each time).
// The caller takes blocks too, so the call finishes even when no pool thread is free.
template <typename Work>
void split(xla::ffi::ThreadPool& pool, int64_t count, const Work& work) {
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mutex;
    std::condition_variable finished;
  };
  const int64_t parts = split_parts(pool, count);
  auto shared = std::make_shared<Shared>();
  auto run_blocks = [shared, parts, count, &work] {
    for (int64_t p; (p = shared->next.fetch_add(1)) < parts;) {
      work(p, count * p / parts, count * (p + 1) / parts);
      if (shared->done.fetch_add(1) + 1 == parts) {
        std::lock_guard<std::mutex> lock(shared->mutex);
        shared->finished.notify_all();
      }
    }
  };
  // A pool task may start after this call returned: it then finds no block and touches
  // only `shared`, which it owns a reference to; `work` is read only for a block it took.
  for (int64_t p = 1; p < parts; ++p) pool.Schedule([run_blocks] { run_blocks(); });
  run_blocks();
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->finished.wait(lock, [&] { return shared->done.load() == parts; });
}

// split for a sum over examples: work(block_sum, first, last) adds its block's share into
// block_sum (size zeroed values); out is then the blocks' sums added in block order, so the
// result does not depend on which thread ran which block.
template <typename T, typename Work>
void split_and_sum(xla::ffi::ThreadPool& pool, int64_t count, int64_t size, T* out, const Work& work) {
  std::vector<T> sums(split_parts(pool, count) * size, T(0));
  split(pool, count, [&](int64_t block, int64_t first, int64_t last) { work(sums.data() + block * size, first, last); });
  std::fill(out, out + size, T(0));
  for (size_t at = 0; at < sums.size(); at += size)
    for (int64_t s = 0; s < size; ++s) out[s] += sums[at + s];
}

}  // namespace jaxnets

// The bindings of the handlers' signatures. Every handler takes XLA's thread pool first and the
// explicit zero padding last, as four integer attributes; a forward pass takes (input, kernel)
// and returns (pooled output, index of each window's first maximum); a gradient of the first
// layer takes (one array, dy, index) and returns one array.
#define JAXNETS_BIND_FORWARD(D)                                                                         \
  xla::ffi::Ffi::Bind()                                                                                 \
      .Ctx<xla::ffi::ThreadPool>()                                                                      \
      .Arg<xla::ffi::Buffer<D>>()                                                                       \
      .Arg<xla::ffi::Buffer<D>>()                                                                       \
      .Ret<xla::ffi::Buffer<D>>()                                                                       \
      .Ret<xla::ffi::Buffer<xla::ffi::S8>>() JAXNETS_PADS
#define JAXNETS_BIND_GRADIENT(D)                                                                        \
  xla::ffi::Ffi::Bind()                                                                                 \
      .Ctx<xla::ffi::ThreadPool>()                                                                      \
      .Arg<xla::ffi::Buffer<D>>()                                                                       \
      .Arg<xla::ffi::Buffer<D>>()                                                                       \
      .Arg<xla::ffi::Buffer<xla::ffi::S8>>()                                                            \
      .Ret<xla::ffi::Buffer<D>>() JAXNETS_PADS
#define JAXNETS_PADS                                                                              \
  .Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom").Attr<int64_t>("pad_left").Attr<int64_t>( \
      "pad_right")

#endif  // JAXNETS_KERNELS_CPU_BLOCKS_H_
