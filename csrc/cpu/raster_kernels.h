// Interface between the torch-facing rasterize op (rasterize.cpp) and the SIMD kernels
// (raster_kernels.cpp). The kernels use no torch headers: setup.py compiles raster_kernels.cpp once per
// x86-64 level (v4 = AVX-512, v3 = AVX2+FMA, and the baseline) into its own namespace, and
// rasterize.cpp picks the best one the CPU supports at run time; on aarch64 once, as `neon`.
#pragma once

#include <cstdint>

namespace gsplat_py::cpu {

template <typename T> struct RasterArgs {
    const T* means2d;              // [C*N, 2]
    const T* conics;               // [C*N, 3]
    const T* colors;               // [C*N, D]
    const T* opacities;            // [C*N]
    const T* backgrounds;          // [C, D] or null
    const int32_t* isect_offsets;  // [C*TH*TW]
    const int32_t* flatten_ids;    // [M]
    int64_t n_gaussians;  // C*N
    int64_t n_isects;
    int64_t n_tiles;  // C*TH*TW
    int width, height, tile_size, tile_width, tile_height, channels;
    int n_threads;
};

template <typename T> struct ForwardOut {
    T* colors;          // [C, H, W, D]
    T* alphas;          // [C, H, W]
    T* transmittance;   // [C, H, W]
    int32_t* last_ids;  // [C, H, W]: last blended intersection per pixel, -1 if none
};

template <typename T> struct BackwardIn {
    const T* transmittance;   // [C, H, W]
    const int32_t* last_ids;  // [C, H, W]
    const T* v_colors;        // [C, H, W, D]
    const T* v_alphas;        // [C, H, W]
};

// A gradient record per intersection: mean2d (2), |mean2d| (2), conic (3), opacity (1), D colours.
constexpr int kRecordFixed = 8;

template <typename T> struct BackwardOut {
    T* records;     // [M, kRecordFixed + D]
    T* background;  // [n_tiles, D]: per-tile partial gradient of the background
};

#define GS_DECLARE_RASTER_KERNELS(isa)                                                           \
    namespace isa {                                                                              \
    int simd_lanes(); /* float lanes of a vector: 16 AVX-512, 8 AVX2, 4 SSE2/NEON */            \
    void rasterize_forward(const RasterArgs<float>& args, const ForwardOut<float>& out);        \
    void rasterize_backward(const RasterArgs<float>& args, const BackwardIn<float>& in,         \
                            const BackwardOut<float>& out);                                      \
    void rasterize_forward(const RasterArgs<double>& args, const ForwardOut<double>& out);      \
    void rasterize_backward(const RasterArgs<double>& args, const BackwardIn<double>& in,       \
                            const BackwardOut<double>& out);                                     \
    }

GS_DECLARE_RASTER_KERNELS(x86_64_v4)
GS_DECLARE_RASTER_KERNELS(x86_64_v3)
GS_DECLARE_RASTER_KERNELS(baseline)
GS_DECLARE_RASTER_KERNELS(neon)

}  // namespace gsplat_py::cpu
