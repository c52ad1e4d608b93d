// Projection of B batches of N Gaussians into their C cameras on the GPU: one thread per (camera,
// Gaussian) pair, the math of gsplat_math.h. Unpacked: grid x over Gaussians, y over images, so a block
// never spans two images and the camera gradients (when asked for) reduce within the block before one
// atomic add per block. Packed: two passes over the pairs (count the visible ones per block; then, with
// the block offsets scanned, project again and write them), so the outputs come in pair order as on the
// CPU, and the dense [B, C, N] outputs never exist.

#include <cub/cub.cuh>

#include "cuda_common.cuh"
#include "gsplat_math.h"
#include "kernels.h"
#include "scan.cuh"

namespace gsplat_py::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void project_forward_kernel(const ProjectionArgs<T> a, const ProjectionOutputs<T> out) {
    const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t image = blockIdx.y;
    if (n >= a.n_gaussians) return;
    const int64_t pair = image * a.n_gaussians + n;
    const ProjectedGaussian<T> g = a.project(pair);
    if (g.visible) out.store(pair, g);  // outputs were zero-filled
}

// One Gaussian-camera pair's gradients, computed in registers.
template <typename T> struct PairGradients {
    T mean[3], quat[4], scale[3], covar[kCovarValues], camera[kCameraGradSlots];
    __device__ PairGradients() {
        for (T& v : mean) v = T(0);
        for (T& v : quat) v = T(0);
        for (T& v : scale) v = T(0);
        for (T& v : covar) v = T(0);
        for (T& v : camera) v = T(0);
    }
    __device__ GaussianGradient<T> targets() { return {mean, quat, scale, covar}; }
};

// Writes (owned: no other thread has this row) or atomically adds a pair's Gaussian gradients to `row`.
template <typename T>
__device__ void write_gaussian_gradients(const GaussianGradients<T>& out, int64_t row,
                                         const PairGradients<T>& v, bool owned) {
    auto put = [&](T* target, const T* values, int count) {
        if (!target) return;
        for (int k = 0; k < count; ++k) {
            if (owned)
                target[count * row + k] = values[k];
            else
                atomicAdd(target + count * row + k, values[k]);
        }
    };
    put(out.v_means, v.mean, 3);
    put(out.v_quats, v.quat, 4);
    put(out.v_scales, v.scale, 3);
    put(out.v_covars, v.covar, kCovarValues);
}

