// The torch side of the 2DGS (surfel) ops, once for both backends, as op_wrappers.h for 3DGS: boundary
// checks, outputs on the inputs' device, the argument structs of surfel_args.h, the backend's kernels.
// A backend supplies project_surfels_forward/backward and rasterize_surfels_forward/backward.
#pragma once

#include <vector>

#include "op_wrappers.h"
#include "surfel_args.h"

namespace gsplat_py::torch_ops {

inline void check_surfel_projection_inputs(const at::Tensor& means, const at::Tensor& quats,
                                           const at::Tensor& scales, const at::Tensor& viewmats,
                                           const at::Tensor& Ks) {
    TORCH_CHECK(means.dim() == 3 && means.size(2) == 3, "means must be [B, N, 3]");
    TORCH_CHECK(viewmats.dim() == 4 && viewmats.size(0) == means.size(0) && viewmats.size(2) == 4 &&
                    viewmats.size(3) == 4,
                "viewmats must be [B, C, 4, 4]");
    check_input(means, "means", means);
    const int64_t gaussians = means.size(0) * means.size(1), cameras = viewmats.size(0) * viewmats.size(1);
    check_optional_input(quats, "quats", means, gaussians * 4);
    check_optional_input(scales, "scales", means, gaussians * 3);
    check_input(viewmats, "viewmats", means);
    check_optional_input(Ks, "Ks", means, cameras * 9);
    for (const at::Tensor* t : {&quats, &scales, &viewmats, &Ks})
        TORCH_CHECK(t->scalar_type() == means.scalar_type(), "the surfels and cameras must share one dtype");
    check_numeric(entry_count_error(gaussians / std::max<int64_t>(means.size(0), 1) * cameras), "B * C * N");
}

template <typename T>
SurfelProjectionArgs<T> surfel_projection_args(const at::Tensor& means, const at::Tensor& quats,
                                               const at::Tensor& scales, const at::Tensor& viewmats,
                                               const at::Tensor& Ks, int64_t width, int64_t height,
                                               double near_plane, double far_plane, double radius_clip) {
    return {means.data_ptr<T>(), quats.data_ptr<T>(), scales.data_ptr<T>(), viewmats.data_ptr<T>(),
            Ks.data_ptr<T>(),    means.size(0),       viewmats.size(1),     means.size(1),
            int(width),          int(height),         T(near_plane),        T(far_plane),
            T(radius_clip),      kernel_threads()};
}

// -> radii [B,C,N,2] int32, means2d [B,C,N,2], depths [B,C,N], transforms [B,C,N,3,3], normals [B,C,N,3]
template <typename Backend>
std::vector<at::Tensor> project_surfels_forward(const at::Tensor& means, const at::Tensor& quats,
                                                const at::Tensor& scales, const at::Tensor& viewmats,
                                                const at::Tensor& Ks, int64_t width, int64_t height,
                                                double near_plane, double far_plane, double radius_clip) {
    check_surfel_projection_inputs(means, quats, scales, viewmats, Ks);
    const typename Backend::Guard guard(means.device());
    const int64_t B = means.size(0), N = means.size(1), C = viewmats.size(1);
    auto opts = means.options();
    at::Tensor radii = at::zeros({B, C, N, 2}, opts.dtype(at::kInt));
    at::Tensor means2d = at::zeros({B, C, N, 2}, opts);
    at::Tensor depths = at::zeros({B, C, N}, opts);
    at::Tensor transforms = at::zeros({B, C, N, 3, 3}, opts);
    at::Tensor normals = at::zeros({B, C, N, 3}, opts);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_surfels_forward", [&] {
        using T = scalar_t;
        Backend::project_surfels_forward(
            surfel_projection_args<T>(means, quats, scales, viewmats, Ks, width, height, near_plane,
                                      far_plane, radius_clip),
            SurfelProjectionOutputs<T>{radii.data_ptr<int32_t>(), means2d.data_ptr<T>(), depths.data_ptr<T>(),
                                       transforms.data_ptr<T>(), normals.data_ptr<T>()});
    });
    return {radii, means2d, depths, transforms, normals};
}

