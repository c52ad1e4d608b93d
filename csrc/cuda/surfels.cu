// 2D Gaussian splatting on the GPU, on the math and per-pixel loops the CPU backend runs (surfel_math.h,
// surfel_args.h). Projection: a thread per (camera, surfel) pair; the backward adds each pair's surfel
// gradients atomically, and the camera gradients (when asked for) are summed over the warp first.
// Rasterization: a thread per pixel, numbered tile by tile so that a warp shares its tile's list; the
// backward adds every pixel's gradients of every entry atomically (so, unlike the CPU backend's, the sums
// are not bit-identical run to run).

#include "cuda_common.cuh"
#include "surfel_kernels.h"

namespace gsplat_py::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void project_surfels_forward_kernel(const SurfelProjectionArgs<T> a,
                                               const SurfelProjectionOutputs<T> out) {
    const int64_t pair = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (pair >= a.n_pairs()) return;
    const ProjectedSurfel<T> s = a.project(pair);
    if (s.visible) out.store(pair, s);  // outputs were zero-filled
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    project_surfels_backward_kernel(const SurfelProjectionArgs<T> a, const SurfelProjectionGradients<T> g) {
    const int64_t pair = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const bool visible = pair < a.n_pairs() && g.visible(pair);
    T v_mean[3] = {}, v_quat[4] = {}, v_scale[3] = {}, camera[kCameraGradSlots] = {};
    const int64_t image = visible ? pair / a.n_gaussians : 0;
    const int64_t gauss = visible ? a.gaussian_of(image, pair % a.n_gaussians) : 0;
    if (visible) {
        project_surfel_vjp<T>(a.means + 3 * gauss, a.quats + 4 * gauss, a.scales + 3 * gauss,
                              a.viewmats + 16 * image, a.Ks + 9 * image, g.v_means2d[2 * pair],
                              g.v_means2d[2 * pair + 1], g.v_depths[pair], g.v_transforms + 9 * pair,
                              g.v_normals + 3 * pair, v_mean, v_quat, v_scale, camera,
                              camera + kViewmatGradSlots);
        for (int k = 0; k < 3; ++k) atomicAdd(g.v_means + 3 * gauss + k, v_mean[k]);
        for (int k = 0; k < 4; ++k) atomicAdd(g.v_quats + 4 * gauss + k, v_quat[k]);
        for (int k = 0; k < 2; ++k) atomicAdd(g.v_scales + 3 * gauss + k, v_scale[k]);
    }
    if (g.v_viewmats == nullptr) return;
    // A warp's pairs may belong to two images: sum per image of the warp's first lane, the others alone.
    const int64_t first_pair = __shfl_sync(kFullWarp, pair, 0);
    const int64_t warp_image = first_pair / a.n_gaussians;
    const bool same = visible && image == warp_image;
    for (int k = 0; k < kCameraGradSlots; ++k) {
        const T total = warp_sum(same ? camera[k] : T(0));
        T* target = k < kViewmatGradSlots
                        ? g.v_viewmats + 16 * warp_image + k
                        : g.v_Ks + 9 * warp_image + K_index_of_intrinsic(k - kViewmatGradSlots);
        if ((threadIdx.x & 31) == 0 && total != T(0)) atomicAdd(target, total);
        if (visible && !same) {
            T* own = k < kViewmatGradSlots ? g.v_viewmats + 16 * image + k
                                           : g.v_Ks + 9 * image + K_index_of_intrinsic(k - kViewmatGradSlots);
            atomicAdd(own, camera[k]);
        }
    }
}

// Thread -> (tile, pixel of the tile); false past the last tile or the image border.
template <typename T>
__device__ bool pixel_of_thread(const SurfelRasterArgs<T>& a, SurfelTile& tile, int64_t& x, int64_t& y) {
    const int64_t per_tile = int64_t(a.tile_size) * a.tile_size;
    const int64_t thread = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (thread >= a.n_tiles * per_tile) return false;
    tile = surfel_tile(a, thread / per_tile);
    const int64_t local = thread % per_tile;
    x = tile.x0 + local % a.tile_size;
    y = tile.y0 + local / a.tile_size;
    return x < tile.x1 && y < tile.y1;
}

template <typename T>
__global__ void rasterize_surfels_forward_kernel(const SurfelRasterArgs<T> a,
                                                 const SurfelRasterOutputs<T> out) {
    SurfelTile tile;
    int64_t x, y;
    if (pixel_of_thread(a, tile, x, y)) rasterize_surfel_pixel(a, out, tile, x, y);
}

template <typename T>
__global__ void rasterize_surfels_backward_kernel(const SurfelRasterArgs<T> a,
                                                  const SurfelRasterBackwardInputs<T> in,
                                                  const SurfelRasterGradients<T> g) {
    SurfelTile tile;
    int64_t x, y;
    if (!pixel_of_thread(a, tile, x, y)) return;
    const int D = a.channels;
    auto sink = [&](int64_t, int64_t e, const SurfelPixelGradient<T>& v) {
        for (int k = 0; k < 2; ++k) {
            atomicAdd(g.v_means2d + 2 * e + k, v.v_mean2d[k]);
            if (g.v_means2d_abs) atomicAdd(g.v_means2d_abs + 2 * e + k, v.v_mean2d_abs[k]);
        }
        for (int k = 0; k < 9; ++k) atomicAdd(g.v_transforms + 9 * e + k, v.v_transform[k]);
        atomicAdd(g.v_opacities + e, v.v_opacity);
        for (int k = 0; k < 3; ++k) atomicAdd(g.v_normals + 3 * e + k, v.v_normal[k]);
        atomicAdd(g.v_depths + e, v.v_depth);
        for (int k = 0; k < D; ++k) atomicAdd(g.v_colors + e * D + k, v.weight * v.pixel_v_colors[k]);
    };
    rasterize_surfel_pixel_backward(a, in, tile, x, y, sink);
}

}  // namespace