template <typename T>
__device__ T* camera_grad_target(const ProjectionGradients<T>& g, int64_t image, int k) {
    return k < kViewmatGradSlots ? g.v_viewmats + 16 * image + k
                                 : g.v_Ks + 9 * image + K_index_of_intrinsic(k - kViewmatGradSlots);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    project_backward_kernel(const ProjectionArgs<T> a, const ProjectionGradients<T> g) {
    const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t image = blockIdx.y;
    const int64_t pair = image * a.n_gaussians + n;
    const bool visible = n < a.n_gaussians && g.radii[2 * pair] > 0 && g.radii[2 * pair + 1] > 0;

    PairGradients<T> v;
    if (visible) {
        const int64_t gauss = a.gaussian_of(image, n);
        project_gaussian_vjp<T>(a.gaussian(gauss), a.camera(image), a.width, a.height, a.eps2d, g.at(pair),
                                v.targets(), v.camera, v.camera + kViewmatGradSlots);
        // with one camera per batch this thread owns the Gaussian's gradients
        write_gaussian_gradients(g.gaussians, gauss, v, a.n_cameras == 1);
    }
    if (g.v_viewmats == nullptr) return;  // the same for the whole grid: no camera gradients wanted

    // Every Gaussian adds to the same camera values: sum over the warp, then over the block, so one
    // atomic add per block and value (per warp, the adds of a million Gaussians contend badly).
    constexpr int kWarps = kThreads / 32;
    __shared__ T block_sums[kWarps][kCameraGradSlots];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const bool warp_has_work = __any_sync(kFullWarp, visible);
#pragma unroll
    for (int k = 0; k < kCameraGradSlots; ++k) {
        const T sum = warp_has_work ? warp_sum(v.camera[k]) : T(0);
        if (lane == 0) block_sums[warp][k] = sum;
    }
    __syncthreads();
    if (threadIdx.x < kCameraGradSlots) {
        T total = T(0);
#pragma unroll
        for (int w = 0; w < kWarps; ++w) total += block_sums[w][threadIdx.x];
        if (total != T(0)) atomicAdd(camera_grad_target(g, image, threadIdx.x), total);
    }
}

// counts_to_starts[b] = ends[b] - counts_to_starts[b]: the inclusive scan's ends to each block's start.
__global__ void starts_from_ends_kernel(int64_t count, const int64_t* __restrict__ ends,
                                        int64_t* __restrict__ counts_to_starts) {
    const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (b < count) counts_to_starts[b] = ends[b] - counts_to_starts[b];
}

dim3 projection_grid(int64_t n_gaussians, int64_t n_images) {
    if (n_images > 65535) throw std::runtime_error("gsplat_py CUDA: at most 65535 images (B * C) per call");
    return dim3(blocks_for(n_gaussians, kThreads), unsigned(n_images));
}

// Packed, pass 1: the number of visible pairs of each block of kThreads pairs.
template <typename T>
__global__ void count_visible_kernel(const ProjectionArgs<T> a, int64_t* __restrict__ block_counts) {
    const int64_t pair = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const bool visible = pair < a.n_pairs() && a.project(pair).visible;
    const int count = __syncthreads_count(visible);
    if (threadIdx.x == 0) block_counts[blockIdx.x] = count;
}

// Packed, pass 2: each visible pair at its block's offset plus its rank among the block's visible pairs.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    write_visible_kernel(const ProjectionArgs<T> a, const int64_t* __restrict__ block_offsets,
                         const ProjectionOutputs<T> out) {
    using Scan = cub::BlockScan<int, kThreads>;
    __shared__ typename Scan::TempStorage scan_storage;
    const int64_t pair = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    ProjectedGaussian<T> g;
    g.visible = false;
    if (pair < a.n_pairs()) g = a.project(pair);
    int rank;
    Scan(scan_storage).ExclusiveSum(int(g.visible), rank);
    if (!g.visible) return;
    const int64_t row = block_offsets[blockIdx.x] + rank;
    out.store(row, g);
    out.store_ids(row, pair, a.n_cameras, a.n_gaussians);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    project_packed_backward_kernel(const ProjectionArgs<T> a, const PackedEntries e,
                                   const ProjectionGradients<T> g) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const bool active = i < e.nnz;
    int64_t image = -1;
    PairGradients<T> v;
    if (active) {
        image = e.batch_ids[i] * a.n_cameras + e.camera_ids[i];
        const int64_t gauss = e.batch_ids[i] * a.n_gaussians + e.gaussian_ids[i];
        project_gaussian_vjp<T>(a.gaussian(gauss), a.camera(image), a.width, a.height, a.eps2d, g.at(i),
                                v.targets(), v.camera, v.camera + kViewmatGradSlots);
        // sparse rows and one camera per batch: no other thread writes this row
        const bool owned = e.per_entry || a.n_cameras == 1;
        write_gaussian_gradients(g.gaussians, e.per_entry ? i : gauss, v, owned);
    }
    if (g.v_viewmats == nullptr) return;
    // Entries are sorted by image: a warp whose entries share one image sums before one atomic add.
    const int lane = threadIdx.x % 32;
    const int64_t lane0_image = __shfl_sync(kFullWarp, image, 0);
    const bool uniform = __all_sync(kFullWarp, !active || image == lane0_image);
    for (int k = 0; k < kCameraGradSlots; ++k) {
        if (uniform) {
            const T sum = warp_sum(v.camera[k]);
            if (lane == 0 && lane0_image >= 0 && sum != T(0))
                atomicAdd(camera_grad_target(g, lane0_image, k), sum);
        } else if (active && v.camera[k] != T(0)) {
            atomicAdd(camera_grad_target(g, image, k), v.camera[k]);
        }
    }
}

}  // namespace

