// Helpers shared by the CPU kernels (not by raster_kernels.cpp, which includes no C++ library template
// header).
#pragma once

#include <algorithm>
#include <cstdint>

namespace gsplat_py::cpu {

// Threads for a loop over `count` items, each thread taking at least `grain` of them: small loops run
// on fewer threads (one below `grain` items), where waking more would cost more than it saves.
inline int threads_for(int64_t count, int64_t grain, int n_threads) {
    return int(std::clamp<int64_t>((count + grain - 1) / grain, 1, std::max(n_threads, 1)));
}

}  // namespace gsplat_py::cpu
