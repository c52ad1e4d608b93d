// The torch side of the ops, written once for both backends: the boundary checks (tensor_checks.h), the
// outputs allocated on the inputs' device, the argument structs of op_args.h filled from the tensors,
// and the call of the backend's kernels. A backend (CpuBackend in cpu_ops.cpp, CudaBackend in
// cuda_ops.cpp) supplies a device guard type and one static function per kernel, and registers
// register_ops<Backend> for its dispatch key.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "op_args.h"
#include "tensor_checks.h"

namespace gsplat_py::torch_ops {

template <typename T>
const T* optional_ptr(const c10::optional<at::Tensor>& t) {
    return t.has_value() ? t->data_ptr<T>() : nullptr;
}

inline c10::optional<at::Tensor> optional_contiguous(const c10::optional<at::Tensor>& t) {
    return t.has_value() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

// The CPU kernels' OpenMP threads: torch's, so that both share one pool (the extension links the
// libgomp torch uses); the CUDA kernels ignore it.
inline int kernel_threads() { return at::get_num_threads(); }

// The binning's scratch and its flatten_ids result as tensors from PyTorch's allocator on the inputs'
// device; the scratch tensors live as long as this object (the binning call).
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
    int64_t* isect_ids(int64_t n_isects) override {
        isect_ids_ = at::empty({n_isects}, options_.dtype(at::kLong));
        return isect_ids_.data_ptr<int64_t>();
    }
    at::Tensor result() const { return flatten_ids_; }
    at::Tensor isect_ids_result() const { return isect_ids_; }

  private:
    at::TensorOptions options_;
    std::vector<at::Tensor> scratch_;
    at::Tensor flatten_ids_, isect_ids_;
};

// ---- argument structs from tensors ------------------------------------------------------------------
template <typename T>
ProjectionArgs<T> projection_args(const ProjectionInputs& in, const c10::optional<at::Tensor>& opacities,
                                  int64_t width, int64_t height, double eps2d, double near_plane,
                                  double far_plane, double radius_clip, bool calc_compensations,
                                  int64_t camera_model) {
    ProjectionArgs<T> a;
    a.means = in.means.data_ptr<T>();
    a.quats = optional_ptr<T>(in.quats);
    a.scales = optional_ptr<T>(in.scales);
    a.covars = optional_ptr<T>(in.covars);
    a.opacities = optional_ptr<T>(opacities);
    a.viewmats = in.viewmats.data_ptr<T>();
    a.Ks = in.Ks.data_ptr<T>();
    a.radial_coeffs = optional_ptr<T>(in.radial_coeffs);
    a.n_batches = in.means.size(0);
    a.n_gaussians = in.means.size(1);
    a.n_cameras = in.viewmats.size(1);
    a.width = int(width);
    a.height = int(height);
    a.eps2d = T(eps2d);
    a.near_plane = T(near_plane);
    a.far_plane = T(far_plane);
    a.radius_clip = T(radius_clip);
    a.calc_compensations = calc_compensations;
    a.camera_model = int(camera_model);
    a.n_threads = kernel_threads();
    return a;
}

// The backward's view of the inputs: the forward-only settings (opacities, the depth range, radius_clip)
// play no part there.
template <typename T>
ProjectionArgs<T> projection_backward_args(const ProjectionInputs& in, int64_t width, int64_t height,
                                           double eps2d, int64_t camera_model) {
    return projection_args<T>(in, c10::nullopt, width, height, eps2d, 0.0, 0.0, 0.0, false, camera_model);
}

// Zero-filled gradients of the Gaussians, `rows` of them, for the input kind in use (quats and scales, or
// covars); the others empty.
struct GaussianGradientTensors {
    at::Tensor means, quats, scales, covars;
    GaussianGradientTensors(const ProjectionInputs& in, int64_t rows) {
        auto opts = in.means.options();
        means = at::zeros({rows, 3}, opts);
        quats = in.quats.has_value() ? at::zeros({rows, 4}, opts) : at::empty({0}, opts);
        scales = in.scales.has_value() ? at::zeros({rows, 3}, opts) : at::empty({0}, opts);
        covars = in.covars.has_value() ? at::zeros({rows, kCovarValues}, opts) : at::empty({0}, opts);
    }
    template <typename T>
    GaussianGradients<T> pointers() {
        return {means.data_ptr<T>(), quats.numel() ? quats.data_ptr<T>() : nullptr,
                scales.numel() ? scales.data_ptr<T>() : nullptr,
                covars.numel() ? covars.data_ptr<T>() : nullptr};
    }
};

// The coefficients (or their gradients, P = T) as one [R, K, 3] tensor, or coeffs [R, 1, 3] and rest
// [R, K - 1, 3].
template <typename T, typename P>
ShCoeffs<P> sh_coeffs(const at::Tensor& coeffs, const c10::optional<at::Tensor>& rest) {
    P* dc = coeffs.data_ptr<T>();
    if (rest.has_value()) return {dc, rest->data_ptr<T>(), 3, 3 * rest->size(1)};
    const int64_t stride = 3 * coeffs.size(1);
    return {dc, dc + 3, stride, stride};
}

template <typename T>
ShArgs<T> sh_args(int64_t degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                  const c10::optional<at::Tensor>& coeff_rows, const c10::optional<at::Tensor>& masks,
                  const c10::optional<at::Tensor>& coeffs_rest) {
    ShArgs<T> a;
    a.degree = int(degree);
    a.dirs = dirs.data_ptr<T>();
    a.coeffs = sh_coeffs<T, const T>(coeffs, coeffs_rest);
    a.coeff_rows = optional_ptr<int64_t>(coeff_rows);
    a.masks = optional_ptr<bool>(masks);
    a.count = dirs.size(0);
    a.bases = coeffs.size(1) + (coeffs_rest.has_value() ? coeffs_rest->size(1) : 0);
    a.n_threads = kernel_threads();
    return a;
}

template <typename T>
BinningArgs<T> binning_args(const at::Tensor& means2d, const at::Tensor& radii, const at::Tensor& depths,
                            const c10::optional<at::Tensor>& image_ids, int64_t n_images, int64_t tile_size,
                            int64_t tile_width, int64_t tile_height) {
    BinningArgs<T> a;
    a.means2d = means2d.data_ptr<T>();
    a.radii = radii.data_ptr<int32_t>();
    a.depths = depths.data_ptr<T>();
    a.image_ids = optional_ptr<int64_t>(image_ids);
    a.n_entries = depths.numel();
    a.n_images = n_images;
    a.entries_per_image = n_images > 0 ? a.n_entries / n_images : 0;
    a.tile_size = int(tile_size);
    a.tile_width = int(tile_width);
    a.tile_height = int(tile_height);
    a.n_threads = kernel_threads();
    return a;
}

template <typename T>
RasterArgs<T> raster_args(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                          const at::Tensor& opacities, const c10::optional<at::Tensor>& backgrounds,
                          int64_t width, int64_t height, int64_t tile_size, const at::Tensor& isect_offsets,
                          const at::Tensor& flatten_ids) {
    RasterArgs<T> a;
    a.means2d = means2d.data_ptr<T>();
    a.conics = conics.data_ptr<T>();
    a.colors = colors.data_ptr<T>();
    a.opacities = opacities.data_ptr<T>();
    a.backgrounds = optional_ptr<T>(backgrounds);
    a.isect_offsets = isect_offsets.data_ptr<int32_t>();
    a.flatten_ids = flatten_ids.data_ptr<int32_t>();
    a.n_gaussians = opacities.numel();
    a.n_isects = flatten_ids.numel();
    a.n_tiles = isect_offsets.numel();
    a.width = int(width);
    a.height = int(height);
    a.tile_size = int(tile_size);
    a.tile_width = int(isect_offsets.size(2));
    a.tile_height = int(isect_offsets.size(1));
    a.channels = int(colors.size(-1));
    a.n_threads = kernel_threads();
    return a;
}

// ---- the ops ----------------------------------------------------------------------------------------
// -> radii [B,C,N,2] int32, means2d [B,C,N,2], depths [B,C,N], conics [B,C,N,3], compensations [B,C,N]
template <typename Backend>
std::vector<at::Tensor> project_gaussians_forward(
    const at::Tensor& means, const c10::optional<at::Tensor>& quats, const c10::optional<at::Tensor>& scales,
    const c10::optional<at::Tensor>& covars, const c10::optional<at::Tensor>& opacities,
    const at::Tensor& viewmats, const at::Tensor& Ks, const c10::optional<at::Tensor>& radial_coeffs,
    int64_t width, int64_t height, double eps2d, double near_plane, double far_plane, double radius_clip,
    bool calc_compensations, int64_t camera_model) {
    const ProjectionInputs in{means, quats, scales, covars, viewmats, Ks, radial_coeffs};
    check_projection_inputs(in, opacities);
    const typename Backend::Guard guard(means.device());
    const int64_t B = means.size(0), N = means.size(1), C = viewmats.size(1);
    auto opts = means.options();
    at::Tensor radii = at::zeros({B, C, N, 2}, opts.dtype(at::kInt));
    at::Tensor means2d = at::zeros({B, C, N, 2}, opts);
    at::Tensor depths = at::zeros({B, C, N}, opts);
    at::Tensor conics = at::zeros({B, C, N, 3}, opts);
    at::Tensor compensations = at::zeros({B, C, N}, opts);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_forward", [&] {
        using T = scalar_t;
        Backend::project_gaussians_forward(
            projection_args<T>(in, opacities, width, height, eps2d, near_plane, far_plane, radius_clip,
                               calc_compensations, camera_model),
            ProjectionOutputs<T>{radii.data_ptr<int32_t>(), means2d.data_ptr<T>(), depths.data_ptr<T>(),
                                 conics.data_ptr<T>(), compensations.data_ptr<T>(), nullptr, nullptr,
                                 nullptr});
    });
    return {radii, means2d, depths, conics, compensations};
}

