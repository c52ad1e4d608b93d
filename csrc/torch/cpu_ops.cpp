// The CPU ops: the kernels of csrc/cpu (kernels.h) behind the shared op wrappers (op_wrappers.h),
// registered for the CPU dispatch key, with the ops only the CPU backend has (SSIM, simd_level).
#include <string>
#include <vector>

#include "../cpu/kernels.h"
#include "../cpu/surfel_kernels.h"
#include "op_wrappers.h"
#include "surfel_wrappers.h"

namespace gsplat_py::torch_ops {

namespace {

struct CpuBackend {
    struct Guard {  // one CPU: no device to select
        explicit Guard(at::Device) {}
    };
    static bool needs_channel_scratch(int64_t) { return false; }

    template <typename T>
    static void project_gaussians_forward(const ProjectionArgs<T>& args, const ProjectionOutputs<T>& out) {
        cpu::project_gaussians_forward(args, out);
    }
    template <typename T>
    static void project_gaussians_packed_forward(const ProjectionArgs<T>& args,
                                                 PackedProjectionMemory<T>& memory) {
        cpu::project_gaussians_packed_forward(args, memory);
    }
    template <typename T>
    static void project_gaussians_backward(const ProjectionArgs<T>& args,
                                           const ProjectionGradients<T>& grads) {
        cpu::project_gaussians_backward(args, grads);
    }
    template <typename T>
    static void project_gaussians_packed_backward(const ProjectionArgs<T>& args, const PackedEntries& entries,
                                                  const ProjectionGradients<T>& grads) {
        cpu::project_gaussians_packed_backward(args, entries, grads);
    }
    template <typename T>
    static void spherical_harmonics_forward(const ShArgs<T>& args, T* colors) {
        cpu::spherical_harmonics_forward(args, colors);
    }
    template <typename T>
    static void spherical_harmonics_backward(const ShArgs<T>& args, const T* v_colors, T* v_dirs,
                                             const ShCoeffs<T>& v_coeffs) {
        cpu::spherical_harmonics_backward(args, v_colors, v_dirs, v_coeffs);
    }
    template <typename T>
    static void bin_gaussians_to_tiles(const BinningArgs<T>& args, int32_t* tiles_per_gauss,
                                       int32_t* isect_offsets, DeviceMemory& memory) {
        cpu::bin_gaussians_to_tiles(args, tiles_per_gauss, isect_offsets, memory);
    }
    template <typename T>
    static void rasterize_forward(const RasterArgs<T>& args, const RasterForwardOutputs<T>& out) {
        cpu::rasterize_forward(args, out);
    }
    template <typename T>
    static void rasterize_backward(const RasterArgs<T>& args, const RasterBackwardInputs<T>& in,
                                   const RasterGradients<T>& grads) {
        cpu::rasterize_backward(args, in, grads);
    }
    template <typename T>
    static void adam_step(const AdamArgs<T>& args) {
        cpu::adam_step(args);
    }
    template <typename T>
    static void project_surfels_forward(const SurfelProjectionArgs<T>& args,
                                        const SurfelProjectionOutputs<T>& out) {
        cpu::project_surfels_forward(args, out);
    }
    template <typename T>
    static void project_surfels_backward(const SurfelProjectionArgs<T>& args,
                                         const SurfelProjectionGradients<T>& grads) {
        cpu::project_surfels_backward(args, grads);
    }
    template <typename T>
    static void rasterize_surfels_forward(const SurfelRasterArgs<T>& args,
                                          const SurfelRasterOutputs<T>& out) {
        cpu::rasterize_surfels_forward(args, out);
    }
    template <typename T>
    static void rasterize_surfels_backward(const SurfelRasterArgs<T>& args,
                                           const SurfelRasterBackwardInputs<T>& in,
                                           const SurfelRasterGradients<T>& grads) {
        cpu::rasterize_surfels_backward(args, in, grads);
    }
};

template <typename T>
SsimArgs<T> ssim_args(const at::Tensor& img1, const at::Tensor& img2) {
    SsimArgs<T> a;
    a.img1 = img1.data_ptr<T>();
    a.img2 = img2.data_ptr<T>();
    a.batch = img1.size(0);
    a.height = img1.size(1);
    a.width = img1.size(2);
    a.channels = img1.size(3);
    a.n_threads = kernel_threads();
    return a;
}

// SSIM of [B, H, W, C] images: one value per image, and with keep_maps the blurred maps
// [B, C, kSsimMaps, H, W] the backward reads (else an empty tensor).
std::vector<at::Tensor> ssim_forward(const at::Tensor& img1, const at::Tensor& img2, bool keep_maps) {
    check_ssim_inputs(img1, img2);
    at::Tensor result = at::empty({img1.size(0)}, img1.options());
    at::Tensor maps =
        at::empty({img1.size(0), img1.size(3), kSsimMaps, img1.size(1), img1.size(2)}, img1.options());
    AT_DISPATCH_FLOATING_TYPES(img1.scalar_type(), "ssim_forward", [&] {
        using T = scalar_t;
        cpu::ssim_forward(ssim_args<T>(img1, img2), result.data_ptr<T>(), maps.data_ptr<T>());
    });
    return {result, keep_maps ? maps : at::empty({0}, img1.options())};
}

at::Tensor ssim_backward(const at::Tensor& img1, const at::Tensor& img2, const at::Tensor& maps,
                         const at::Tensor& v_result) {
    check_ssim_inputs(img1, img2);
    check_input(maps, "maps", img1);
    TORCH_CHECK(maps.scalar_type() == img1.scalar_type(), "maps must have the images' dtype");
    TORCH_CHECK(maps.numel() == img1.numel() * kSsimMaps, "maps must be [B, C, ", kSsimMaps,
                ", H, W]: ssim_forward's with keep_maps");
    TORCH_CHECK(v_result.numel() == img1.size(0), "v_result must have one value per image");
    at::Tensor v_img1 = at::empty(img1.sizes(), img1.options());
    const at::Tensor v_res = v_result.contiguous().to(img1.scalar_type());
    AT_DISPATCH_FLOATING_TYPES(img1.scalar_type(), "ssim_backward", [&] {
        using T = scalar_t;
        cpu::ssim_backward(ssim_args<T>(img1, img2), maps.data_ptr<T>(), v_res.data_ptr<T>(),
                           v_img1.data_ptr<T>());
    });
    return v_img1;
}

std::string simd_level() { return cpu::simd_level(); }

}  // namespace

}  // namespace gsplat_py::torch_ops

TORCH_LIBRARY_IMPL(gsplat_py, CPU, m) {
    gsplat_py::torch_ops::register_ops<gsplat_py::torch_ops::CpuBackend>(m);
    gsplat_py::torch_ops::register_surfel_ops<gsplat_py::torch_ops::CpuBackend>(m);
    m.impl("ssim_forward", &gsplat_py::torch_ops::ssim_forward);
    m.impl("ssim_backward", &gsplat_py::torch_ops::ssim_backward);
}

// simd_level has no tensor argument, hence no device to dispatch on: one kernel for every key.
TORCH_LIBRARY_IMPL(gsplat_py, CompositeImplicitAutograd, m) {
    m.impl("simd_level", &gsplat_py::torch_ops::simd_level);
}
