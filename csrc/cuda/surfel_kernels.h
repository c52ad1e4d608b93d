// The CUDA kernels of 2D Gaussian splatting (surfels): the functions of csrc/cpu/surfel_kernels.h, with
// a stream. Torch-free (nvcc compiles them with the CUDA toolkit alone); every function launches on
// `stream` and returns without synchronising; a failed launch is thrown as std::runtime_error.
#pragma once

#include <cuda_runtime_api.h>

#include "surfel_args.h"

namespace gsplat_py::cuda {

template <typename T>
void project_surfels_forward(const SurfelProjectionArgs<T>& args, const SurfelProjectionOutputs<T>& out,
                             cudaStream_t stream);
template <typename T>
void project_surfels_backward(const SurfelProjectionArgs<T>& args, const SurfelProjectionGradients<T>& grads,
                              cudaStream_t stream);

template <typename T>
void rasterize_surfels_forward(const SurfelRasterArgs<T>& args, const SurfelRasterOutputs<T>& out,
                               cudaStream_t stream);
template <typename T>
void rasterize_surfels_backward(const SurfelRasterArgs<T>& args, const SurfelRasterBackwardInputs<T>& in,
                                const SurfelRasterGradients<T>& grads, cudaStream_t stream);

}  // namespace gsplat_py::cuda
