// Binning of projected Gaussians (entries: [I, N] pairs, or packed ones with their image) into screen
// tiles on the GPU, in the CPU backend's order: the visible entries are radix-sorted by depth (stable,
// so ties keep index order), their intersections are written out in that order, and a stable radix sort
// by tile alone then leaves every tile's list sorted by depth; gsplat's intersection ids follow. Sorting the
// M intersections by tile bits only (about 15 bits for four 1080p cameras) costs fewer passes than one sort
// of (tile | depth) keys, and the depth sort runs over N, not M.
#include <cub/cub.cuh>

#include <cstring>

#include "cuda_common.cuh"
#include "kernels.h"
#include "scan.cuh"

namespace gsplat_py::cuda {

namespace {

constexpr int kThreads = 256;

struct TileRect {
    int x0, x1, y0, y1;  // [x0, x1) x [y0, y1)
    __device__ int count() const { return (x1 - x0) * (y1 - y0); }
};

// Same arithmetic as the CPU's tile_rect, so both backends bin the same Gaussians into the same tiles.
template <typename T>
__device__ TileRect tile_rect(const T* mean, const int32_t* radius, int tile_size, int tile_width,
                              int tile_height) {
    if (radius[0] <= 0 || radius[1] <= 0) return {0, 0, 0, 0};
    auto clampi = [](T v, int hi) { return int(fmin(fmax(double(v), 0.0), double(hi))); };
    const T ts = T(tile_size);
    return {clampi(floor((mean[0] - radius[0]) / ts), tile_width),
            clampi(ceil((mean[0] + radius[0]) / ts), tile_width),
            clampi(floor((mean[1] - radius[1]) / ts), tile_height),
            clampi(ceil((mean[1] + radius[1]) / ts), tile_height)};
}

template <typename T> struct SortKey;
template <> struct SortKey<float> {
    using type = uint32_t;
};
template <> struct SortKey<double> {
    using type = unsigned long long;
};

// Unsigned integer whose order is the order of the floating-point value (for non-NaN values).
template <typename T> __device__ typename SortKey<T>::type order_preserving_bits(T value) {
    using U = typename SortKey<T>::type;
    U bits;
    memcpy(&bits, &value, sizeof(bits));
    const U sign = U(1) << (8 * sizeof(U) - 1);
    return (bits & sign) ? ~bits : (bits | sign);
}

template <typename T>
__global__ void count_tiles_kernel(const BinningArgs<T> a, int32_t* __restrict__ tiles_per_gauss,
                                   typename SortKey<T>::type* __restrict__ depth_keys,
                                   int32_t* __restrict__ ids) {
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= a.n_entries) return;
    const int count =
        tile_rect(a.means2d + 2 * idx, a.radii + 2 * idx, a.tile_size, a.tile_width, a.tile_height).count();
    tiles_per_gauss[idx] = count;
    // Gaussians in no tile sort last and add nothing.
    depth_keys[idx] = count > 0 ? order_preserving_bits(a.depths[idx]) : ~typename SortKey<T>::type(0);
    ids[idx] = int32_t(idx);
}

__global__ void gather_counts_kernel(int64_t count, const int32_t* __restrict__ ids,
                                     const int32_t* __restrict__ tiles_per_gauss, int64_t* __restrict__ out) {
    const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j < count) out[j] = tiles_per_gauss[ids[j]];
}

template <typename T>
__global__ void write_intersections_kernel(const BinningArgs<T> a,
                                           const int32_t* __restrict__ depth_sorted_ids,
                                           const int32_t* __restrict__ tiles_per_gauss,
                                           const int64_t* __restrict__ cumulative,
                                           uint32_t* __restrict__ tile_keys, int32_t* __restrict__ tile_ids) {
    const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j >= a.n_entries) return;
    const int32_t idx = depth_sorted_ids[j];
    const int count = tiles_per_gauss[idx];
    if (count == 0) return;
    const TileRect r = tile_rect(a.means2d + 2 * int64_t(idx), a.radii + 2 * int64_t(idx), a.tile_size,
                                 a.tile_width, a.tile_height);
    const uint32_t tile_base = uint32_t(a.image_of(idx)) * uint32_t(a.tile_width * a.tile_height);
    int64_t out = cumulative[j] - count;
    for (int y = r.y0; y < r.y1; ++y)
        for (int x = r.x0; x < r.x1; ++x, ++out) {
            tile_keys[out] = tile_base + uint32_t(y * a.tile_width + x);
            tile_ids[out] = idx;
        }
}

// offsets[t] = the number of intersections in tiles before t (the tile's first entry in flatten_ids).
__global__ void tile_offsets_kernel(int64_t n_isects, int64_t n_tiles,
                                    const uint32_t* __restrict__ sorted_keys, int32_t* __restrict__ offsets) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n_isects) return;
    const int64_t tile = sorted_keys[i];
    const int64_t previous = i == 0 ? -1 : int64_t(sorted_keys[i - 1]);
    for (int64_t t = previous + 1; t <= tile; ++t) offsets[t] = int32_t(i);
    if (i == n_isects - 1)
        for (int64_t t = tile + 1; t < n_tiles; ++t) offsets[t] = int32_t(n_isects);
}

