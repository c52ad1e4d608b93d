// Helpers shared by the CPU kernels (not by raster_kernels.cpp, which includes no C++ library template
// header).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"

// Attributes compiling a function for an x86-64 level (on other CPUs, for the baseline): a kernel built
// per level wraps one always-inline body in a function of each (PerLevel), and for_simd_level picks the one
// to run.
#if defined(__x86_64__)
#define GS_TARGET_X86_64_V4 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#define GS_TARGET_X86_64_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define GS_TARGET_X86_64_V4
#define GS_TARGET_X86_64_V3
#endif

namespace gsplat_py::cpu {

// The build of the level the rasterizer kernels run (simd_level(); GSPLAT_PY_SIMD lowers every kernel
// alike). GCC fuses a * b + c into an fma in C++ (even with -std=c++20) where the level has one: a file
// whose levels must give the same bits says `#pragma GCC optimize("fp-contract=off")` (ssim.cpp,
// spherical_harmonics.cpp); the rasterizer kernels' levels differ by that rounding.
template <typename F>
F for_simd_level(F x86_64_v4, F x86_64_v3, F baseline) {
    const char* level = simd_level();
    if (std::strcmp(level, "x86-64-v4") == 0) return x86_64_v4;
    if (std::strcmp(level, "x86-64-v3") == 0) return x86_64_v3;
    return baseline;
}

// The kernel `Body` (an always-inline function of the function-pointer type Pointer) compiled once per
// level: PerLevel<Pointer, Body>::at_level() is the build of the level in use. Each build inlines Body, so
// its loops are vectorised for that level.
template <typename Pointer, auto Body>
struct PerLevel;

template <typename R, typename... Args, R (*Body)(Args...)>
struct PerLevel<R (*)(Args...), Body> {
    static R baseline(Args... args) { return Body(args...); }
    GS_TARGET_X86_64_V3 static R x86_64_v3(Args... args) { return Body(args...); }
    GS_TARGET_X86_64_V4 static R x86_64_v4(Args... args) { return Body(args...); }
    static R (*at_level())(Args...) { return for_simd_level<R (*)(Args...)>(x86_64_v4, x86_64_v3, baseline); }
};

// f(begin, end) over [0, count), one contiguous range per OpenMP thread (at::parallel_for's split), on
// at most n_threads threads of at least `grain` items each; on the calling thread when one will do
// (waking the pool would cost more than it saves). Each range runs in f, a function of its own: GCC
// optimises a loop there better than the body of an `omp for` (the projection forward ran 18% more
// instructions and took 1.5x the time as an `omp for` loop).
// How many threads parallel_for gives `count` items with at least `grain` each.
inline int range_count(int64_t count, int64_t grain, int n_threads) {
    return int(std::clamp<int64_t>((count + grain - 1) / grain, 1, std::max(n_threads, 1)));
}

template <typename F>
void parallel_for(int64_t count, int64_t grain, int n_threads, const F& f) {
    if (count <= 0) return;
    const int threads = range_count(count, grain, n_threads);
    if (threads == 1) return f(int64_t(0), count);
#pragma omp parallel num_threads(threads)
    {
        const int64_t per_thread = (count + omp_get_num_threads() - 1) / omp_get_num_threads();
        const int64_t begin = omp_get_thread_num() * per_thread;
        if (begin < count) f(begin, std::min(count, begin + per_thread));
    }
}

}  // namespace gsplat_py::cpu

