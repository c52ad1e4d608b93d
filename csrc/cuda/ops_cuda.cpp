// The torch-facing CUDA ops: checks, allocation, the current stream, and registration of the kernels
// (kernels.h) under the same schemas as the CPU ops (ops.cpp). Built only when PyTorch has CUDA.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#include "kernels.h"
#include "op_checks.h"

// The ops live in their own namespace: their names are the kernels' names (gsplat_py::cuda).
namespace gsplat_py::cuda_ops {

using cuda::BinningArgs;
using cuda::DeviceMemory;
using cuda::ProjectionArgs;
using cuda::RasterArgs;
using cuda::ShArgs;

namespace {

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

template <typename T> const T* optional_ptr(const c10::optional<at::Tensor>& t) {
    return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// Scratch and the flatten_ids result of the binning as tensors from PyTorch's caching allocator; the
// scratch tensors live as long as this object (the binning call).
class TensorMemory final : public DeviceMemory {
  public:
    explicit TensorMemory(at::TensorOptions options) : options_(options) {}
    void* scratch(size_t bytes) override {
        scratch_.push_back(at::empty({int64_t(bytes)}, options_.dtype(at::kByte)));
        return scratch_.back().data_ptr();
    }
    int32_t* flatten_ids(int64_t n_isects) override {
        flatten_ids_ = at::empty({n_isects}, options_.dtype(at::kInt));
        return flatten_ids_.data_ptr<int32_t>();
    }
    at::Tensor result() const { return flatten_ids_; }

  private:
    at::TensorOptions options_;
    std::vector<at::Tensor> scratch_;
    at::Tensor flatten_ids_;
};

template <typename T>
ProjectionArgs<T> projection_args(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                  const c10::optional<at::Tensor>& opacities, const at::Tensor& viewmats,
                                  const at::Tensor& Ks, int64_t width, int64_t height, double eps2d,
                                  double near_plane, double far_plane, double radius_clip,
                                  bool calc_compensations, int64_t camera_model) {
    return {means.data_ptr<T>(), quats.data_ptr<T>(), scales.data_ptr<T>(), optional_ptr<T>(opacities),
            viewmats.data_ptr<T>(), Ks.data_ptr<T>(), means.size(0), viewmats.size(0), int(width),
            int(height), T(eps2d), T(near_plane), T(far_plane), T(radius_clip), calc_compensations,
            int(camera_model)};
}

std::vector<at::Tensor> project_gaussians_forward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
    const c10::optional<at::Tensor>& opacities, const at::Tensor& viewmats, const at::Tensor& Ks,
    int64_t width, int64_t height, double eps2d, double near_plane, double far_plane,
    double radius_clip, bool calc_compensations, int64_t camera_model) {
    check_projection_inputs(means, quats, scales, opacities, viewmats, Ks);
    const c10::cuda::CUDAGuard guard(means.device());
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto opts = means.options();
    at::Tensor radii = at::zeros({C, N, 2}, opts.dtype(at::kInt));
    at::Tensor means2d = at::zeros({C, N, 2}, opts);
    at::Tensor depths = at::zeros({C, N}, opts);
    at::Tensor conics = at::zeros({C, N, 3}, opts);
    at::Tensor compensations = at::zeros({C, N}, opts);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_forward", [&] {
        using T = scalar_t;
        cuda::project_gaussians_forward<T>(
            projection_args<T>(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near_plane,
                               far_plane, radius_clip, calc_compensations, camera_model),
            {radii.data_ptr<int32_t>(), means2d.data_ptr<T>(), depths.data_ptr<T>(), conics.data_ptr<T>(),
             compensations.data_ptr<T>()},
            current_stream());
    });
    return {radii, means2d, depths, conics, compensations};
}

std::vector<at::Tensor> project_gaussians_backward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
    const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width, int64_t height, double eps2d,
    int64_t camera_model, const at::Tensor& radii, const at::Tensor& v_means2d,
    const at::Tensor& v_depths, const at::Tensor& v_conics,
    const c10::optional<at::Tensor>& v_compensations, bool camera_grads) {
    check_input(means, "means", means);
    check_input(radii, "radii", means);
    const c10::cuda::CUDAGuard guard(means.device());
    const at::Tensor v_means2d_c = v_means2d.contiguous(), v_depths_c = v_depths.contiguous(),
                     v_conics_c = v_conics.contiguous();
    const c10::optional<at::Tensor> v_comp_c =
        v_compensations.has_value() ? c10::optional<at::Tensor>(v_compensations->contiguous()) : c10::nullopt;
    at::Tensor v_means = at::zeros_like(means);
    at::Tensor v_quats = at::zeros_like(quats);
    at::Tensor v_scales = at::zeros_like(scales);
    at::Tensor v_viewmats = at::zeros_like(viewmats);
    at::Tensor v_Ks = at::zeros_like(Ks);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_backward", [&] {
        using T = scalar_t;
        cuda::project_gaussians_backward<T>(
            projection_args<T>(means, quats, scales, c10::nullopt, viewmats, Ks, width, height, eps2d, 0.0, 0.0,
                               0.0, false, camera_model),
            {radii.data_ptr<int32_t>(), v_means2d_c.data_ptr<T>(), v_depths_c.data_ptr<T>(),
             v_conics_c.data_ptr<T>(), optional_ptr<T>(v_comp_c), v_means.data_ptr<T>(), v_quats.data_ptr<T>(),
             v_scales.data_ptr<T>(), camera_grads ? v_viewmats.data_ptr<T>() : nullptr,
             camera_grads ? v_Ks.data_ptr<T>() : nullptr},
            current_stream());
    });
    return {v_means, v_quats, v_scales, v_viewmats, v_Ks};
}