// The packed outputs as tensors from PyTorch's allocator, created when the kernel knows their number.
template <typename T>
class PackedProjectionTensors final : public PackedProjectionMemory<T> {
  public:
    explicit PackedProjectionTensors(at::TensorOptions options) : options_(options) {}
    ProjectionOutputs<T> allocate(int64_t nnz) override {
        auto ids = options_.dtype(at::kLong);
        tensors_ = {at::empty({nnz}, ids),         at::empty({nnz}, ids),
                    at::empty({nnz}, ids),         at::empty({nnz, 2}, options_.dtype(at::kInt)),
                    at::empty({nnz, 2}, options_), at::empty({nnz}, options_),
                    at::empty({nnz, 3}, options_), at::empty({nnz}, options_)};
        return {tensors_[3].data_ptr<int32_t>(), tensors_[4].data_ptr<T>(),
                tensors_[5].data_ptr<T>(),       tensors_[6].data_ptr<T>(),
                tensors_[7].data_ptr<T>(),       tensors_[0].data_ptr<int64_t>(),
                tensors_[1].data_ptr<int64_t>(), tensors_[2].data_ptr<int64_t>()};
    }
    void* scratch(size_t bytes) override {
        scratch_.push_back(at::empty({int64_t(bytes)}, options_.dtype(at::kByte)));
        return scratch_.back().data_ptr();
    }
    std::vector<at::Tensor> result() const { return tensors_; }

