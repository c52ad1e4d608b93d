// Helpers shared by the CUDA kernels: error checks, launch sizes, warp sums and atomic adds.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace gsplat_py::cuda {

inline void check_cuda(cudaError_t status, const char* what) {
    if (status != cudaSuccess)
        throw std::runtime_error(std::string("gsplat_py CUDA: ") + what + ": " + cudaGetErrorString(status));
}

// After a launch: a bad configuration shows up here, a fault in the kernel at the next synchronising call.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline unsigned blocks_for(int64_t count, int threads) {
    return static_cast<unsigned>((count + threads - 1) / threads);
}

constexpr unsigned kFullWarp = 0xffffffffu;

// Butterfly sum over the 32 lanes of a warp; every lane gets the total. All lanes must call it.
template <typename T> __device__ __forceinline__ T warp_sum(T value) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(kFullWarp, value, offset);
    return value;
}

template <typename T> __device__ __forceinline__ T warp_max(T value) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T other = __shfl_xor_sync(kFullWarp, value, offset);
        value = other > value ? other : value;
    }
    return value;
}

}  // namespace gsplat_py::cuda