template <typename T>
void project_gaussians_forward(const ProjectionArgs<T>& args, const ProjectionOutputs<T>& out,
                               cudaStream_t stream) {
    if (args.n_gaussians == 0 || args.n_images() == 0) return;
    project_forward_kernel<T>
        <<<projection_grid(args.n_gaussians, args.n_images()), kThreads, 0, stream>>>(args, out);
    check_launch("project_forward_kernel");
}

template <typename T>
int64_t project_gaussians_packed_forward(const ProjectionArgs<T>& args, PackedProjectionMemory<T>& memory,
                                         cudaStream_t stream) {
    const int64_t pairs = args.n_pairs();
    if (pairs == 0) {
        memory.allocate(0);
        return 0;
    }
    const unsigned blocks = blocks_for(pairs, kThreads);
    int64_t* block_counts = static_cast<int64_t*>(memory.scratch(2 * size_t(blocks) * sizeof(int64_t)));
    int64_t* block_ends = block_counts + blocks;
    count_visible_kernel<T><<<blocks, kThreads, 0, stream>>>(args, block_counts);
    check_launch("count_visible_kernel");
    const int64_t nnz = inclusive_sum_with_total(block_counts, block_ends, blocks, memory, stream,
                                                 "packed projection: visible count");
    const ProjectionOutputs<T> out = memory.allocate(nnz);
    if (nnz == 0) return 0;
    // the first row of each block, in place of its count
    int64_t* block_offsets = block_counts;
    starts_from_ends_kernel<<<blocks_for(blocks, kThreads), kThreads, 0, stream>>>(int64_t(blocks),
                                                                                   block_ends, block_offsets);
    check_launch("starts_from_ends_kernel");
    write_visible_kernel<T><<<blocks, kThreads, 0, stream>>>(args, block_offsets, out);
    check_launch("write_visible_kernel");
    return nnz;
}

template <typename T>
void project_gaussians_backward(const ProjectionArgs<T>& args, const ProjectionGradients<T>& grads,
                                cudaStream_t stream) {
    if (args.n_gaussians == 0 || args.n_images() == 0) return;
    project_backward_kernel<T>
        <<<projection_grid(args.n_gaussians, args.n_images()), kThreads, 0, stream>>>(args, grads);
    check_launch("project_backward_kernel");
}

template <typename T>
void project_gaussians_packed_backward(const ProjectionArgs<T>& args, const PackedEntries& entries,
                                       const ProjectionGradients<T>& grads, cudaStream_t stream) {
    if (entries.nnz == 0) return;
    project_packed_backward_kernel<T>
        <<<blocks_for(entries.nnz, kThreads), kThreads, 0, stream>>>(args, entries, grads);
    check_launch("project_packed_backward_kernel");
}

#define GS_INSTANTIATE_PROJECTION(T)                                                                     \
    template void project_gaussians_forward<T>(const ProjectionArgs<T>&, const ProjectionOutputs<T>&,    \
                                               cudaStream_t);                                            \
    template int64_t project_gaussians_packed_forward<T>(const ProjectionArgs<T>&,                       \
                                                         PackedProjectionMemory<T>&, cudaStream_t);      \
    template void project_gaussians_backward<T>(const ProjectionArgs<T>&, const ProjectionGradients<T>&, \
                                                cudaStream_t);                                           \
    template void project_gaussians_packed_backward<T>(const ProjectionArgs<T>&, const PackedEntries&,   \
                                                       const ProjectionGradients<T>&, cudaStream_t);
GS_INSTANTIATE_PROJECTION(float)
GS_INSTANTIATE_PROJECTION(double)
#undef GS_INSTANTIATE_PROJECTION

}  // namespace gsplat_py::cuda