  private:
    at::TensorOptions options_;
    std::vector<at::Tensor> tensors_, scratch_;
};

// -> batch_ids, camera_ids, gaussian_ids [nnz] int64, radii [nnz,2] int32, means2d [nnz,2], depths [nnz],
//    conics [nnz,3], compensations [nnz]: the visible (camera, Gaussian) pairs in (b, c, n) order
template <typename Backend>
std::vector<at::Tensor> project_gaussians_packed_forward(
    const at::Tensor& means, const c10::optional<at::Tensor>& quats, const c10::optional<at::Tensor>& scales,
    const c10::optional<at::Tensor>& covars, const c10::optional<at::Tensor>& opacities,
    const at::Tensor& viewmats, const at::Tensor& Ks, const c10::optional<at::Tensor>& radial_coeffs,
    int64_t width, int64_t height, double eps2d, double near_plane, double far_plane, double radius_clip,
    bool calc_compensations, int64_t camera_model) {
    const ProjectionInputs in{means, quats, scales, covars, viewmats, Ks, radial_coeffs};
    check_projection_inputs(in, opacities);
    const typename Backend::Guard guard(means.device());
    std::vector<at::Tensor> outputs;
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_packed_forward", [&] {
        using T = scalar_t;
        PackedProjectionTensors<T> memory(means.options());
        Backend::project_gaussians_packed_forward(
            projection_args<T>(in, opacities, width, height, eps2d, near_plane, far_plane, radius_clip,
                               calc_compensations, camera_model),
            memory);
        outputs = memory.result();
    });
    return outputs;
}

