// The rasterize ops on CPU tensors: checks, allocation, choice of the SIMD kernels for this CPU, and
// the fixed-order reduction of the backward pass's per-intersection gradient records.
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu_common.h"
#include "ops.h"
#include "raster_kernels.h"

namespace gsplat_py::cpu {

namespace {

// The most capable kernel build this CPU runs; GSPLAT_PY_SIMD=baseline|x86-64-v3|x86-64-v4 asks for a
// lower one (the tests run every build this way). aarch64 has one build, NEON.
enum class Isa { kX86_64_V4, kX86_64_V3, kBaseline, kNeon };

Isa detect_isa() {
#if defined(__aarch64__)
    return Isa::kNeon;
#endif
    const char* requested = std::getenv("GSPLAT_PY_SIMD");
    const std::string wanted = requested ? requested : "";
    if (wanted == "baseline") return Isa::kBaseline;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    const bool v4 = __builtin_cpu_supports("x86-64-v4"), v3 = __builtin_cpu_supports("x86-64-v3");
    if (wanted == "x86-64-v3" && v3) return Isa::kX86_64_V3;
    if ((wanted.empty() || wanted == "x86-64-v4") && v4) return Isa::kX86_64_V4;
    if (v3) return Isa::kX86_64_V3;
#endif
    return Isa::kBaseline;
}

const Isa kIsa = detect_isa();

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::kX86_64_V4: return "x86-64-v4";
        case Isa::kX86_64_V3: return "x86-64-v3";
        case Isa::kNeon: return "neon";
        default: return "baseline";
    }
}

template <typename T> void dispatch_forward(const RasterArgs<T>& a, const ForwardOut<T>& out) {
    switch (kIsa) {
#if defined(__x86_64__)
        case Isa::kX86_64_V4: return x86_64_v4::rasterize_forward(a, out);
        case Isa::kX86_64_V3: return x86_64_v3::rasterize_forward(a, out);
#endif
#if defined(__aarch64__)
        default: return neon::rasterize_forward(a, out);
#else
        default: return baseline::rasterize_forward(a, out);
#endif
    }
}

template <typename T>
void dispatch_backward(const RasterArgs<T>& a, const BackwardIn<T>& in, const BackwardOut<T>& out) {
    switch (kIsa) {
#if defined(__x86_64__)
        case Isa::kX86_64_V4: return x86_64_v4::rasterize_backward(a, in, out);
        case Isa::kX86_64_V3: return x86_64_v3::rasterize_backward(a, in, out);
#endif
#if defined(__aarch64__)
        default: return neon::rasterize_backward(a, in, out);
#else
        default: return baseline::rasterize_backward(a, in, out);
#endif
    }
}

template <typename T>
RasterArgs<T> make_args(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                        const at::Tensor& opacities, const c10::optional<at::Tensor>& backgrounds,
                        int64_t width, int64_t height, int64_t tile_size,
                        const at::Tensor& isect_offsets, const at::Tensor& flatten_ids) {
    RasterArgs<T> a;
    a.means2d = means2d.data_ptr<T>();
    a.conics = conics.data_ptr<T>();
    a.colors = colors.data_ptr<T>();
    a.opacities = opacities.data_ptr<T>();
    a.backgrounds = backgrounds.has_value() ? backgrounds->data_ptr<T>() : nullptr;
    a.isect_offsets = isect_offsets.data_ptr<int32_t>();
    a.flatten_ids = flatten_ids.data_ptr<int32_t>();
    a.n_gaussians = opacities.numel();
    a.n_isects = flatten_ids.numel();
    a.n_tiles = isect_offsets.numel();
    a.width = int(width);
    a.height = int(height);
    a.tile_size = int(tile_size);
    a.tile_height = int(isect_offsets.size(1));
    a.tile_width = int(isect_offsets.size(2));
    a.channels = int(colors.size(-1));
    a.n_threads = num_threads();
    return a;
}

}  // namespace

std::string simd_level() { return isa_name(kIsa); }

