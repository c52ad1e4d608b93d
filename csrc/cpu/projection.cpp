// Projection of N Gaussians into C cameras (forward and backward), one (camera, Gaussian) pair at a
// time with the shared math of gsplat_math.h.
#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "gsplat_math.h"
#include "ops.h"

namespace gsplat_py::cpu {

namespace {

// Gaussians per chunk when reducing the gradients of the cameras: a fixed size (not one per thread)
// so the sum is the same for any thread count.
constexpr int64_t kCameraGradChunk = 2048;

template <typename T>
void project_forward_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                          const c10::optional<at::Tensor>& opacities, const at::Tensor& viewmats,
                          const at::Tensor& Ks, int64_t width, int64_t height, double eps2d,
                          double near_plane, double far_plane, double radius_clip,
                          bool calc_compensations, int64_t camera_model, at::Tensor& radii,
                          at::Tensor& means2d, at::Tensor& depths, at::Tensor& conics,
                          at::Tensor& compensations) {
    const int64_t N = means.size(0), C = viewmats.size(0);
    const T* mean_p = means.data_ptr<T>();
    const T* quat_p = quats.data_ptr<T>();
    const T* scale_p = scales.data_ptr<T>();
    const T* opacity_p = opacities.has_value() ? opacities->data_ptr<T>() : nullptr;
    const T* view_p = viewmats.data_ptr<T>();
    const T* K_p = Ks.data_ptr<T>();
    int32_t* radii_p = radii.data_ptr<int32_t>();
    T* m2d_p = means2d.data_ptr<T>();
    T* depth_p = depths.data_ptr<T>();
    T* conic_p = conics.data_ptr<T>();
    T* comp_p = compensations.data_ptr<T>();
    at::parallel_for(0, C * N, 1024, [&](int64_t begin, int64_t end) {
        for (int64_t idx = begin; idx < end; ++idx) {
            const int64_t c = idx / N, n = idx % N;
            ProjectedGaussian<T> g = project_gaussian<T>(
                mean_p + 3 * n, quat_p + 4 * n, scale_p + 3 * n, opacity_p ? opacity_p + n : nullptr,
                view_p + 16 * c, K_p + 9 * c, int(width), int(height), T(eps2d), T(near_plane),
                T(far_plane), T(radius_clip), calc_compensations, int(camera_model));
            if (!g.visible) continue;  // outputs were zero-initialised
            radii_p[2 * idx] = g.radius_x;
            radii_p[2 * idx + 1] = g.radius_y;
            m2d_p[2 * idx] = g.mean_x;
            m2d_p[2 * idx + 1] = g.mean_y;
            depth_p[idx] = g.depth;
            conic_p[3 * idx] = g.conic.a;
            conic_p[3 * idx + 1] = g.conic.b;
            conic_p[3 * idx + 2] = g.conic.c;
            comp_p[idx] = g.compensation;
        }
    });
}

template <typename T>
void project_backward_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                           const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                           int64_t height, double eps2d, int64_t camera_model,
                           const at::Tensor& radii, const at::Tensor& v_means2d,
                           const at::Tensor& v_depths, const at::Tensor& v_conics,
                           const c10::optional<at::Tensor>& v_compensations, bool camera_grads, at::Tensor& v_means,
                           at::Tensor& v_quats, at::Tensor& v_scales, at::Tensor& v_viewmats,
                           at::Tensor& v_Ks) {
    const int64_t N = means.size(0), C = viewmats.size(0);
    const T* mean_p = means.data_ptr<T>();
    const T* quat_p = quats.data_ptr<T>();
    const T* scale_p = scales.data_ptr<T>();
    const T* view_p = viewmats.data_ptr<T>();
    const T* K_p = Ks.data_ptr<T>();
    const int32_t* radii_p = radii.data_ptr<int32_t>();
    const T* vm2d_p = v_means2d.data_ptr<T>();
    const T* vdepth_p = v_depths.data_ptr<T>();
    const T* vconic_p = v_conics.data_ptr<T>();
    const T* vcomp_p = v_compensations.has_value() ? v_compensations->data_ptr<T>() : nullptr;
    T* vmean_p = v_means.data_ptr<T>();
    T* vquat_p = v_quats.data_ptr<T>();
    T* vscale_p = v_scales.data_ptr<T>();

    // Camera gradients: one partial sum per (camera, chunk of Gaussians), summed in chunk order.
    const int64_t n_chunks = (N + kCameraGradChunk - 1) / kCameraGradChunk;
    std::vector<T> cam_partial(camera_grads ? size_t(C * n_chunks * 20) : 0, T(0));  // 16 viewmat + 4 intrinsics

    at::parallel_for(0, n_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
        T discarded_camera_grads[20];
        for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
            const int64_t n_begin = chunk * kCameraGradChunk;
            const int64_t n_end = std::min(N, n_begin + kCameraGradChunk);
            for (int64_t n = n_begin; n < n_end; ++n) {
                for (int64_t c = 0; c < C; ++c) {  // cameras in order: fixed sum order per Gaussian
                    const int64_t idx = c * N + n;
                    if (radii_p[2 * idx] <= 0 || radii_p[2 * idx + 1] <= 0) continue;
                    T* cam = camera_grads ? cam_partial.data() + (c * n_chunks + chunk) * 20 : discarded_camera_grads;
                    Sym2<T> v_conic = {vconic_p[3 * idx], vconic_p[3 * idx + 1], vconic_p[3 * idx + 2]};
                    project_gaussian_vjp<T>(
                        mean_p + 3 * n, quat_p + 4 * n, scale_p + 3 * n, view_p + 16 * c, K_p + 9 * c,
                        int(width), int(height), T(eps2d), int(camera_model), vm2d_p[2 * idx],
                        vm2d_p[2 * idx + 1], vdepth_p[idx], v_conic, vcomp_p ? vcomp_p[idx] : T(0),
                        vmean_p + 3 * n, vquat_p + 4 * n, vscale_p + 3 * n, cam, cam + 16);
                }
            }
        }
    });

    if (!camera_grads) return;
    T* vview_p = v_viewmats.data_ptr<T>();
    T* vK_p = v_Ks.data_ptr<T>();
    for (int64_t c = 0; c < C; ++c) {
        for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
            const T* cam = cam_partial.data() + (c * n_chunks + chunk) * 20;
            for (int k = 0; k < 16; ++k) vview_p[16 * c + k] += cam[k];
            vK_p[9 * c + 0] += cam[16];  // fx
            vK_p[9 * c + 4] += cam[17];  // fy
            vK_p[9 * c + 2] += cam[18];  // cx
            vK_p[9 * c + 5] += cam[19];  // cy
        }
    }
}

}  // namespace

