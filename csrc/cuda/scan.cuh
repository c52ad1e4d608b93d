// The device prefix sum that sizes a variable-length output (packed pairs, tile intersections), with its
// total read back to the host.
#pragma once

#include <cub/cub.cuh>

#include <cstdint>

#include "cuda_common.cuh"

namespace gsplat_py::cuda {

// Writes the inclusive prefix sums of `counts[0..count)` to `sums` (which may be `counts`) and returns their
// total after synchronising `stream`; `memory.scratch(bytes)` holds cub's temporary storage. count > 0.
template <typename Memory>
int64_t inclusive_sum_with_total(const int64_t* counts, int64_t* sums, int64_t count, Memory& memory,
                                 cudaStream_t stream, const char* what) {
    size_t scan_bytes = 0;
    check_cuda(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, counts, sums, int(count), stream),
               "scan (size query)");
    check_cuda(cub::DeviceScan::InclusiveSum(memory.scratch(scan_bytes), scan_bytes, counts, sums, int(count),
                                             stream),
               "scan");
    int64_t total = 0;
    check_cuda(cudaMemcpyAsync(&total, sums + count - 1, sizeof(int64_t), cudaMemcpyDeviceToHost, stream),
               what);
    check_cuda(cudaStreamSynchronize(stream), what);
    return total;
}

}  // namespace gsplat_py::cuda
