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

// The projection's inputs: means [B, N, 3]; quats [B, N, 4] and scales [B, N, 3], or covars [B, N, 6];
// viewmats [B, C, 4, 4], Ks [B, C, 3, 3], radial_coeffs [B, C, 4] (fisheye) or none.
struct ProjectionInputs {
    const at::Tensor& means;
    const c10::optional<at::Tensor>& quats;
    const c10::optional<at::Tensor>& scales;
    const c10::optional<at::Tensor>& covars;
    const at::Tensor& viewmats;
    const at::Tensor& Ks;
    const c10::optional<at::Tensor>& radial_coeffs;
};

inline void check_optional_input(const c10::optional<at::Tensor>& t, const char* name,
                                 const at::Tensor& reference, int64_t numel) {
    if (!t.has_value()) return;
    check_input(*t, name, reference);
    TORCH_CHECK(t->numel() == numel, name, " has ", t->numel(), " values, expected ", numel);
}

// Per-Gaussian and per-camera inputs against means [B, N, 3] and viewmats [B, C, 4, 4]; opacities [B, N].
inline void check_projection_inputs(const ProjectionInputs& in, const c10::optional<at::Tensor>& opacities) {
    check_input(in.means, "means", in.means);
    check_input(in.viewmats, "viewmats", in.means);
    TORCH_CHECK(in.means.dim() == 3 && in.means.size(2) == 3, "means must be [B, N, 3]");
    TORCH_CHECK(in.viewmats.dim() == 4 && in.viewmats.size(0) == in.means.size(0) &&
                    in.viewmats.size(2) == 4 && in.viewmats.size(3) == 4,
                "viewmats must be [B, C, 4, 4]");
    const int64_t gaussians = in.means.size(0) * in.means.size(1);
    const int64_t cameras = in.viewmats.size(0) * in.viewmats.size(1);
    TORCH_CHECK(in.covars.has_value() != (in.quats.has_value() && in.scales.has_value()),
                "give either quats and scales or covars");
    check_optional_input(in.quats, "quats", in.means, gaussians * 4);
    check_optional_input(in.scales, "scales", in.means, gaussians * 3);
    check_optional_input(in.covars, "covars", in.means, gaussians * kCovarValues);
    check_optional_input(opacities, "opacities", in.means, gaussians);
    check_input(in.Ks, "Ks", in.means);
    TORCH_CHECK(in.Ks.numel() == cameras * 9, "Ks must be [B, C, 3, 3]");
    check_optional_input(in.radial_coeffs, "radial_coeffs", in.means, cameras * kFisheyeCoeffs);
}

inline void check_int_input(const at::Tensor& t, const char* name, const at::Tensor& reference,
                            int64_t numel) {
    check_input(t, name, reference);
    TORCH_CHECK(t.scalar_type() == at::kInt && t.numel() == numel, name, " must be int32 with ", numel,
                " values");
}

inline void check_id_input(const at::Tensor& t, const char* name, const at::Tensor& reference,
                           int64_t numel) {
    check_input(t, name, reference);
    TORCH_CHECK(t.scalar_type() == at::kLong && t.numel() == numel, name, " must be int64 with ", numel,
                " values");
}

// The gradients of the projection's outputs (made contiguous by the caller), `rows` of them: [B, C, N]
// pairs, or packed entries.
inline void check_projection_gradients(const at::Tensor& means, int64_t rows, const at::Tensor& v_means2d,
                                       const at::Tensor& v_depths, const at::Tensor& v_conics,
                                       const c10::optional<at::Tensor>& v_compensations) {
    check_input(v_means2d, "v_means2d", means);
    TORCH_CHECK(v_means2d.numel() == rows * 2, "v_means2d must have 2 values per row");
    check_input(v_depths, "v_depths", means);
    TORCH_CHECK(v_depths.numel() == rows, "v_depths must have a value per row");
    check_input(v_conics, "v_conics", means);
    TORCH_CHECK(v_conics.numel() == rows * 3, "v_conics must have 3 values per row");
    check_optional_input(v_compensations, "v_compensations", means, rows);
}

// With coeffs_rest, coeffs holds the first basis [R, 1, 3] and coeffs_rest the others [R, K - 1, 3].
inline void check_sh_inputs(int64_t degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                            const c10::optional<at::Tensor>& coeff_rows,
                            const c10::optional<at::Tensor>& masks,
                            const c10::optional<at::Tensor>& coeffs_rest) {
    check_input(dirs, "dirs", dirs);
    check_input(coeffs, "coeffs", dirs);
    TORCH_CHECK(dirs.dim() == 2 && dirs.size(1) == 3, "dirs must be [M, 3]");
    TORCH_CHECK(coeffs.dim() == 3 && coeffs.size(2) == 3, "coeffs must be [R, K, 3]");
    int64_t bases = coeffs.size(1);
    if (coeffs_rest.has_value()) {
        check_input(*coeffs_rest, "coeffs_rest", dirs);
        TORCH_CHECK(coeffs.size(1) == 1, "coeffs must be [R, 1, 3] with coeffs_rest");
        TORCH_CHECK(
            coeffs_rest->dim() == 3 && coeffs_rest->size(0) == coeffs.size(0) && coeffs_rest->size(2) == 3,
            "coeffs_rest must be [R, K - 1, 3] (R of coeffs)");
        bases += coeffs_rest->size(1);
    }
    if (coeff_rows.has_value())
        check_id_input(*coeff_rows, "coeff_rows", dirs, dirs.size(0));
    else
        TORCH_CHECK(coeffs.size(0) == dirs.size(0), "coeffs must be [M, K, 3] without coeff_rows");
    check_numeric(sh_error(degree, bases), "degree ", degree, " and K = ", bases);
    if (masks.has_value()) {
        check_input(*masks, "masks", dirs);
        TORCH_CHECK(masks->scalar_type() == at::kBool && masks->numel() == dirs.size(0),
                    "masks must be bool [M]");
    }
}

inline void check_binning_inputs(const at::Tensor& means2d, const at::Tensor& radii, const at::Tensor& depths,
                                 const c10::optional<at::Tensor>& image_ids, int64_t n_images,
                                 int64_t tile_size) {
    check_input(means2d, "means2d", means2d);
    check_input(depths, "depths", means2d);
    const int64_t entries = depths.numel();
    TORCH_CHECK(means2d.numel() == 2 * entries, "means2d must have 2 values per entry of depths");
    check_int_input(radii, "radii", means2d, 2 * entries);
    TORCH_CHECK(n_images >= 0, "n_images must be >= 0");
    if (image_ids.has_value())
        check_id_input(*image_ids, "image_ids", means2d, entries);
    else
        TORCH_CHECK(n_images > 0 ? entries % n_images == 0 : entries == 0,
                    "without image_ids, depths must hold N entries per image");
    check_numeric(tile_size_error(tile_size), tile_size);
    check_numeric(entry_count_error(entries), entries, " entries");
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