template <typename T>
ShArgs<T> sh_args(int64_t degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                  const c10::optional<at::Tensor>& masks) {
    return {int(degree), dirs.data_ptr<T>(), coeffs.data_ptr<T>(), optional_ptr<bool>(masks), dirs.size(0),
            coeffs.size(1)};
}

at::Tensor spherical_harmonics_forward(int64_t degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                                       const c10::optional<at::Tensor>& masks) {
    check_sh_inputs(degree, dirs, coeffs, masks);
    const c10::cuda::CUDAGuard guard(dirs.device());
    at::Tensor colors = at::empty({dirs.size(0), 3}, coeffs.options());
    AT_DISPATCH_FLOATING_TYPES(coeffs.scalar_type(), "spherical_harmonics_forward", [&] {
        cuda::spherical_harmonics_forward<scalar_t>(sh_args<scalar_t>(degree, dirs, coeffs, masks),
                                                    colors.data_ptr<scalar_t>(), current_stream());
    });
    return colors;
}

std::vector<at::Tensor> spherical_harmonics_backward(int64_t degree, const at::Tensor& dirs,
                                                     const at::Tensor& coeffs,
                                                     const c10::optional<at::Tensor>& masks,
                                                     const at::Tensor& v_colors) {
    check_sh_inputs(degree, dirs, coeffs, masks);
    const c10::cuda::CUDAGuard guard(dirs.device());
    const at::Tensor v_colors_c = v_colors.contiguous();
    at::Tensor v_dirs = at::empty(dirs.sizes(), dirs.options());
    at::Tensor v_coeffs = at::empty(coeffs.sizes(), coeffs.options());
    AT_DISPATCH_FLOATING_TYPES(coeffs.scalar_type(), "spherical_harmonics_backward", [&] {
        using T = scalar_t;
        cuda::spherical_harmonics_backward<T>(sh_args<T>(degree, dirs, coeffs, masks), v_colors_c.data_ptr<T>(),
                                              v_dirs.data_ptr<T>(), v_coeffs.data_ptr<T>(), current_stream());
    });
    return {v_dirs, v_coeffs};
}

std::vector<at::Tensor> bin_gaussians_to_tiles(const at::Tensor& means2d, const at::Tensor& radii,
                                               const at::Tensor& depths, int64_t tile_size,
                                               int64_t tile_width, int64_t tile_height) {
    check_binning_inputs(means2d, radii, depths);
    const c10::cuda::CUDAGuard guard(means2d.device());
    const int64_t C = means2d.size(0), N = means2d.size(1);
    auto int_opts = means2d.options().dtype(at::kInt);
    at::Tensor tiles_per_gauss = at::empty({C, N}, int_opts);
    at::Tensor isect_offsets = at::empty({C, tile_height, tile_width}, int_opts);
    TensorMemory memory(means2d.options());
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "bin_gaussians_to_tiles", [&] {
        using T = scalar_t;
        const BinningArgs<T> args = {means2d.data_ptr<T>(), radii.data_ptr<int32_t>(), depths.data_ptr<T>(),
                                     C, N, int(tile_size), int(tile_width), int(tile_height)};
        cuda::bin_gaussians_to_tiles<T>(args, tiles_per_gauss.data_ptr<int32_t>(),
                                        isect_offsets.data_ptr<int32_t>(), memory, current_stream());
    });
    return {tiles_per_gauss, isect_offsets, memory.result()};
}

template <typename T>
RasterArgs<T> raster_args(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                          const at::Tensor& opacities, const c10::optional<at::Tensor>& backgrounds,
                          int64_t width, int64_t height, int64_t tile_size, const at::Tensor& isect_offsets,
                          const at::Tensor& flatten_ids) {
    return {means2d.data_ptr<T>(), conics.data_ptr<T>(), colors.data_ptr<T>(), opacities.data_ptr<T>(),
            optional_ptr<T>(backgrounds), isect_offsets.data_ptr<int32_t>(), flatten_ids.data_ptr<int32_t>(),
            flatten_ids.numel(), isect_offsets.numel(), int(width), int(height), int(tile_size),
            int(isect_offsets.size(2)), int(isect_offsets.size(1)), int(colors.size(-1))};
}