template <typename T>
void project_surfels_forward(const SurfelProjectionArgs<T>& a, const SurfelProjectionOutputs<T>& out,
                             cudaStream_t stream) {
    if (a.n_pairs() == 0) return;
    project_surfels_forward_kernel<T><<<blocks_for(a.n_pairs(), kThreads), kThreads, 0, stream>>>(a, out);
    check_launch("project_surfels_forward");
}

template <typename T>
void project_surfels_backward(const SurfelProjectionArgs<T>& a, const SurfelProjectionGradients<T>& g,
                              cudaStream_t stream) {
    if (a.n_pairs() == 0) return;
    project_surfels_backward_kernel<T><<<blocks_for(a.n_pairs(), kThreads), kThreads, 0, stream>>>(a, g);
    check_launch("project_surfels_backward");
}

template <typename T>
void rasterize_surfels_forward(const SurfelRasterArgs<T>& a, const SurfelRasterOutputs<T>& out,
                               cudaStream_t stream) {
    const int64_t threads = a.n_tiles * a.tile_size * a.tile_size;
    if (threads == 0) return;
    rasterize_surfels_forward_kernel<T><<<blocks_for(threads, kThreads), kThreads, 0, stream>>>(a, out);
    check_launch("rasterize_surfels_forward");
}

template <typename T>
void rasterize_surfels_backward(const SurfelRasterArgs<T>& a, const SurfelRasterBackwardInputs<T>& in,
                                const SurfelRasterGradients<T>& g, cudaStream_t stream) {
    const int64_t threads = a.n_tiles * a.tile_size * a.tile_size;
    if (threads == 0) return;
    rasterize_surfels_backward_kernel<T><<<blocks_for(threads, kThreads), kThreads, 0, stream>>>(a, in, g);
    check_launch("rasterize_surfels_backward");
}

#define GS_INSTANTIATE_SURFELS(T)                                                                         \
    template void project_surfels_forward<T>(const SurfelProjectionArgs<T>&,                              \
                                             const SurfelProjectionOutputs<T>&, cudaStream_t);            \
    template void project_surfels_backward<T>(const SurfelProjectionArgs<T>&,                             \
                                              const SurfelProjectionGradients<T>&, cudaStream_t);         \
    template void rasterize_surfels_forward<T>(const SurfelRasterArgs<T>&, const SurfelRasterOutputs<T>&, \
                                               cudaStream_t);                                             \
    template void rasterize_surfels_backward<T>(const SurfelRasterArgs<T>&,                               \
                                                const SurfelRasterBackwardInputs<T>&,                     \
                                                const SurfelRasterGradients<T>&, cudaStream_t);
GS_INSTANTIATE_SURFELS(float)
GS_INSTANTIATE_SURFELS(double)
#undef GS_INSTANTIATE_SURFELS

}  // namespace gsplat_py::cuda
