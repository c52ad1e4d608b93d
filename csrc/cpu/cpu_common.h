// Helpers shared by the CPU kernels (not by raster_kernels.cpp, which includes no C++ library template
// header).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace gsplat_py::cpu {

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