std::vector<at::Tensor> project_gaussians_forward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
    const c10::optional<at::Tensor>& opacities, const at::Tensor& viewmats, const at::Tensor& Ks,
    int64_t width, int64_t height, double eps2d, double near_plane, double far_plane,
    double radius_clip, bool calc_compensations, int64_t camera_model) {
    check_projection_inputs(means, quats, scales, opacities, viewmats, Ks);
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto opts = means.options();
    at::Tensor radii = at::zeros({C, N, 2}, opts.dtype(at::kInt));
    at::Tensor means2d = at::zeros({C, N, 2}, opts);
    at::Tensor depths = at::zeros({C, N}, opts);
    at::Tensor conics = at::zeros({C, N, 3}, opts);
    at::Tensor compensations = at::zeros({C, N}, opts);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_forward", [&] {
        project_forward_impl<scalar_t>(means, quats, scales, opacities, viewmats, Ks, width, height,
                                       eps2d, near_plane, far_plane, radius_clip, calc_compensations,
                                       camera_model, radii, means2d, depths, conics, compensations);
    });
    return {radii, means2d, depths, conics, compensations};
}

std::vector<at::Tensor> project_gaussians_backward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
    const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width, int64_t height, double eps2d,
    int64_t camera_model, const at::Tensor& radii, const at::Tensor& v_means2d,
    const at::Tensor& v_depths, const at::Tensor& v_conics,
    const c10::optional<at::Tensor>& v_compensations, bool camera_grads) {
    at::Tensor v_means = at::zeros_like(means);
    at::Tensor v_quats = at::zeros_like(quats);
    at::Tensor v_scales = at::zeros_like(scales);
    at::Tensor v_viewmats = at::zeros_like(viewmats);
    at::Tensor v_Ks = at::zeros_like(Ks);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_gaussians_backward", [&] {
        project_backward_impl<scalar_t>(means, quats, scales, viewmats, Ks, width, height, eps2d,
                                        camera_model, radii, v_means2d.contiguous(),
                                        v_depths.contiguous(), v_conics.contiguous(),
                                        v_compensations.has_value()
                                            ? c10::optional<at::Tensor>(v_compensations->contiguous())
                                            : c10::nullopt,
                                        camera_grads, v_means, v_quats, v_scales, v_viewmats, v_Ks);
    });
    return {v_means, v_quats, v_scales, v_viewmats, v_Ks};
}

}  // namespace gsplat_py::cpu