// -> v_means, v_quats, v_scales, v_covars ([B*N, ...]; empty for the input kind not used), v_viewmats,
//    v_Ks (zero unless camera_grads)
template <typename Backend>
std::vector<at::Tensor> project_gaussians_backward(
    const at::Tensor& means, const c10::optional<at::Tensor>& quats, const c10::optional<at::Tensor>& scales,
    const c10::optional<at::Tensor>& covars, const at::Tensor& viewmats, const at::Tensor& Ks,
    const c10::optional<at::Tensor>& radial_coeffs, int64_t width, int64_t height, double eps2d,
    int64_t camera_model, const at::Tensor& radii, const at::Tensor& v_means2d, const at::Tensor& v_depths,
    const at::Tensor& v_conics, const c10::optional<at::Tensor>& v_compensations, bool camera_grads) {
    const ProjectionInputs in{means, quats, scales, covars, viewmats, Ks, radial_coeffs};
    const at::Tensor v_means2d_c = v_means2d.contiguous(), v_depths_c = v_depths.contiguous(),
                     v_conics_c = v_conics.contiguous();
    const c10::optional<at::Tensor> v_comp_c = optional_contiguous(v_compensations);
    const int64_t pairs = means.size(0) * viewmats.size(1) * means.size(1);
    check_projection_inputs(in, c10::nullopt);
    check_int_input(radii, "radii", means, pairs * 2);
    check_projection_gradients(means, pairs, v_means2d_c, v_depths_c, v_conics_c, v_comp_c);
    const typename Backend::Guard guard(means.device());
    GaussianGradientTensors v_gaussians(in, means.size(0) * means.size(1));
    at::Tensor v_viewmats = at::zeros_like(viewmats);
    at::Tensor v_Ks = at::zeros_like(Ks);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_backward", [&] {
        using T = scalar_t;
        Backend::project_gaussians_backward(
            projection_backward_args<T>(in, width, height, eps2d, camera_model),
            ProjectionGradients<T>{radii.data_ptr<int32_t>(), v_means2d_c.data_ptr<T>(),
                                   v_depths_c.data_ptr<T>(), v_conics_c.data_ptr<T>(),
                                   optional_ptr<T>(v_comp_c), v_gaussians.pointers<T>(),
                                   camera_grads ? v_viewmats.data_ptr<T>() : nullptr,
                                   camera_grads ? v_Ks.data_ptr<T>() : nullptr});
    });
    return {v_gaussians.means, v_gaussians.quats, v_gaussians.scales, v_gaussians.covars, v_viewmats, v_Ks};
}