// -> v_means [B,N,3], v_quats [B,N,4], v_scales [B,N,3], v_viewmats, v_Ks (zero unless camera_grads)
template <typename Backend>
std::vector<at::Tensor> project_surfels_backward(const at::Tensor& means, const at::Tensor& quats,
                                                 const at::Tensor& scales, const at::Tensor& viewmats,
                                                 const at::Tensor& Ks, const at::Tensor& radii,
                                                 const at::Tensor& v_means2d, const at::Tensor& v_depths,
                                                 const at::Tensor& v_transforms, const at::Tensor& v_normals,
                                                 bool camera_grads) {
    check_surfel_projection_inputs(means, quats, scales, viewmats, Ks);
    const int64_t pairs = means.size(0) * viewmats.size(1) * means.size(1);
    check_int_input(radii, "radii", means, pairs * 2);
    const at::Tensor vm = v_means2d.contiguous(), vd = v_depths.contiguous(), vt = v_transforms.contiguous(),
                     vn = v_normals.contiguous();
    check_optional_input(vm, "v_means2d", means, pairs * 2);
    check_optional_input(vd, "v_depths", means, pairs);
    check_optional_input(vt, "v_transforms", means, pairs * 9);
    check_optional_input(vn, "v_normals", means, pairs * 3);
    const typename Backend::Guard guard(means.device());
    at::Tensor v_means = at::zeros_like(means), v_quats = at::zeros_like(quats),
               v_scales = at::zeros_like(scales);
    at::Tensor v_viewmats = at::zeros_like(viewmats), v_Ks = at::zeros_like(Ks);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_surfels_backward", [&] {
        using T = scalar_t;
        Backend::project_surfels_backward(
            surfel_projection_args<T>(means, quats, scales, viewmats, Ks, 0, 0, 0.0, 0.0, 0.0),
            SurfelProjectionGradients<T>{radii.data_ptr<int32_t>(), vm.data_ptr<T>(), vd.data_ptr<T>(),
                                         vt.data_ptr<T>(), vn.data_ptr<T>(), v_means.data_ptr<T>(),
                                         v_quats.data_ptr<T>(), v_scales.data_ptr<T>(),
                                         camera_grads ? v_viewmats.data_ptr<T>() : nullptr,
                                         camera_grads ? v_Ks.data_ptr<T>() : nullptr});
    });
    return {v_means, v_quats, v_scales, v_viewmats, v_Ks};
}

inline void check_surfel_raster_inputs(const at::Tensor& means2d, const at::Tensor& transforms,
                                       const at::Tensor& colors, const at::Tensor& opacities,
                                       const at::Tensor& normals, const at::Tensor& depths, int64_t tile_size,
                                       const at::Tensor& isect_offsets, const at::Tensor& flatten_ids) {
    check_numeric(tile_size_error(tile_size), tile_size);
    const int64_t E = opacities.numel();
    check_input(opacities, "opacities", means2d);
    check_optional_input(means2d, "means2d", means2d, E * 2);
    check_optional_input(transforms, "transforms", means2d, E * 9);
    check_optional_input(normals, "normals", means2d, E * 3);
    check_optional_input(depths, "depths", means2d, E);
    TORCH_CHECK(colors.dim() == 2 && colors.size(0) == E && colors.size(1) >= 1, "colors must be [E, D]");
    check_input(colors, "colors", means2d);
    for (const at::Tensor* t : {&transforms, &colors, &opacities, &normals, &depths})
        TORCH_CHECK(t->scalar_type() == means2d.scalar_type(), "the surfels' values must share one dtype");
    TORCH_CHECK(isect_offsets.dim() == 3, "isect_offsets must be [I, TH, TW]");
    check_int_input(isect_offsets, "isect_offsets", means2d, isect_offsets.numel());
    check_int_input(flatten_ids, "flatten_ids", means2d, flatten_ids.numel());
    check_numeric(entry_count_error(E), E);
    check_numeric(intersection_count_error(flatten_ids.numel()), flatten_ids.numel());
}

