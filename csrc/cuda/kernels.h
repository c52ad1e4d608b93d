// Interface between the torch wrapper of the CUDA ops (csrc/torch/cuda_ops.cpp) and the kernels (*.cu):
// the same functions as the CPU kernels (csrc/cpu/kernels.h), with a stream. The kernels include no
// torch header: nvcc compiles them with the CUDA toolkit alone, which is how CI checks them on machines
// whose torch has no CUDA. Every function launches on `stream` and returns without synchronising, except
// bin_gaussians_to_tiles and project_gaussians_packed_forward, which must read a count. Errors (a failed
// launch, an out-of-memory sort) are thrown as std::runtime_error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "op_args.h"

namespace gsplat_py::cuda {

template <typename T>
void project_gaussians_forward(const ProjectionArgs<T>& args, const ProjectionOutputs<T>& out,
                               cudaStream_t stream);
// The visible pairs only, in pair order (the CPU backend's), into the outputs `memory` allocates; returns
// their number (it synchronises to read it, like the binning).
template <typename T>
int64_t project_gaussians_packed_forward(const ProjectionArgs<T>& args, PackedProjectionMemory<T>& memory,
                                         cudaStream_t stream);
template <typename T>
void project_gaussians_backward(const ProjectionArgs<T>& args, const ProjectionGradients<T>& grads,
                                cudaStream_t stream);
template <typename T>
void project_gaussians_packed_backward(const ProjectionArgs<T>& args, const PackedEntries& entries,
                                       const ProjectionGradients<T>& grads, cudaStream_t stream);

template <typename T>
void spherical_harmonics_forward(const ShArgs<T>& args, T* colors, cudaStream_t stream);
// Writes every element of v_dirs [M, 3] and the rows of v_coeffs (laid out as args.coeffs) the directions
// use.
template <typename T>
void spherical_harmonics_backward(const ShArgs<T>& args, const T* v_colors, T* v_dirs,
                                  const ShCoeffs<T>& v_coeffs, cudaStream_t stream);

// Fills tiles_per_gauss [E] and isect_offsets [I, TH, TW], and the flatten_ids and isect_ids it allocates
// through `memory`: each tile's entries sorted by depth, ties in index order (the CPU backend's order).
// Returns the number of intersections.
template <typename T>
int64_t bin_gaussians_to_tiles(const BinningArgs<T>& args, int32_t* tiles_per_gauss, int32_t* isect_offsets,
                               DeviceMemory& memory, cudaStream_t stream);

// Whether a kernel keeps D channels per pixel in registers; other counts run a generic kernel that
// keeps them in device memory (the output, or RasterBackwardInputs::channel_scratch).
bool raster_kernel_specialised(int channels);

template <typename T>
void rasterize_forward(const RasterArgs<T>& args, const RasterForwardOutputs<T>& out, cudaStream_t stream);
template <typename T>
void rasterize_backward(const RasterArgs<T>& args, const RasterBackwardInputs<T>& in,
                        const RasterGradients<T>& grads, cudaStream_t stream);

// Adam (adam_math.h) over every tensor of args, in place; rows whose `visible` entry is false untouched.
template <typename T>
void adam_step(const AdamArgs<T>& args, cudaStream_t stream);

}  // namespace gsplat_py::cuda