// The packed entries' gradients -> v_means, v_quats, v_scales, v_covars ([B*N, ...], or [nnz, ...] with
// per_entry: sparse rows), v_viewmats, v_Ks (zero unless camera_grads)
template <typename Backend>
std::vector<at::Tensor> project_gaussians_packed_backward(
    const at::Tensor& means, const c10::optional<at::Tensor>& quats, const c10::optional<at::Tensor>& scales,
    const c10::optional<at::Tensor>& covars, const at::Tensor& viewmats, const at::Tensor& Ks,
    const c10::optional<at::Tensor>& radial_coeffs, int64_t width, int64_t height, double eps2d,
    int64_t camera_model, const at::Tensor& batch_ids, const at::Tensor& camera_ids,
    const at::Tensor& gaussian_ids, const at::Tensor& v_means2d, const at::Tensor& v_depths,
    const at::Tensor& v_conics, const c10::optional<at::Tensor>& v_compensations, bool camera_grads,
    bool per_entry) {
    const ProjectionInputs in{means, quats, scales, covars, viewmats, Ks, radial_coeffs};
    const at::Tensor v_means2d_c = v_means2d.contiguous(), v_depths_c = v_depths.contiguous(),
                     v_conics_c = v_conics.contiguous();
    const c10::optional<at::Tensor> v_comp_c = optional_contiguous(v_compensations);
    const int64_t nnz = gaussian_ids.numel();
    check_projection_inputs(in, c10::nullopt);
    check_id_input(batch_ids, "batch_ids", means, nnz);
    check_id_input(camera_ids, "camera_ids", means, nnz);
    check_id_input(gaussian_ids, "gaussian_ids", means, nnz);
    check_projection_gradients(means, nnz, v_means2d_c, v_depths_c, v_conics_c, v_comp_c);
    const typename Backend::Guard guard(means.device());
    GaussianGradientTensors v_gaussians(in, per_entry ? nnz : means.size(0) * means.size(1));
    at::Tensor v_viewmats = at::zeros_like(viewmats);
    at::Tensor v_Ks = at::zeros_like(Ks);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_packed_backward", [&] {
        using T = scalar_t;
        Backend::project_gaussians_packed_backward(
            projection_backward_args<T>(in, width, height, eps2d, camera_model),
            PackedEntries{batch_ids.data_ptr<int64_t>(), camera_ids.data_ptr<int64_t>(),
                          gaussian_ids.data_ptr<int64_t>(), nnz, per_entry},
            ProjectionGradients<T>{nullptr, v_means2d_c.data_ptr<T>(), v_depths_c.data_ptr<T>(),
                                   v_conics_c.data_ptr<T>(), optional_ptr<T>(v_comp_c),
                                   v_gaussians.pointers<T>(),
                                   camera_grads ? v_viewmats.data_ptr<T>() : nullptr,
                                   camera_grads ? v_Ks.data_ptr<T>() : nullptr});
    });
    return {v_gaussians.means, v_gaussians.quats, v_gaussians.scales, v_gaussians.covars, v_viewmats, v_Ks};
}

// dirs [M,3], coeffs [M,K,3] (or [R,K,3] with coeff_rows [M]) -> colors [M,3]
template <typename Backend>
at::Tensor spherical_harmonics_forward(int64_t degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                                       const c10::optional<at::Tensor>& coeff_rows,
                                       const c10::optional<at::Tensor>& masks,
                                       const c10::optional<at::Tensor>& coeffs_rest) {
    check_sh_inputs(degree, dirs, coeffs, coeff_rows, masks, coeffs_rest);
    const typename Backend::Guard guard(dirs.device());
    at::Tensor colors = at::empty({dirs.size(0), 3}, coeffs.options());
    AT_DISPATCH_FLOATING_TYPES(coeffs.scalar_type(), "spherical_harmonics_forward", [&] {
        using T = scalar_t;
        Backend::spherical_harmonics_forward(sh_args<T>(degree, dirs, coeffs, coeff_rows, masks, coeffs_rest),
                                             colors.data_ptr<T>());
    });
    return colors;
}

