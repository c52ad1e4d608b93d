// The CPU rasterizer's entry points: the choice of the SIMD kernels (raster_kernels.cpp) for this CPU,
// and the fixed-order reduction of the backward pass's per-intersection gradient records.
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "cpu_common.h"
#include "kernels.h"
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

template <typename T>
void dispatch_forward(const RasterArgs<T>& a, const RasterForwardOutputs<T>& out) {
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
void dispatch_backward(const RasterArgs<T>& a, const RasterBackwardInputs<T>& in, const BackwardOut<T>& out) {
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

}  // namespace

const char* simd_level() { return isa_name(kIsa); }

template <typename T>
void rasterize_forward(const RasterArgs<T>& args, const RasterForwardOutputs<T>& out) {
    dispatch_forward(args, out);
}

template <typename T>
void rasterize_backward(const RasterArgs<T>& a, const RasterBackwardInputs<T>& in,
                        const RasterGradients<T>& g) {
    const int64_t D = a.channels, M = a.n_isects, R = kRecordFixed + D;
    // Not zero-filled: the kernels write every value.
    const std::unique_ptr<T[]> records(new T[size_t(M * R)]);
    const std::unique_ptr<T[]> v_bg_tiles(new T[size_t(a.n_tiles * D)]);
    dispatch_backward(a, in, BackwardOut<T>{records.get(), v_bg_tiles.get()});

    // Sum the records of each Gaussian in intersection order: one record field per task, so the threads
    // never write the same value and the order of every sum stays fixed. (Each thread summing whole records
    // for the Gaussians of an id range read the records once per thread instead of once per field, but
    // took 15-30% longer at 100k Gaussians: its scattered writes span every gradient array at once.)
    struct FieldTarget {
        T* data;
        int64_t stride, offset, field;
    };
    std::vector<FieldTarget> targets;
    auto add_target = [&](T* data, int64_t stride, int64_t offset, int64_t field) {
        if (data) targets.push_back({data, stride, offset, field});  // v_means2d_abs: only with absgrad
    };
    add_target(g.v_means2d, 2, 0, 0);
    add_target(g.v_means2d, 2, 1, 1);
    add_target(g.v_means2d_abs, 2, 0, 2);
    add_target(g.v_means2d_abs, 2, 1, 3);
    add_target(g.v_conics, 3, 0, 4);
    add_target(g.v_conics, 3, 1, 5);
    add_target(g.v_conics, 3, 2, 6);
    add_target(g.v_opacities, 1, 0, 7);
    for (int64_t ch = 0; ch < D; ++ch) add_target(g.v_colors, D, ch, kRecordFixed + ch);
    parallel_for(int64_t(targets.size()), 1, a.n_threads, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
            const FieldTarget target = targets[t];
            for (int64_t i = 0; i < M; ++i)
                target.data[a.flatten_ids[i] * target.stride + target.offset] +=
                    records[i * R + target.field];
        }
    });
    if (g.v_backgrounds) {
        const int64_t tiles_per_camera = int64_t(a.tile_width) * a.tile_height;
        for (int64_t tile = 0; tile < a.n_tiles; ++tile)
            for (int64_t ch = 0; ch < D; ++ch)
                g.v_backgrounds[(tile / tiles_per_camera) * D + ch] += v_bg_tiles[tile * D + ch];
    }
}

template void rasterize_forward<float>(const RasterArgs<float>&, const RasterForwardOutputs<float>&);
template void rasterize_forward<double>(const RasterArgs<double>&, const RasterForwardOutputs<double>&);
template void rasterize_backward<float>(const RasterArgs<float>&, const RasterBackwardInputs<float>&,
                                        const RasterGradients<float>&);
template void rasterize_backward<double>(const RasterArgs<double>&, const RasterBackwardInputs<double>&,
                                         const RasterGradients<double>&);

}  // namespace gsplat_py::cpu
