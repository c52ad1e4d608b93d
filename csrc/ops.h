// The compiled ops, one declaration per schema registered in ops.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace gsplat_py::cpu {

// -> radii [C,N,2] int32, means2d [C,N,2], depths [C,N], conics [C,N,3], compensations [C,N]
std::vector<at::Tensor> project_gaussians_forward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
    const c10::optional<at::Tensor>& opacities, const at::Tensor& viewmats, const at::Tensor& Ks,
    int64_t width, int64_t height, double eps2d, double near_plane, double far_plane,
    double radius_clip, bool calc_compensations, int64_t camera_model);

// -> v_means, v_quats, v_scales, v_viewmats, v_Ks (v_viewmats and v_Ks stay zero unless camera_grads)
std::vector<at::Tensor> project_gaussians_backward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
    const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width, int64_t height, double eps2d,
    int64_t camera_model, const at::Tensor& radii, const at::Tensor& v_means2d,
    const at::Tensor& v_depths, const at::Tensor& v_conics,
    const c10::optional<at::Tensor>& v_compensations, bool camera_grads);

// dirs [M,3], coeffs [M,K,3] -> colors [M,3]
at::Tensor spherical_harmonics_forward(int64_t degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                                       const c10::optional<at::Tensor>& masks);

// -> v_dirs, v_coeffs
std::vector<at::Tensor> spherical_harmonics_backward(int64_t degree, const at::Tensor& dirs,
                                                     const at::Tensor& coeffs,
                                                     const c10::optional<at::Tensor>& masks,
                                                     const at::Tensor& v_colors);

// -> tiles_per_gauss [C,N] int32, isect_offsets [C,TH,TW] int32, flatten_ids [M] int32
std::vector<at::Tensor> bin_gaussians_to_tiles(const at::Tensor& means2d, const at::Tensor& radii,
                                               const at::Tensor& depths, int64_t tile_size,
                                               int64_t tile_width, int64_t tile_height);

// The instruction-set level of the rasterizer kernels in use: "x86-64-v4", "x86-64-v3" or "baseline".
std::string simd_level();

// -> render_colors [C,H,W,D], render_alphas [C,H,W,1], transmittance [C,H,W], last_ids [C,H,W] int32
std::vector<at::Tensor> rasterize_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& colors, const at::Tensor& opacities,
                                          const c10::optional<at::Tensor>& backgrounds, int64_t width,
                                          int64_t height, int64_t tile_size,
                                          const at::Tensor& isect_offsets, const at::Tensor& flatten_ids);

// -> v_means2d, v_means2d_abs (empty unless absgrad), v_conics, v_colors, v_opacities,
//    v_backgrounds (empty without backgrounds)
std::vector<at::Tensor> rasterize_backward(
    const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
    const at::Tensor& opacities, const c10::optional<at::Tensor>& backgrounds, int64_t width,
    int64_t height, int64_t tile_size, const at::Tensor& isect_offsets, const at::Tensor& flatten_ids,
    const at::Tensor& transmittance, const at::Tensor& last_ids, const at::Tensor& v_render_colors,
    const at::Tensor& v_render_alphas, bool absgrad);

// SSIM (11x11 Gaussian window, sigma 1.5, zero "same" padding) of [B, H, W, C] images: one value per image.
at::Tensor ssim_forward(const at::Tensor& img1, const at::Tensor& img2);
at::Tensor ssim_backward(const at::Tensor& img1, const at::Tensor& img2, const at::Tensor& v_result);

}  // namespace gsplat_py::cpu
