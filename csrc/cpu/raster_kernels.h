// Interface between the CPU rasterizer's entry points (rasterize.cpp) and its SIMD kernels
// (raster_kernels.cpp). The kernels use no torch headers: setup.py compiles raster_kernels.cpp once per
// x86-64 level (v4 = AVX-512, v3 = AVX2+FMA, and the baseline) into its own namespace, and
// rasterize.cpp picks the best one the CPU supports at run time; on aarch64 once, as `neon`.
#pragma once

#include <cstdint>

#include "op_args.h"

namespace gsplat_py::cpu {

// A gradient record per intersection: mean2d (2), |mean2d| (2), conic (3), opacity (1), D colours.
constexpr int kRecordFixed = 8;

template <typename T> struct BackwardOut {
    T* records;     // [M, kRecordFixed + D], every one written (zeros where no pixel blended it)
    T* background;  // [n_tiles, D]: per-tile partial gradient of the background, every tile written
};

#define GS_DECLARE_RASTER_KERNELS(isa)                                                               \
    namespace isa {                                                                                  \
    int simd_lanes(); /* float lanes of a vector: 16 AVX-512, 8 AVX2, 4 SSE2/NEON */                 \
    void rasterize_forward(const RasterArgs<float>& args, const RasterForwardOutputs<float>& out);   \
    void rasterize_backward(const RasterArgs<float>& args, const RasterBackwardInputs<float>& in,    \
                            const BackwardOut<float>& out);                                          \
    void rasterize_forward(const RasterArgs<double>& args, const RasterForwardOutputs<double>& out); \
    void rasterize_backward(const RasterArgs<double>& args, const RasterBackwardInputs<double>& in,  \
                            const BackwardOut<double>& out);                                         \
    }

GS_DECLARE_RASTER_KERNELS(x86_64_v4)
GS_DECLARE_RASTER_KERNELS(x86_64_v3)
GS_DECLARE_RASTER_KERNELS(baseline)
GS_DECLARE_RASTER_KERNELS(neon)

}  // namespace gsplat_py::cpu
