// Interface between the torch wrapper of the CPU ops (csrc/torch/cpu_ops.cpp) and the CPU kernels
// (csrc/cpu/*.cpp): the same functions as the CUDA kernels (csrc/cuda/kernels.h) take, without a stream.
// The kernels include no torch header; they run on args.n_threads OpenMP threads, and their results are
// the same bits for any thread count. Errors (too many intersections) are thrown as std::runtime_error.
#pragma once

#include <cstdint>

#include "op_args.h"

namespace gsplat_py::cpu {

template <typename T>
void project_gaussians_forward(const ProjectionArgs<T>& args, const ProjectionOutputs<T>& out);
// The visible pairs only, in pair order, into the outputs `memory` allocates; returns their number.
template <typename T>
int64_t project_gaussians_packed_forward(const ProjectionArgs<T>& args, PackedProjectionMemory<T>& memory);
template <typename T>
void project_gaussians_backward(const ProjectionArgs<T>& args, const ProjectionGradients<T>& grads);
template <typename T>
void project_gaussians_packed_backward(const ProjectionArgs<T>& args, const PackedEntries& entries,
                                       const ProjectionGradients<T>& grads);

template <typename T>
void spherical_harmonics_forward(const ShArgs<T>& args, T* colors);
// Writes every element of v_dirs [M, 3] and the rows of v_coeffs (laid out as args.coeffs) the directions
// use.
template <typename T>
void spherical_harmonics_backward(const ShArgs<T>& args, const T* v_colors, T* v_dirs,
                                  const ShCoeffs<T>& v_coeffs);

// Fills tiles_per_gauss [E] and isect_offsets [I, TH, TW], and the flatten_ids and isect_ids it allocates
// through `memory`: each tile's entries sorted by depth, ties in index order. Returns the number of
// intersections.
template <typename T>
int64_t bin_gaussians_to_tiles(const BinningArgs<T>& args, int32_t* tiles_per_gauss, int32_t* isect_offsets,
                               DeviceMemory& memory);

// The instruction-set level of the rasterizer kernels in use: "x86-64-v4", "x86-64-v3" or "baseline".
const char* simd_level();

template <typename T>
void rasterize_forward(const RasterArgs<T>& args, const RasterForwardOutputs<T>& out);
template <typename T>
void rasterize_backward(const RasterArgs<T>& args, const RasterBackwardInputs<T>& in,
                        const RasterGradients<T>& grads);

// Adam (adam_math.h) over every tensor of args, in place; rows whose `visible` entry is false untouched.
template <typename T>
void adam_step(const AdamArgs<T>& args);

// SSIM (11x11 Gaussian window, sigma 1.5, zero "same" padding) of [B, H, W, C] images: one value per
// image into result [B], and the blurred maps the backward reads into maps [B, C, 5, H, W]; the backward
// writes every element of v_img1 [B, H, W, C].
template <typename T>
void ssim_forward(const SsimArgs<T>& args, T* result, T* maps);
template <typename T>
void ssim_backward(const SsimArgs<T>& args, const T* maps, const T* v_result, T* v_img1);

}  // namespace gsplat_py::cpu