namespace gsplat_py::cpu {

// f(r, begin, end) for the n_ranges contiguous ranges of [0, count), range r being
// [r * per, min(count, (r + 1) * per)) with per = ceil(count / n_ranges), each on its own OpenMP thread:
// a kernel that collects results per range can concatenate them in range order, which is the order of
// [0, count) whatever the number of ranges.
template <typename F>
void parallel_ranges(int64_t count, int n_ranges, const F& f) {
    if (count <= 0) return;
    const int64_t per = (count + n_ranges - 1) / n_ranges;
    if (n_ranges == 1) return f(0, int64_t(0), count);
#pragma omp parallel for num_threads(n_ranges) schedule(static, 1)
    for (int r = 0; r < n_ranges; ++r) {
        const int64_t begin = r * per;
        if (begin < count) f(r, begin, std::min(count, begin + per));
    }
}

// (Camera, Gaussian) pairs per projection thread at least.
constexpr int64_t kProjectionGrain = 1024;

// Gaussians (unpacked) or entries (packed) per chunk when reducing the gradients of the cameras: a fixed
// size (not one per thread) so the sum is the same for any thread count.
constexpr int64_t kCameraGradChunk = 2048;

// Adds one partial sum of a camera's gradients (kCameraGradSlots) to its viewmat and K gradients.
template <typename T>
void add_camera_grads(const T* slots, T* v_viewmat, T* v_K) {
    for (int k = 0; k < kViewmatGradSlots; ++k) v_viewmat[k] += slots[k];
    for (int i = 0; i < kIntrinsics; ++i) v_K[K_index_of_intrinsic(i)] += slots[kViewmatGradSlots + i];
}

// The backward of an unpacked projection of B batches of N Gaussians into their C cameras, in blocks of at
// most `block` Gaussians: vjp_block(b, c, n_begin, n_end, camera_slots) for each block of batch b and each
// camera c in order (so each Gaussian's cameras come in order, on one thread, and its gradient rows need no
// lock), with the cameras' gradients (kCameraGradSlots: the viewmat, then fx, fy, cx, cy) summed per chunk
// of Gaussians and then in chunk order into v_viewmats and v_Ks (null: not wanted, and camera_slots is a
// scratch buffer), the same bits for any thread count.
template <typename T, typename VjpBlock>
void projection_backward_blocks(int64_t B, int64_t C, int64_t N, int n_threads, int64_t block, T* v_viewmats,
                                T* v_Ks, const VjpBlock& vjp_block) {
    const bool camera_grads = v_viewmats != nullptr;
    const int64_t chunks_per_batch = (N + kCameraGradChunk - 1) / kCameraGradChunk;
    const int64_t n_chunks = B * chunks_per_batch;
    std::vector<T> partial(camera_grads ? size_t(n_chunks * C * kCameraGradSlots) : 0, T(0));
    parallel_for(n_chunks, 1, n_threads, [&](int64_t chunk_begin, int64_t chunk_end) {
        T discarded[kCameraGradSlots];
        for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
            const int64_t b = chunk / chunks_per_batch;
            const int64_t n_begin = (chunk % chunks_per_batch) * kCameraGradChunk;
            const int64_t n_end = std::min(N, n_begin + kCameraGradChunk);
            for (int64_t n = n_begin; n < n_end; n += block)
                for (int64_t c = 0; c < C; ++c)  // cameras in order: a fixed sum order per Gaussian
                    vjp_block(b, c, n, std::min(n_end, n + block),
                              camera_grads ? partial.data() + (chunk * C + c) * kCameraGradSlots : discarded);
        }
    });
    if (!camera_grads) return;
    for (int64_t image = 0; image < B * C; ++image) {
        const int64_t b = image / C, c = image % C;
        for (int64_t k = 0; k < chunks_per_batch; ++k) {
            add_camera_grads(partial.data() + ((b * chunks_per_batch + k) * C + c) * kCameraGradSlots,
                             v_viewmats + 16 * image, v_Ks + 9 * image);
        }
    }
}

// The same a pair at a time: vjp(gauss, image, pair, camera_slots) for every visible pair (visible(pair)).
template <typename T, typename Visible, typename Vjp>
void projection_backward_pairs(int64_t B, int64_t C, int64_t N, int n_threads, T* v_viewmats, T* v_Ks,
                               const Visible& visible, const Vjp& vjp) {
    projection_backward_blocks(B, C, N, n_threads, 1, v_viewmats, v_Ks,
                               [&](int64_t b, int64_t c, int64_t n, int64_t, T* camera_slots) {
                                   const int64_t image = b * C + c, pair = image * N + n;
                                   if (visible(pair)) vjp(b * N + n, image, pair, camera_slots);
                               });
}

// out[target(i) * width + j] += rows[i * width + j] for the `count` rows, in row order for every value
// (so the sums are the same for any thread count), a column j per task.
template <typename T, typename Target>
void scatter_add_rows(const T* rows, int64_t count, int width, const Target& target, T* out, int n_threads) {
    parallel_for(width, 1, n_threads, [&](int64_t j_begin, int64_t j_end) {
        for (int64_t j = j_begin; j < j_end; ++j)
            for (int64_t i = 0; i < count; ++i) out[target(i) * width + j] += rows[i * width + j];
    });
}

}  // namespace gsplat_py::cpu
