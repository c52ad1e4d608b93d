// Checks at the C++ boundary of the registered ops, run by the torch wrappers of both backends: the
// tensors' device, contiguity and shapes here, the numeric arguments with op_args.h's checks. The
// Python layer validates user input with friendlier messages; these guard direct calls to
// torch.ops.gsplat_py. The dispatcher picks a backend by the inputs' device, so the checks only need the
// inputs to share the first one's device (a CPU tensor among CUDA ones lands in the CUDA kernel, and
// fails here).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include "op_args.h"

namespace gsplat_py {

inline void check_input(const at::Tensor& t, const char* name, const at::Tensor& reference) {
    TORCH_CHECK(t.device() == reference.device(), name, " is on ", t.device(),
                " but the other inputs are on ", reference.device());
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// `error` from one of op_args.h's checks; `got` says what was given.
template <typename... Got>
void check_numeric(const char* error, const Got&... got) {
    TORCH_CHECK(error == nullptr, error, ", got ", got...);
}

inline void check_projection_inputs(const at::Tensor& means, const at::Tensor& quats,
                                    const at::Tensor& scales, const c10::optional<at::Tensor>& opacities,
                                    const at::Tensor& viewmats, const at::Tensor& Ks) {
    check_input(means, "means", means);
    check_input(quats, "quats", means);
    check_input(scales, "scales", means);
    check_input(viewmats, "viewmats", means);
    check_input(Ks, "Ks", means);
    if (opacities.has_value()) check_input(*opacities, "opacities", means);
}

// The forward's checks, and the forward's outputs and their gradients (made contiguous by the caller)
// against the inputs: the backward reads C * N of each.
inline void check_projection_backward_inputs(const at::Tensor& means, const at::Tensor& quats,
                                             const at::Tensor& scales, const at::Tensor& viewmats,
                                             const at::Tensor& Ks, const at::Tensor& radii,
                                             const at::Tensor& v_means2d, const at::Tensor& v_depths,
                                             const at::Tensor& v_conics,
                                             const c10::optional<at::Tensor>& v_compensations) {
    check_projection_inputs(means, quats, scales, c10::nullopt, viewmats, Ks);
    const int64_t C = viewmats.size(0), N = means.size(0);
    check_input(radii, "radii", means);
    TORCH_CHECK(radii.scalar_type() == at::kInt, "radii must be int32");
    TORCH_CHECK(radii.numel() == C * N * 2, "radii must be [C, N, 2]");
    check_input(v_means2d, "v_means2d", means);
    TORCH_CHECK(v_means2d.numel() == C * N * 2, "v_means2d must be [C, N, 2]");
    check_input(v_depths, "v_depths", means);
    TORCH_CHECK(v_depths.numel() == C * N, "v_depths must be [C, N]");
    check_input(v_conics, "v_conics", means);
    TORCH_CHECK(v_conics.numel() == C * N * 3, "v_conics must be [C, N, 3]");
    if (v_compensations.has_value()) {
        check_input(*v_compensations, "v_compensations", means);
        TORCH_CHECK(v_compensations->numel() == C * N, "v_compensations must be [C, N]");
    }
}

inline void check_sh_inputs(int64_t degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                            const c10::optional<at::Tensor>& masks) {
    check_input(dirs, "dirs", dirs);
    check_input(coeffs, "coeffs", dirs);
    TORCH_CHECK(dirs.dim() == 2 && dirs.size(1) == 3, "dirs must be [M, 3]");
    TORCH_CHECK(coeffs.dim() == 3 && coeffs.size(0) == dirs.size(0) && coeffs.size(2) == 3,
                "coeffs must be [M, K, 3]");
    check_numeric(sh_error(degree, coeffs.size(1)), "degree ", degree, " and K = ", coeffs.size(1));
    if (masks.has_value()) {
        check_input(*masks, "masks", dirs);
        TORCH_CHECK(masks->scalar_type() == at::kBool && masks->numel() == dirs.size(0),
                    "masks must be bool [M]");
    }
}

inline void check_binning_inputs(const at::Tensor& means2d, const at::Tensor& radii, const at::Tensor& depths,
                                 int64_t tile_size) {
    check_input(means2d, "means2d", means2d);
    check_input(radii, "radii", means2d);
    check_input(depths, "depths", means2d);
    TORCH_CHECK(means2d.dim() == 3 && means2d.size(2) == 2, "means2d must be [C, N, 2]");
    TORCH_CHECK(radii.scalar_type() == at::kInt, "radii must be int32");
    check_numeric(tile_size_error(tile_size), tile_size);
    check_numeric(gaussian_count_error(means2d.size(0), means2d.size(1)), "C = ", means2d.size(0),
                  " and N = ", means2d.size(1));
}

inline void check_raster_inputs(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                                const at::Tensor& opacities, const c10::optional<at::Tensor>& backgrounds,
                                int64_t tile_size, const at::Tensor& isect_offsets,
                                const at::Tensor& flatten_ids) {
    check_input(means2d, "means2d", means2d);
    check_input(conics, "conics", means2d);
    check_input(colors, "colors", means2d);
    check_input(opacities, "opacities", means2d);
    check_input(isect_offsets, "isect_offsets", means2d);
    check_input(flatten_ids, "flatten_ids", means2d);
    if (backgrounds.has_value()) check_input(*backgrounds, "backgrounds", means2d);
    check_numeric(tile_size_error(tile_size), tile_size);
    TORCH_CHECK(isect_offsets.dim() == 3, "isect_offsets must be [C, TH, TW]");
    check_numeric(intersection_count_error(flatten_ids.numel()), flatten_ids.numel());
}

// The forward's outputs and the gradients of its images (made contiguous by the caller), against the
// inputs: the backward reads every pixel of each.
inline void check_raster_backward_inputs(const at::Tensor& means2d, const at::Tensor& isect_offsets,
                                         const at::Tensor& colors, int64_t width, int64_t height,
                                         const at::Tensor& transmittance, const at::Tensor& last_ids,
                                         const at::Tensor& v_render_colors,
                                         const at::Tensor& v_render_alphas) {
    const int64_t pixels = isect_offsets.size(0) * height * width;
    check_input(transmittance, "transmittance", means2d);
    TORCH_CHECK(transmittance.numel() == pixels, "transmittance must be [C, H, W]");
    check_input(last_ids, "last_ids", means2d);
    TORCH_CHECK(last_ids.scalar_type() == at::kInt && last_ids.numel() == pixels,
                "last_ids must be int32 [C, H, W]");
    check_input(v_render_colors, "v_render_colors", means2d);
    TORCH_CHECK(v_render_colors.numel() == pixels * colors.size(-1), "v_render_colors must be [C, H, W, D]");
    check_input(v_render_alphas, "v_render_alphas", means2d);
    TORCH_CHECK(v_render_alphas.numel() == pixels, "v_render_alphas must be [C, H, W, 1]");
}

// Four lists of one tensor per parameter and five of its settings; `visible` has one entry per row.
inline void check_adam_inputs(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                              at::TensorList exp_avg_sqs, size_t n_settings,
                              const c10::optional<at::Tensor>& visible) {
    const size_t count = params.size();
    TORCH_CHECK(count > 0, "params must hold at least one tensor");
    TORCH_CHECK(grads.size() == count && exp_avgs.size() == count && exp_avg_sqs.size() == count,
                "params, grads, exp_avgs and exp_avg_sqs must have one tensor per parameter");
    TORCH_CHECK(n_settings == count,
                "the settings (lrs, beta1s, beta2s, epss, steps) need one value per parameter");
    const at::Tensor& first = params[0];
    TORCH_CHECK(first.scalar_type() == at::kFloat || first.scalar_type() == at::kDouble,
                "params must be float32 or float64");
    for (size_t i = 0; i < count; ++i) {
        for (const at::Tensor& t : {params[i], grads[i], exp_avgs[i], exp_avg_sqs[i]}) {
            check_input(t, "every tensor of adam_step", first);
            TORCH_CHECK(t.scalar_type() == first.scalar_type(),
                        "every tensor of adam_step must have one dtype");
            TORCH_CHECK(t.sizes() == params[i].sizes(), "params[", i,
                        "]: its grad and moments must have its shape");
        }
        if (visible.has_value())
            TORCH_CHECK(params[i].dim() > 0 && params[i].size(0) == visible->numel(), "params[", i,
                        "] must have one row per entry of visible");
    }
    if (visible.has_value()) {
        check_input(*visible, "visible", first);
        TORCH_CHECK(visible->scalar_type() == at::kBool, "visible must be bool");
    }
}

inline void check_ssim_inputs(const at::Tensor& img1, const at::Tensor& img2) {
    check_input(img1, "img1", img1);
    check_input(img2, "img2", img1);
    TORCH_CHECK(img1.dim() == 4 && img1.sizes() == img2.sizes(),
                "img1 and img2 must be [B, H, W, C] of one shape");
    TORCH_CHECK(img1.scalar_type() == img2.scalar_type(), "img1 and img2 must share a dtype");
}

}  // namespace gsplat_py