// -> v_dirs, v_coeffs (the shape of coeffs; rows no direction picks are zero), and v_coeffs_rest with
// coeffs_rest
template <typename Backend>
std::vector<at::Tensor> spherical_harmonics_backward(int64_t degree, const at::Tensor& dirs,
                                                     const at::Tensor& coeffs,
                                                     const c10::optional<at::Tensor>& coeff_rows,
                                                     const c10::optional<at::Tensor>& masks,
                                                     const at::Tensor& v_colors,
                                                     const c10::optional<at::Tensor>& coeffs_rest) {
    check_sh_inputs(degree, dirs, coeffs, coeff_rows, masks, coeffs_rest);
    const at::Tensor v_colors_c = v_colors.contiguous();
    check_input(v_colors_c, "v_colors", dirs);
    TORCH_CHECK(v_colors_c.numel() == dirs.size(0) * 3, "v_colors must be [M, 3]");
    const typename Backend::Guard guard(dirs.device());
    at::Tensor v_dirs = at::empty(dirs.sizes(), dirs.options());
    // without coeff_rows every row is written; with them only the rows picked
    auto gradient_of = [&](const at::Tensor& x) {
        return coeff_rows.has_value() ? at::zeros(x.sizes(), x.options()) : at::empty(x.sizes(), x.options());
    };
    at::Tensor v_coeffs = gradient_of(coeffs);
    c10::optional<at::Tensor> v_rest;
    if (coeffs_rest.has_value()) v_rest = gradient_of(*coeffs_rest);
    AT_DISPATCH_FLOATING_TYPES(coeffs.scalar_type(), "spherical_harmonics_backward", [&] {
        using T = scalar_t;
        Backend::spherical_harmonics_backward(
            sh_args<T>(degree, dirs, coeffs, coeff_rows, masks, coeffs_rest), v_colors_c.data_ptr<T>(),
            v_dirs.data_ptr<T>(), sh_coeffs<T, T>(v_coeffs, v_rest));
    });
    if (v_rest.has_value()) return {v_dirs, v_coeffs, *v_rest};
    return {v_dirs, v_coeffs};
}

// means2d [...,2], radii [...,2] int32, depths [...] (I images of N entries, or packed entries with
// image_ids [E]) -> tiles_per_gauss [...] int32, isect_offsets [I,TH,TW] int32, flatten_ids [M] int32,
// isect_ids [M] int64 (empty when the image and tile ids do not fit in 32 bits)
template <typename Backend>
std::vector<at::Tensor> bin_gaussians_to_tiles(const at::Tensor& means2d, const at::Tensor& radii,
                                               const at::Tensor& depths,
                                               const c10::optional<at::Tensor>& image_ids, int64_t n_images,
                                               int64_t tile_size, int64_t tile_width, int64_t tile_height) {
    check_binning_inputs(means2d, radii, depths, image_ids, n_images, tile_size);
    const typename Backend::Guard guard(means2d.device());
    auto int_opts = means2d.options().dtype(at::kInt);
    at::Tensor tiles_per_gauss = at::empty(depths.sizes(), int_opts);
    at::Tensor isect_offsets = at::empty({n_images, tile_height, tile_width}, int_opts);
    TensorMemory memory(means2d.options());
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "bin_gaussians_to_tiles", [&] {
        using T = scalar_t;
        Backend::bin_gaussians_to_tiles(
            binning_args<T>(means2d, radii, depths, image_ids, n_images, tile_size, tile_width, tile_height),
            tiles_per_gauss.data_ptr<int32_t>(), isect_offsets.data_ptr<int32_t>(), memory);
    });
    return {tiles_per_gauss, isect_offsets, memory.result(), memory.isect_ids_result()};
}