std::vector<at::Tensor> rasterize_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& colors, const at::Tensor& opacities,
                                          const c10::optional<at::Tensor>& backgrounds, int64_t width,
                                          int64_t height, int64_t tile_size,
                                          const at::Tensor& isect_offsets,
                                          const at::Tensor& flatten_ids) {
    check_raster_inputs(means2d, conics, colors, opacities, backgrounds, tile_size, isect_offsets, flatten_ids);
    const int64_t C = isect_offsets.size(0), D = colors.size(-1);
    auto opts = means2d.options();
    at::Tensor render_colors = at::empty({C, height, width, D}, opts);
    at::Tensor render_alphas = at::empty({C, height, width, 1}, opts);
    at::Tensor transmittance = at::empty({C, height, width}, opts);
    at::Tensor last_ids = at::empty({C, height, width}, opts.dtype(at::kInt));
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_forward", [&] {
        const RasterArgs<scalar_t> a = make_args<scalar_t>(means2d, conics, colors, opacities, backgrounds,
                                                           width, height, tile_size, isect_offsets, flatten_ids);
        const ForwardOut<scalar_t> out = {render_colors.data_ptr<scalar_t>(),
                                          render_alphas.data_ptr<scalar_t>(),
                                          transmittance.data_ptr<scalar_t>(), last_ids.data_ptr<int32_t>()};
        dispatch_forward(a, out);
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
    const at::Tensor v_colors_c = v_render_colors.contiguous();
    const at::Tensor v_alphas_c = v_render_alphas.contiguous();
    const int64_t C = isect_offsets.size(0), D = colors.size(-1), M = flatten_ids.numel();
    const int64_t R = kRecordFixed + D;
    at::Tensor v_means2d = at::zeros_like(means2d);
    at::Tensor v_means2d_abs = absgrad ? at::zeros_like(means2d) : at::empty({0}, means2d.options());
    at::Tensor v_conics = at::zeros_like(conics);
    at::Tensor v_colors = at::zeros_like(colors);
    at::Tensor v_opacities = at::zeros_like(opacities);
    at::Tensor v_backgrounds =
        backgrounds.has_value() ? at::zeros_like(*backgrounds) : at::empty({0}, means2d.options());
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "rasterize_backward", [&] {
        using T = scalar_t;
        const RasterArgs<T> a = make_args<T>(means2d, conics, colors, opacities, backgrounds, width,
                                             height, tile_size, isect_offsets, flatten_ids);
        const BackwardIn<T> in = {transmittance.data_ptr<T>(), last_ids.data_ptr<int32_t>(),
                                  v_colors_c.data_ptr<T>(), v_alphas_c.data_ptr<T>()};
        std::vector<T> records(size_t(M * R), T(0));
        std::vector<T> v_bg_tiles(size_t(a.n_tiles * D), T(0));
        dispatch_backward(a, in, BackwardOut<T>{records.data(), v_bg_tiles.data()});

        // Sum the records of each Gaussian in intersection order: one record field per task, so the
        // threads never write the same value and the order of every sum stays fixed.
        struct FieldTarget {
            T* data;
            int64_t stride, offset;
        };
        std::vector<FieldTarget> targets = {
            {v_means2d.data_ptr<T>(), 2, 0}, {v_means2d.data_ptr<T>(), 2, 1},
            {absgrad ? v_means2d_abs.data_ptr<T>() : nullptr, 2, 0},
            {absgrad ? v_means2d_abs.data_ptr<T>() : nullptr, 2, 1},
            {v_conics.data_ptr<T>(), 3, 0}, {v_conics.data_ptr<T>(), 3, 1}, {v_conics.data_ptr<T>(), 3, 2},
            {v_opacities.data_ptr<T>(), 1, 0}};
        for (int64_t ch = 0; ch < D; ++ch) targets.push_back({v_colors.data_ptr<T>(), D, ch});
        at::parallel_for(0, int64_t(targets.size()), 1, [&](int64_t begin, int64_t end) {
            for (int64_t field = begin; field < end; ++field) {
                const FieldTarget target = targets[field];
                if (!target.data) continue;
                for (int64_t i = 0; i < M; ++i)
                    target.data[a.flatten_ids[i] * target.stride + target.offset] += records[i * R + field];
            }
        });
        if (backgrounds.has_value()) {
            T* vbg = v_backgrounds.data_ptr<T>();
            const int64_t tiles_per_camera = a.n_tiles / C;
            for (int64_t tile = 0; tile < a.n_tiles; ++tile)
                for (int64_t ch = 0; ch < D; ++ch)
                    vbg[(tile / tiles_per_camera) * D + ch] += v_bg_tiles[tile * D + ch];
        }
    });
    return {v_means2d, v_means2d_abs, v_conics, v_colors, v_opacities, v_backgrounds};
}

}  // namespace gsplat_py::cpu
