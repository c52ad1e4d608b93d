// The CUDA ops: the kernels of csrc/cuda (kernels.h) behind the shared op wrappers (op_wrappers.h), on
// the current stream and the inputs' device, registered for the CUDA dispatch key. Built only when
// PyTorch has CUDA.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../cuda/kernels.h"
#include "../cuda/surfel_kernels.h"
#include "op_wrappers.h"
#include "surfel_wrappers.h"

namespace gsplat_py::torch_ops {

namespace {

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

struct CudaBackend {
    using Guard = c10::cuda::CUDAGuard;
    static bool needs_channel_scratch(int64_t channels) {
        return !cuda::raster_kernel_specialised(int(channels));
    }

    template <typename T>
    static void project_gaussians_forward(const ProjectionArgs<T>& args, const ProjectionOutputs<T>& out) {
        cuda::project_gaussians_forward(args, out, current_stream());
    }
    template <typename T>
    static void project_gaussians_packed_forward(const ProjectionArgs<T>& args,
                                                 PackedProjectionMemory<T>& memory) {
        cuda::project_gaussians_packed_forward(args, memory, current_stream());
    }
    template <typename T>
    static void project_gaussians_backward(const ProjectionArgs<T>& args,
                                           const ProjectionGradients<T>& grads) {
        cuda::project_gaussians_backward(args, grads, current_stream());
    }
    template <typename T>
    static void project_gaussians_packed_backward(const ProjectionArgs<T>& args, const PackedEntries& entries,
                                                  const ProjectionGradients<T>& grads) {
        cuda::project_gaussians_packed_backward(args, entries, grads, current_stream());
    }
    template <typename T>
    static void spherical_harmonics_forward(const ShArgs<T>& args, T* colors) {
        cuda::spherical_harmonics_forward(args, colors, current_stream());
    }
    template <typename T>
    static void spherical_harmonics_backward(const ShArgs<T>& args, const T* v_colors, T* v_dirs,
                                             const ShCoeffs<T>& v_coeffs) {
        cuda::spherical_harmonics_backward(args, v_colors, v_dirs, v_coeffs, current_stream());
    }
    template <typename T>
    static void bin_gaussians_to_tiles(const BinningArgs<T>& args, int32_t* tiles_per_gauss,
                                       int32_t* isect_offsets, DeviceMemory& memory) {
        cuda::bin_gaussians_to_tiles(args, tiles_per_gauss, isect_offsets, memory, current_stream());
    }
    template <typename T>
    static void rasterize_forward(const RasterArgs<T>& args, const RasterForwardOutputs<T>& out) {
        cuda::rasterize_forward(args, out, current_stream());
    }
    template <typename T>
    static void rasterize_backward(const RasterArgs<T>& args, const RasterBackwardInputs<T>& in,
                                   const RasterGradients<T>& grads) {
        cuda::rasterize_backward(args, in, grads, current_stream());
    }
    template <typename T>
    static void adam_step(const AdamArgs<T>& args) {
        cuda::adam_step(args, current_stream());
    }
    template <typename T>
    static void project_surfels_forward(const SurfelProjectionArgs<T>& args,
                                        const SurfelProjectionOutputs<T>& out) {
        cuda::project_surfels_forward(args, out, current_stream());
    }
    template <typename T>
    static void project_surfels_backward(const SurfelProjectionArgs<T>& args,
                                         const SurfelProjectionGradients<T>& grads) {
        cuda::project_surfels_backward(args, grads, current_stream());
    }
    template <typename T>
    static void rasterize_surfels_forward(const SurfelRasterArgs<T>& args,
                                          const SurfelRasterOutputs<T>& out) {
        cuda::rasterize_surfels_forward(args, out, current_stream());
    }
    template <typename T>
    static void rasterize_surfels_backward(const SurfelRasterArgs<T>& args,
                                           const SurfelRasterBackwardInputs<T>& in,
                                           const SurfelRasterGradients<T>& grads) {
        cuda::rasterize_surfels_backward(args, in, grads, current_stream());
    }
};

}  // namespace

}  // namespace gsplat_py::torch_ops

TORCH_LIBRARY_IMPL(gsplat_py, CUDA, m) {
    gsplat_py::torch_ops::register_ops<gsplat_py::torch_ops::CudaBackend>(m);
    gsplat_py::torch_ops::register_surfel_ops<gsplat_py::torch_ops::CudaBackend>(m);
}