// -> render_colors [C,H,W,D], render_alphas [C,H,W,1], transmittance [C,H,W], last_ids [C,H,W] int32
template <typename Backend>
std::vector<at::Tensor> rasterize_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& colors, const at::Tensor& opacities,
                                          const c10::optional<at::Tensor>& backgrounds, int64_t width,
                                          int64_t height, int64_t tile_size, const at::Tensor& isect_offsets,
                                          const at::Tensor& flatten_ids) {
    check_raster_inputs(means2d, conics, colors, opacities, backgrounds, tile_size, isect_offsets,
                        flatten_ids);
    const typename Backend::Guard guard(means2d.device());
    const int64_t C = isect_offsets.size(0), D = colors.size(-1);
    auto opts = means2d.options();
    at::Tensor render_colors = at::empty({C, height, width, D}, opts);
    at::Tensor render_alphas = at::empty({C, height, width, 1}, opts);
    at::Tensor transmittance = at::empty({C, height, width}, opts);
    at::Tensor last_ids = at::empty({C, height, width}, opts.dtype(at::kInt));
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_forward", [&] {
        using T = scalar_t;
        Backend::rasterize_forward(
            raster_args<T>(means2d, conics, colors, opacities, backgrounds, width, height, tile_size,
                           isect_offsets, flatten_ids),
            RasterForwardOutputs<T>{render_colors.data_ptr<T>(), render_alphas.data_ptr<T>(),
                                    transmittance.data_ptr<T>(), last_ids.data_ptr<int32_t>()});
    });
    return {render_colors, render_alphas, transmittance, last_ids};
}

// -> v_means2d, v_means2d_abs (empty unless absgrad), v_conics, v_colors, v_opacities,
//    v_backgrounds (empty without backgrounds)
template <typename Backend>
std::vector<at::Tensor> rasterize_backward(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& colors, const at::Tensor& opacities,
                                           const c10::optional<at::Tensor>& backgrounds, int64_t width,
                                           int64_t height, int64_t tile_size, const at::Tensor& isect_offsets,
                                           const at::Tensor& flatten_ids, const at::Tensor& transmittance,
                                           const at::Tensor& last_ids, const at::Tensor& v_render_colors,
                                           const at::Tensor& v_render_alphas, bool absgrad) {
    check_raster_inputs(means2d, conics, colors, opacities, backgrounds, tile_size, isect_offsets,
                        flatten_ids);
    const at::Tensor v_colors_c = v_render_colors.contiguous();
    const at::Tensor v_alphas_c = v_render_alphas.contiguous();
    check_raster_backward_inputs(means2d, isect_offsets, colors, width, height, transmittance, last_ids,
                                 v_colors_c, v_alphas_c);
    const typename Backend::Guard guard(means2d.device());
    const int64_t D = colors.size(-1);
    auto opts = means2d.options();
    at::Tensor v_means2d = at::zeros_like(means2d);
    at::Tensor v_means2d_abs = absgrad ? at::zeros_like(means2d) : at::empty({0}, opts);
    at::Tensor v_conics = at::zeros_like(conics);
    at::Tensor v_colors = at::zeros_like(colors);
    at::Tensor v_opacities = at::zeros_like(opacities);
    at::Tensor v_backgrounds = backgrounds.has_value() ? at::zeros_like(*backgrounds) : at::empty({0}, opts);
    at::Tensor channel_scratch =
        Backend::needs_channel_scratch(D) ? at::empty({v_colors_c.numel()}, opts) : at::empty({0}, opts);
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_backward", [&] {
        using T = scalar_t;
        Backend::rasterize_backward(
            raster_args<T>(means2d, conics, colors, opacities, backgrounds, width, height, tile_size,
                           isect_offsets, flatten_ids),
            RasterBackwardInputs<T>{transmittance.data_ptr<T>(), last_ids.data_ptr<int32_t>(),
                                    v_colors_c.data_ptr<T>(), v_alphas_c.data_ptr<T>(),
                                    channel_scratch.numel() ? channel_scratch.data_ptr<T>() : nullptr},
            RasterGradients<T>{v_means2d.data_ptr<T>(), absgrad ? v_means2d_abs.data_ptr<T>() : nullptr,
                               v_conics.data_ptr<T>(), v_colors.data_ptr<T>(), v_opacities.data_ptr<T>(),
                               backgrounds.has_value() ? v_backgrounds.data_ptr<T>() : nullptr});
    });
    return {v_means2d, v_means2d_abs, v_conics, v_colors, v_opacities, v_backgrounds};
}

