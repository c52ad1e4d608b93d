// Checks at the C++ boundary of the registered ops, shared by the CPU and CUDA backends. The Python
// layer validates user input with friendlier messages; these guard direct calls to torch.ops.gsplat_py.
// The dispatcher picks a backend by the inputs' device, so the checks only need the inputs to share
// the first one's device (a CPU tensor among CUDA ones lands in the CUDA kernel, and fails here).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace gsplat_py {

inline void check_input(const at::Tensor& t, const char* name, const at::Tensor& reference) {
    TORCH_CHECK(t.device() == reference.device(), name, " is on ", t.device(), " but the other inputs are on ",
                reference.device());
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

inline void check_projection_inputs(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                    const c10::optional<at::Tensor>& opacities, const at::Tensor& viewmats,
                                    const at::Tensor& Ks) {
    check_input(means, "means", means);
    check_input(quats, "quats", means);
    check_input(scales, "scales", means);
    check_input(viewmats, "viewmats", means);
    check_input(Ks, "Ks", means);
    if (opacities.has_value()) check_input(*opacities, "opacities", means);
}

inline void check_sh_inputs(int64_t degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                            const c10::optional<at::Tensor>& masks) {
    check_input(dirs, "dirs", dirs);
    check_input(coeffs, "coeffs", dirs);
    const int64_t bases = (degree + 1) * (degree + 1);
    TORCH_CHECK(degree >= 0 && degree <= 3, "sh degree must be in 0..3, got ", degree);
    TORCH_CHECK(dirs.dim() == 2 && dirs.size(1) == 3, "dirs must be [M, 3]");
    TORCH_CHECK(coeffs.dim() == 3 && coeffs.size(0) == dirs.size(0) && coeffs.size(2) == 3,
                "coeffs must be [M, K, 3]");
    TORCH_CHECK(coeffs.size(1) >= bases, "coeffs has ", coeffs.size(1), " bases, degree ", degree, " needs ", bases);
    if (masks.has_value()) {
        check_input(*masks, "masks", dirs);
        TORCH_CHECK(masks->scalar_type() == at::kBool && masks->numel() == dirs.size(0), "masks must be bool [M]");
    }
}

inline void check_binning_inputs(const at::Tensor& means2d, const at::Tensor& radii, const at::Tensor& depths) {
    check_input(means2d, "means2d", means2d);
    check_input(radii, "radii", means2d);
    check_input(depths, "depths", means2d);
    TORCH_CHECK(means2d.dim() == 3 && means2d.size(2) == 2, "means2d must be [C, N, 2]");
    TORCH_CHECK(radii.scalar_type() == at::kInt, "radii must be int32");
}

inline void check_raster_inputs(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                                const at::Tensor& opacities, const c10::optional<at::Tensor>& backgrounds,
                                int64_t tile_size, const at::Tensor& isect_offsets, const at::Tensor& flatten_ids) {
    check_input(means2d, "means2d", means2d);
    check_input(conics, "conics", means2d);
    check_input(colors, "colors", means2d);
    check_input(opacities, "opacities", means2d);
    check_input(isect_offsets, "isect_offsets", means2d);
    check_input(flatten_ids, "flatten_ids", means2d);
    if (backgrounds.has_value()) check_input(*backgrounds, "backgrounds", means2d);
    TORCH_CHECK(tile_size > 0 && tile_size <= 64, "tile_size must be in 1..64, got ", tile_size);
    TORCH_CHECK(isect_offsets.dim() == 3, "isect_offsets must be [C, TH, TW]");
    TORCH_CHECK(flatten_ids.numel() < (int64_t(1) << 31), "too many intersections for int32 ids");
}

}  // namespace gsplat_py
