// Projection of N Gaussians into C cameras (forward and backward), one (camera, Gaussian) pair at a
// time with the shared math of gsplat_math.h.
#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "gsplat_math.h"
#include "kernels.h"

namespace gsplat_py::cpu {

namespace {

// Pairs per thread at least.
constexpr int64_t kProjectionGrain = 1024;

// Gaussians per chunk when reducing the gradients of the cameras: a fixed size (not one per thread)
// so the sum is the same for any thread count.
constexpr int64_t kCameraGradChunk = 2048;

}  // namespace

template <typename T>
void project_gaussians_forward(const ProjectionArgs<T>& a, const ProjectionOutputs<T>& out) {
    const int64_t N = a.n_gaussians;
    parallel_for(a.n_cameras * N, kProjectionGrain, a.n_threads, [&](int64_t begin, int64_t end) {
        for (int64_t idx = begin; idx < end; ++idx) {
            const int64_t c = idx / N, n = idx % N;
            const ProjectedGaussian<T> g = project_gaussian<T>(
                a.means + 3 * n, a.quats + 4 * n, a.scales + 3 * n, a.opacities ? a.opacities + n : nullptr,
                a.viewmats + 16 * c, a.Ks + 9 * c, a.width, a.height, a.eps2d, a.near_plane, a.far_plane,
                a.radius_clip, a.calc_compensations, a.camera_model);
            if (g.visible) out.store(idx, g);  // outputs were zero-initialised
        }
    });
}

template <typename T>
void project_gaussians_backward(const ProjectionArgs<T>& a, const ProjectionGradients<T>& g) {
    const int64_t N = a.n_gaussians, C = a.n_cameras;
    const bool camera_grads = g.v_viewmats != nullptr;

    // Camera gradients: one partial sum per (camera, chunk of Gaussians), summed in chunk order.
    const int64_t n_chunks = (N + kCameraGradChunk - 1) / kCameraGradChunk;
    std::vector<T> cam_partial(camera_grads ? size_t(C * n_chunks * kCameraGradSlots) : 0, T(0));

    parallel_for(n_chunks, 1, a.n_threads, [&](int64_t chunk_begin, int64_t chunk_end) {
        T discarded_camera_grads[kCameraGradSlots];
        for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
            const int64_t n_begin = chunk * kCameraGradChunk;
            const int64_t n_end = std::min(N, n_begin + kCameraGradChunk);
            for (int64_t n = n_begin; n < n_end; ++n) {
                for (int64_t c = 0; c < C; ++c) {  // cameras in order: fixed sum order per Gaussian
                    const int64_t idx = c * N + n;
                    if (g.radii[2 * idx] <= 0 || g.radii[2 * idx + 1] <= 0) continue;
                    T* cam = camera_grads ? cam_partial.data() + (c * n_chunks + chunk) * kCameraGradSlots
                                          : discarded_camera_grads;
                    const Sym2<T> v_conic = {g.v_conics[3 * idx], g.v_conics[3 * idx + 1],
                                             g.v_conics[3 * idx + 2]};
                    project_gaussian_vjp<T>(
                        a.means + 3 * n, a.quats + 4 * n, a.scales + 3 * n, a.viewmats + 16 * c, a.Ks + 9 * c,
                        a.width, a.height, a.eps2d, a.camera_model, g.v_means2d[2 * idx],
                        g.v_means2d[2 * idx + 1], g.v_depths[idx], v_conic,
                        g.v_compensations ? g.v_compensations[idx] : T(0), g.v_means + 3 * n,
                        g.v_quats + 4 * n, g.v_scales + 3 * n, cam, cam + kViewmatGradSlots);
                }
            }
        }
    });

    if (!camera_grads) return;
    for (int64_t c = 0; c < C; ++c) {
        for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
            const T* cam = cam_partial.data() + (c * n_chunks + chunk) * kCameraGradSlots;
            for (int k = 0; k < kViewmatGradSlots; ++k) g.v_viewmats[16 * c + k] += cam[k];
            for (int i = 0; i < kIntrinsics; ++i)
                g.v_Ks[9 * c + K_index_of_intrinsic(i)] += cam[kViewmatGradSlots + i];
        }
    }
}

template void project_gaussians_forward<float>(const ProjectionArgs<float>&, const ProjectionOutputs<float>&);
template void project_gaussians_forward<double>(const ProjectionArgs<double>&,
                                                const ProjectionOutputs<double>&);
template void project_gaussians_backward<float>(const ProjectionArgs<float>&,
                                                const ProjectionGradients<float>&);
template void project_gaussians_backward<double>(const ProjectionArgs<double>&,
                                                 const ProjectionGradients<double>&);

}  // namespace gsplat_py::cpu