template <typename T>
SurfelRasterArgs<T> surfel_raster_args(const at::Tensor& means2d, const at::Tensor& transforms,
                                       const at::Tensor& colors, const at::Tensor& opacities,
                                       const at::Tensor& normals, const at::Tensor& depths, int64_t width,
                                       int64_t height, int64_t tile_size, const at::Tensor& isect_offsets,
                                       const at::Tensor& flatten_ids) {
    return {means2d.data_ptr<T>(),
            transforms.data_ptr<T>(),
            colors.data_ptr<T>(),
            opacities.data_ptr<T>(),
            normals.data_ptr<T>(),
            depths.data_ptr<T>(),
            isect_offsets.data_ptr<int32_t>(),
            flatten_ids.data_ptr<int32_t>(),
            opacities.numel(),
            flatten_ids.numel(),
            isect_offsets.numel(),
            int(width),
            int(height),
            int(tile_size),
            int(isect_offsets.size(2)),
            int(isect_offsets.size(1)),
            int(colors.size(1)),
            kernel_threads()};
}

// -> colors [I,H,W,D] (no background), alphas [I,H,W,1], normals [I,H,W,3], distortions [I,H,W,1],
//    medians [I,H,W,1], transmittance [I,H,W], depth_sums [I,H,W], last_ids [I,H,W], median_ids [I,H,W]
template <typename Backend>
std::vector<at::Tensor> rasterize_surfels_forward(const at::Tensor& means2d, const at::Tensor& transforms,
                                                  const at::Tensor& colors, const at::Tensor& opacities,
                                                  const at::Tensor& normals, const at::Tensor& depths,
                                                  int64_t width, int64_t height, int64_t tile_size,
                                                  const at::Tensor& isect_offsets,
                                                  const at::Tensor& flatten_ids) {
    check_surfel_raster_inputs(means2d, transforms, colors, opacities, normals, depths, tile_size,
                               isect_offsets, flatten_ids);
    const typename Backend::Guard guard(means2d.device());
    const int64_t I = isect_offsets.size(0), D = colors.size(1);
    auto opts = means2d.options();
    std::vector<at::Tensor> out = {at::empty({I, height, width, D}, opts),
                                   at::empty({I, height, width, 1}, opts),
                                   at::empty({I, height, width, 3}, opts),
                                   at::empty({I, height, width, 1}, opts),
                                   at::empty({I, height, width, 1}, opts),
                                   at::empty({I, height, width}, opts),
                                   at::empty({I, height, width}, opts),
                                   at::empty({I, height, width}, opts.dtype(at::kInt)),
                                   at::empty({I, height, width}, opts.dtype(at::kInt))};
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_surfels_forward", [&] {
        using T = scalar_t;
        Backend::rasterize_surfels_forward(
            surfel_raster_args<T>(means2d, transforms, colors, opacities, normals, depths, width, height,
                                  tile_size, isect_offsets, flatten_ids),
            SurfelRasterOutputs<T>{out[0].data_ptr<T>(), out[1].data_ptr<T>(), out[2].data_ptr<T>(),
                                   out[3].data_ptr<T>(), out[4].data_ptr<T>(), out[5].data_ptr<T>(),
                                   out[6].data_ptr<T>(), out[7].data_ptr<int32_t>(),
                                   out[8].data_ptr<int32_t>()});
    });
    return out;
}