std::vector<at::Tensor> rasterize_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& colors, const at::Tensor& opacities,
                                          const c10::optional<at::Tensor>& backgrounds, int64_t width,
                                          int64_t height, int64_t tile_size, const at::Tensor& isect_offsets,
                                          const at::Tensor& flatten_ids) {
    check_raster_inputs(means2d, conics, colors, opacities, backgrounds, tile_size, isect_offsets, flatten_ids);
    const c10::cuda::CUDAGuard guard(means2d.device());
    const int64_t C = isect_offsets.size(0), D = colors.size(-1);
    auto opts = means2d.options();
    at::Tensor render_colors = at::empty({C, height, width, D}, opts);
    at::Tensor render_alphas = at::empty({C, height, width, 1}, opts);
    at::Tensor transmittance = at::empty({C, height, width}, opts);
    at::Tensor last_ids = at::empty({C, height, width}, opts.dtype(at::kInt));
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_forward", [&] {
        using T = scalar_t;
        cuda::rasterize_forward<T>(raster_args<T>(means2d, conics, colors, opacities, backgrounds, width, height,
                                                  tile_size, isect_offsets, flatten_ids),
                                   {render_colors.data_ptr<T>(), render_alphas.data_ptr<T>(),
                                    transmittance.data_ptr<T>(), last_ids.data_ptr<int32_t>()},
                                   current_stream());
    });
    return {render_colors, render_alphas, transmittance, last_ids};
}

std::vector<at::Tensor> rasterize_backward(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
    const at::Tensor& opacities, const c10::optional<at::Tensor>& backgrounds, int64_t width,
    int64_t height, int64_t tile_size, const at::Tensor& isect_offsets, const at::Tensor& flatten_ids,
    const at::Tensor& transmittance, const at::Tensor& last_ids, const at::Tensor& v_render_colors,
    const at::Tensor& v_render_alphas, bool absgrad) {
    check_raster_inputs(means2d, conics, colors, opacities, backgrounds, tile_size, isect_offsets, flatten_ids);
    const c10::cuda::CUDAGuard guard(means2d.device());
    const at::Tensor v_colors_c = v_render_colors.contiguous();
    const at::Tensor v_alphas_c = v_render_alphas.contiguous();
    const int64_t D = colors.size(-1);
    at::Tensor v_means2d = at::zeros_like(means2d);
    at::Tensor v_means2d_abs = absgrad ? at::zeros_like(means2d) : at::empty({0}, means2d.options());
    at::Tensor v_conics = at::zeros_like(conics);
    at::Tensor v_colors = at::zeros_like(colors);
    at::Tensor v_opacities = at::zeros_like(opacities);
    at::Tensor v_backgrounds =
        backgrounds.has_value() ? at::zeros_like(*backgrounds) : at::empty({0}, means2d.options());
    at::Tensor channel_scratch = cuda::raster_kernel_specialised(int(D))
                                     ? at::empty({0}, means2d.options())
                                     : at::empty({v_colors_c.numel()}, means2d.options());
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_backward", [&] {
        using T = scalar_t;
        cuda::rasterize_backward<T>(
            raster_args<T>(means2d, conics, colors, opacities, backgrounds, width, height, tile_size,
                           isect_offsets, flatten_ids),
            {transmittance.data_ptr<T>(), last_ids.data_ptr<int32_t>(), v_colors_c.data_ptr<T>(),
             v_alphas_c.data_ptr<T>(), channel_scratch.numel() ? channel_scratch.data_ptr<T>() : nullptr},
            {v_means2d.data_ptr<T>(), absgrad ? v_means2d_abs.data_ptr<T>() : nullptr, v_conics.data_ptr<T>(),
             v_colors.data_ptr<T>(), v_opacities.data_ptr<T>(),
             backgrounds.has_value() ? v_backgrounds.data_ptr<T>() : nullptr},
            current_stream());
    });
    return {v_means2d, v_means2d_abs, v_conics, v_colors, v_opacities, v_backgrounds};
}

}  // namespace

}  // namespace gsplat_py::cuda_ops

TORCH_LIBRARY_IMPL(gsplat_py, CUDA, m) {
    m.impl("project_gaussians_forward", &gsplat_py::cuda_ops::project_gaussians_forward);
    m.impl("project_gaussians_backward", &gsplat_py::cuda_ops::project_gaussians_backward);
    m.impl("spherical_harmonics_forward", &gsplat_py::cuda_ops::spherical_harmonics_forward);
    m.impl("spherical_harmonics_backward", &gsplat_py::cuda_ops::spherical_harmonics_backward);
    m.impl("bin_gaussians_to_tiles", &gsplat_py::cuda_ops::bin_gaussians_to_tiles);
    m.impl("rasterize_forward", &gsplat_py::cuda_ops::rasterize_forward);
    m.impl("rasterize_backward", &gsplat_py::cuda_ops::rasterize_backward);
}
