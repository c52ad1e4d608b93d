// The CPU kernels of 2D Gaussian splatting (surfels): the same functions as the CUDA kernels
// (csrc/cuda/surfel_kernels.h) take, without a stream. Torch-free; OpenMP threads (args.n_threads); the
// results are the same bits for any thread count.
#pragma once

#include "surfel_args.h"

namespace gsplat_py::cpu {

template <typename T>
void project_surfels_forward(const SurfelProjectionArgs<T>& args, const SurfelProjectionOutputs<T>& out);
template <typename T>
void project_surfels_backward(const SurfelProjectionArgs<T>& args, const SurfelProjectionGradients<T>& grads);

template <typename T>
void rasterize_surfels_forward(const SurfelRasterArgs<T>& args, const SurfelRasterOutputs<T>& out);
template <typename T>
void rasterize_surfels_backward(const SurfelRasterArgs<T>& args, const SurfelRasterBackwardInputs<T>& in,
                                const SurfelRasterGradients<T>& grads);

}  // namespace gsplat_py::cpu