// -> v_means2d, v_means2d_abs (empty unless absgrad), v_transforms, v_colors, v_opacities, v_normals,
//    v_depths
template <typename Backend>
std::vector<at::Tensor> rasterize_surfels_backward(
    const at::Tensor& means2d, const at::Tensor& transforms, const at::Tensor& colors,
    const at::Tensor& opacities, const at::Tensor& normals, const at::Tensor& depths, int64_t width,
    int64_t height, int64_t tile_size, const at::Tensor& isect_offsets, const at::Tensor& flatten_ids,
    const at::Tensor& transmittance, const at::Tensor& depth_sums, const at::Tensor& last_ids,
    const at::Tensor& median_ids, const at::Tensor& v_colors, const at::Tensor& v_alphas,
    const at::Tensor& v_normals, const at::Tensor& v_distortions, const at::Tensor& v_medians, bool absgrad) {
    check_surfel_raster_inputs(means2d, transforms, colors, opacities, normals, depths, tile_size,
                               isect_offsets, flatten_ids);
    const int64_t pixels = isect_offsets.size(0) * height * width, D = colors.size(1);
    check_optional_input(transmittance, "transmittance", means2d, pixels);
    check_optional_input(depth_sums, "depth_sums", means2d, pixels);
    check_int_input(last_ids, "last_ids", means2d, pixels);
    check_int_input(median_ids, "median_ids", means2d, pixels);
    const at::Tensor vc = v_colors.contiguous(), va = v_alphas.contiguous(), vn = v_normals.contiguous(),
                     vd = v_distortions.contiguous(), vm = v_medians.contiguous();
    check_optional_input(vc, "v_colors", means2d, pixels * D);
    check_optional_input(va, "v_alphas", means2d, pixels);
    check_optional_input(vn, "v_normals", means2d, pixels * 3);
    check_optional_input(vd, "v_distortions", means2d, pixels);
    check_optional_input(vm, "v_medians", means2d, pixels);
    const typename Backend::Guard guard(means2d.device());
    auto opts = means2d.options();
    at::Tensor g_means2d = at::zeros_like(means2d);
    at::Tensor g_abs = absgrad ? at::zeros_like(means2d) : at::empty({0}, opts);
    at::Tensor g_transforms = at::zeros_like(transforms), g_colors = at::zeros_like(colors);
    at::Tensor g_opacities = at::zeros_like(opacities), g_normals = at::zeros_like(normals);
    at::Tensor g_depths = at::zeros_like(depths);
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_surfels_backward", [&] {
        using T = scalar_t;
        Backend::rasterize_surfels_backward(
            surfel_raster_args<T>(means2d, transforms, colors, opacities, normals, depths, width, height,
                                  tile_size, isect_offsets, flatten_ids),
            SurfelRasterBackwardInputs<T>{transmittance.data_ptr<T>(), depth_sums.data_ptr<T>(),
                                          last_ids.data_ptr<int32_t>(), median_ids.data_ptr<int32_t>(),
                                          vc.data_ptr<T>(), va.data_ptr<T>(), vn.data_ptr<T>(),
                                          vd.data_ptr<T>(), vm.data_ptr<T>()},
            SurfelRasterGradients<T>{g_means2d.data_ptr<T>(), absgrad ? g_abs.data_ptr<T>() : nullptr,
                                     g_transforms.data_ptr<T>(), g_colors.data_ptr<T>(),
                                     g_opacities.data_ptr<T>(), g_normals.data_ptr<T>(),
                                     g_depths.data_ptr<T>()});
    });
    return {g_means2d, g_abs, g_transforms, g_colors, g_opacities, g_normals, g_depths};
}

template <typename Backend>
void register_surfel_ops(torch::Library& m) {
    m.impl("project_surfels_forward", &project_surfels_forward<Backend>);
    m.impl("project_surfels_backward", &project_surfels_backward<Backend>);
    m.impl("rasterize_surfels_forward", &rasterize_surfels_forward<Backend>);
    m.impl("rasterize_surfels_backward", &rasterize_surfels_backward<Backend>);
}

}  // namespace gsplat_py::torch_ops