// isect_ids[i] of the i-th intersection in sorted order: its image and tile from the sorted tile key, its
// depth from its entry.
template <typename T>
__global__ void isect_ids_kernel(int64_t n_isects, int64_t tiles_per_image, IsectIdLayout layout,
                                 const uint32_t* __restrict__ sorted_keys,
                                 const int32_t* __restrict__ flatten_ids, const T* __restrict__ depths,
                                 int64_t* __restrict__ isect_ids) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n_isects) return;
    const int64_t tile = sorted_keys[i];
    isect_ids[i] = isect_id(layout, tile / tiles_per_image, tile % tiles_per_image, depths[flatten_ids[i]]);
}

int bits_for(uint64_t max_value) {
    int bits = 1;
    while (bits < 64 && (max_value >> bits) != 0) ++bits;
    return bits;
}

template <typename Key>
void sort_pairs(DeviceMemory& memory, const Key* keys_in, Key* keys_out, const int32_t* values_in,
                int32_t* values_out, int64_t count, int end_bit, cudaStream_t stream) {
    size_t bytes = 0;
    check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys_in, keys_out, values_in, values_out,
                                               int(count), 0, end_bit, stream),
               "radix sort (size query)");
    void* scratch = memory.scratch(bytes);
    check_cuda(cub::DeviceRadixSort::SortPairs(scratch, bytes, keys_in, keys_out, values_in, values_out,
                                               int(count), 0, end_bit, stream),
               "radix sort");
}

}  // namespace

template <typename T>
int64_t bin_gaussians_to_tiles(const BinningArgs<T>& a, int32_t* tiles_per_gauss, int32_t* isect_offsets,
                               DeviceMemory& memory, cudaStream_t stream) {
    using Key = typename SortKey<T>::type;
    const int64_t total = a.n_entries;
    const int64_t tiles_per_image = int64_t(a.tile_width) * a.tile_height;
    const int64_t n_tiles = a.n_images * tiles_per_image;
    if (n_tiles >= (int64_t(1) << 32)) throw std::runtime_error("gsplat_py CUDA: too many tiles");
    const IsectIdLayout layout = isect_id_layout(a.n_images, tiles_per_image);
    const bool with_isect_ids = isect_id_bits_fit(layout);
    if (total == 0) {
        check_cuda(cudaMemsetAsync(isect_offsets, 0, n_tiles * sizeof(int32_t), stream), "memset offsets");
        memory.flatten_ids(0);
        memory.isect_ids(0);
        return 0;
    }

    Key* depth_keys = static_cast<Key*>(memory.scratch(2 * total * sizeof(Key)));
    int32_t* ids = static_cast<int32_t*>(memory.scratch(2 * total * sizeof(int32_t)));
    int64_t* cumulative = static_cast<int64_t*>(memory.scratch(total * sizeof(int64_t)));
    count_tiles_kernel<T>
        <<<blocks_for(total, kThreads), kThreads, 0, stream>>>(a, tiles_per_gauss, depth_keys, ids);
    check_launch("count_tiles_kernel");
    sort_pairs(memory, depth_keys, depth_keys + total, ids, ids + total, total, int(8 * sizeof(Key)), stream);
    const int32_t* depth_sorted_ids = ids + total;

    gather_counts_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream>>>(total, depth_sorted_ids,
                                                                               tiles_per_gauss, cumulative);
    check_launch("gather_counts_kernel");
    const int64_t n_isects = inclusive_sum_with_total(cumulative, cumulative, total, memory, stream,
                                                      "binning: intersection count");
    if (const char* error = intersection_count_error(n_isects))
        throw std::runtime_error(std::string("gsplat_py CUDA: ") + error);

    int32_t* flatten_ids = memory.flatten_ids(n_isects);
    int64_t* isect_ids = memory.isect_ids(with_isect_ids ? n_isects : 0);
    if (n_isects == 0) {
        check_cuda(cudaMemsetAsync(isect_offsets, 0, n_tiles * sizeof(int32_t), stream), "memset offsets");
        return 0;
    }
    uint32_t* tile_keys = static_cast<uint32_t*>(memory.scratch(2 * n_isects * sizeof(uint32_t)));
    int32_t* tile_ids = static_cast<int32_t*>(memory.scratch(n_isects * sizeof(int32_t)));
    write_intersections_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, stream>>>(
        a, depth_sorted_ids, tiles_per_gauss, cumulative, tile_keys, tile_ids);
    check_launch("write_intersections_kernel");
    sort_pairs(memory, tile_keys, tile_keys + n_isects, tile_ids, flatten_ids, n_isects,
               bits_for(uint64_t(n_tiles - 1)), stream);
    tile_offsets_kernel<<<blocks_for(n_isects, kThreads), kThreads, 0, stream>>>(
        n_isects, n_tiles, tile_keys + n_isects, isect_offsets);
    check_launch("tile_offsets_kernel");
    if (with_isect_ids) {
        isect_ids_kernel<T><<<blocks_for(n_isects, kThreads), kThreads, 0, stream>>>(
            n_isects, tiles_per_image, layout, tile_keys + n_isects, flatten_ids, a.depths, isect_ids);
        check_launch("isect_ids_kernel");
    }
    return n_isects;
}

template int64_t bin_gaussians_to_tiles<float>(const BinningArgs<float>&, int32_t*, int32_t*, DeviceMemory&,
                                               cudaStream_t);
template int64_t bin_gaussians_to_tiles<double>(const BinningArgs<double>&, int32_t*, int32_t*, DeviceMemory&,
                                                cudaStream_t);

}  // namespace gsplat_py::cuda
