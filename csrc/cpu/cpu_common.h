// Helpers shared by the CPU kernels (not by raster_kernels.cpp, which includes no C++ library template
// header).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels.h"

// Attributes compiling a function for an x86-64 level (on other CPUs, for the baseline): a kernel built
// per level wraps one always-inline body in a function of each, and for_simd_level picks the one to run.
#if defined(__x86_64__)
#define GS_TARGET_X86_64_V4 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#define GS_TARGET_X86_64_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define GS_TARGET_X86_64_V4
#define GS_TARGET_X86_64_V3
#endif

namespace gsplat_py::cpu {

// The build of the level the rasterizer kernels run (simd_level(); GSPLAT_PY_SIMD lowers every kernel
// alike). Without -ffast-math (and with -std=c++20, GCC contracts no a * b + c into an fma), every build
// rounds every operation the same way: the level changes the speed, not the result.
template <typename F>
F for_simd_level(F x86_64_v4, F x86_64_v3, F baseline) {
    const char* level = simd_level();
    if (std::strcmp(level, "x86-64-v4") == 0) return x86_64_v4;
    if (std::strcmp(level, "x86-64-v3") == 0) return x86_64_v3;
    return baseline;
}

// f(begin, end) over [0, count), one contiguous range per OpenMP thread (at::parallel_for's split), on
// at most n_threads threads of at least `grain` items each; on the calling thread when one will do
// (waking the pool would cost more than it saves). Each range runs in f, a function of its own: GCC
// optimises a loop there better than the body of an `omp for` (the projection forward ran 18% more
// instructions and took 1.5x the time as an `omp for` loop).
template <typename F>
void parallel_for(int64_t count, int64_t grain, int n_threads, const F& f) {
    if (count <= 0) return;
    const int threads = int(std::clamp<int64_t>((count + grain - 1) / grain, 1, std::max(n_threads, 1)));
    if (threads == 1) return f(int64_t(0), count);
#pragma omp parallel num_threads(threads)
    {
        const int64_t per_thread = (count + omp_get_num_threads() - 1) / omp_get_num_threads();
        const int64_t begin = omp_get_thread_num() * per_thread;
        if (begin < count) f(begin, std::min(count, begin + per_thread));
    }
}

}  // namespace gsplat_py::cpu