// Adam over several parameter tensors in one call (adam_math.h): params, exp_avgs and exp_avg_sqs in
// place; the settings have one value per tensor, steps the step count each reaches now (1 on the first).
template <typename Backend>
void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::ArrayRef<double> lrs, at::ArrayRef<double> beta1s,
               at::ArrayRef<double> beta2s, at::ArrayRef<double> epss, at::ArrayRef<double> steps,
               const c10::optional<at::Tensor>& visible) {
    const size_t count = params.size();
    const size_t n_settings = std::min({lrs.size(), beta1s.size(), beta2s.size(), epss.size(), steps.size()});
    TORCH_CHECK(lrs.size() == n_settings && beta1s.size() == n_settings && beta2s.size() == n_settings &&
                    epss.size() == n_settings && steps.size() == n_settings,
                "lrs, beta1s, beta2s, epss and steps must have one value per parameter");
    check_adam_inputs(params, grads, exp_avgs, exp_avg_sqs, n_settings, visible);
    const typename Backend::Guard guard(params[0].device());
    AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "adam_step", [&] {
        using T = scalar_t;
        std::vector<AdamTensor<T>> tensors(count);
        for (size_t i = 0; i < count; ++i) {
            const int64_t rows = params[i].dim() > 0 ? params[i].size(0) : 1;
            tensors[i] = AdamTensor<T>{params[i].data_ptr<T>(),
                                       grads[i].data_ptr<T>(),
                                       exp_avgs[i].data_ptr<T>(),
                                       exp_avg_sqs[i].data_ptr<T>(),
                                       rows,
                                       rows > 0 ? params[i].numel() / rows : 0,
                                       lrs[i],
                                       beta1s[i],
                                       beta2s[i],
                                       epss[i],
                                       steps[i]};
        }
        Backend::adam_step(
            AdamArgs<T>{tensors.data(), int(count), optional_ptr<bool>(visible), kernel_threads()});
    });
}

// The ops above for Backend's dispatch key (the schemas are in ops.cpp).
template <typename Backend>
void register_ops(torch::Library& m) {
    m.impl("project_gaussians_forward", &project_gaussians_forward<Backend>);
    m.impl("project_gaussians_packed_forward", &project_gaussians_packed_forward<Backend>);
    m.impl("project_gaussians_backward", &project_gaussians_backward<Backend>);
    m.impl("project_gaussians_packed_backward", &project_gaussians_packed_backward<Backend>);
    m.impl("spherical_harmonics_forward", &spherical_harmonics_forward<Backend>);
    m.impl("spherical_harmonics_backward", &spherical_harmonics_backward<Backend>);
    m.impl("bin_gaussians_to_tiles", &bin_gaussians_to_tiles<Backend>);
    m.impl("rasterize_forward", &rasterize_forward<Backend>);
    m.impl("rasterize_backward", &rasterize_backward<Backend>);
    m.impl("adam_step", &adam_step<Backend>);
}

}  // namespace gsplat_py::torch_ops
