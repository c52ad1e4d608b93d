// Projection of N Gaussians into C cameras on the GPU: one thread per (camera, Gaussian), the math of
// gsplat_math.h. Grid: x over Gaussians, y over cameras, so a block never spans two cameras and the
// camera gradients (when asked for) reduce within the block before one atomic add per block.
#include "cuda_common.cuh"
#include "gsplat_math.h"
#include "kernels.h"

namespace gsplat_py::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void project_forward_kernel(const ProjectionArgs<T> a, const ProjectionOutputs<T> out) {
    const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t c = blockIdx.y;
    if (n >= a.n_gaussians) return;
    const ProjectedGaussian<T> g = project_gaussian<T>(
        a.means + 3 * n, a.quats + 4 * n, a.scales + 3 * n, a.opacities ? a.opacities + n : nullptr,
        a.viewmats + 16 * c, a.Ks + 9 * c, a.width, a.height, a.eps2d, a.near_plane, a.far_plane,
        a.radius_clip, a.calc_compensations, a.camera_model);
    if (g.visible) out.store(c * a.n_gaussians + n, g);  // outputs were zero-filled
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    project_backward_kernel(const ProjectionArgs<T> a, const ProjectionGradients<T> g) {
    const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t c = blockIdx.y;
    const int64_t idx = c * a.n_gaussians + n;
    const bool visible = n < a.n_gaussians && g.radii[2 * idx] > 0 && g.radii[2 * idx + 1] > 0;

    T v_mean[3] = {}, v_quat[4] = {}, v_scale[3] = {}, v_camera[kCameraGradSlots] = {};
    if (visible) {
        const Sym2<T> v_conic = {g.v_conics[3 * idx], g.v_conics[3 * idx + 1], g.v_conics[3 * idx + 2]};
        project_gaussian_vjp<T>(a.means + 3 * n, a.quats + 4 * n, a.scales + 3 * n, a.viewmats + 16 * c,
                                a.Ks + 9 * c, a.width, a.height, a.eps2d, a.camera_model,
                                g.v_means2d[2 * idx], g.v_means2d[2 * idx + 1], g.v_depths[idx], v_conic,
                                g.v_compensations ? g.v_compensations[idx] : T(0), v_mean, v_quat, v_scale,
                                v_camera, v_camera + kViewmatGradSlots);
        if (a.n_cameras == 1) {  // this thread owns the Gaussian's gradients
#pragma unroll
            for (int k = 0; k < 3; ++k) g.v_means[3 * n + k] = v_mean[k];
#pragma unroll
            for (int k = 0; k < 4; ++k) g.v_quats[4 * n + k] = v_quat[k];
#pragma unroll
            for (int k = 0; k < 3; ++k) g.v_scales[3 * n + k] = v_scale[k];
        } else {
#pragma unroll
            for (int k = 0; k < 3; ++k) atomicAdd(g.v_means + 3 * n + k, v_mean[k]);
#pragma unroll
            for (int k = 0; k < 4; ++k) atomicAdd(g.v_quats + 4 * n + k, v_quat[k]);
#pragma unroll
            for (int k = 0; k < 3; ++k) atomicAdd(g.v_scales + 3 * n + k, v_scale[k]);
        }
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
        const T sum = warp_has_work ? warp_sum(v_camera[k]) : T(0);
        if (lane == 0) block_sums[warp][k] = sum;
    }
    __syncthreads();
    if (threadIdx.x < kCameraGradSlots) {
        T total = T(0);
#pragma unroll
        for (int w = 0; w < kWarps; ++w) total += block_sums[w][threadIdx.x];
        const int k = threadIdx.x;
        T* target = k < kViewmatGradSlots ? g.v_viewmats + 16 * c + k
                                          : g.v_Ks + 9 * c + K_index_of_intrinsic(k - kViewmatGradSlots);
        if (total != T(0)) atomicAdd(target, total);
    }
}

dim3 projection_grid(int64_t n_gaussians, int64_t n_cameras) {
    if (n_cameras > 65535) throw std::runtime_error("gsplat_py CUDA: at most 65535 cameras per call");
    return dim3(blocks_for(n_gaussians, kThreads), unsigned(n_cameras));
}

}  // namespace

template <typename T>
void project_gaussians_forward(const ProjectionArgs<T>& args, const ProjectionOutputs<T>& out,
                               cudaStream_t stream) {
    if (args.n_gaussians == 0 || args.n_cameras == 0) return;
    project_forward_kernel<T>
        <<<projection_grid(args.n_gaussians, args.n_cameras), kThreads, 0, stream>>>(args, out);
    check_launch("project_forward_kernel");
}

template <typename T>
void project_gaussians_backward(const ProjectionArgs<T>& args, const ProjectionGradients<T>& grads,
                                cudaStream_t stream) {
    if (args.n_gaussians == 0 || args.n_cameras == 0) return;
    project_backward_kernel<T>
        <<<projection_grid(args.n_gaussians, args.n_cameras), kThreads, 0, stream>>>(args, grads);
    check_launch("project_backward_kernel");
}

template void project_gaussians_forward<float>(const ProjectionArgs<float>&, const ProjectionOutputs<float>&,
                                               cudaStream_t);
template void project_gaussians_forward<double>(const ProjectionArgs<double>&,
                                                const ProjectionOutputs<double>&, cudaStream_t);
template void project_gaussians_backward<float>(const ProjectionArgs<float>&,
                                                const ProjectionGradients<float>&, cudaStream_t);
template void project_gaussians_backward<double>(const ProjectionArgs<double>&,
                                                 const ProjectionGradients<double>&, cudaStream_t);

}  // namespace gsplat_py::cuda
