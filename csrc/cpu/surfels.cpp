// 2D Gaussian splatting on the CPU: the projection of every (camera, surfel) pair, and the tile
// rasterizer (a thread per tile, a pixel at a time, front to back) with its backward pass, on the
// shared math of surfel_math.h. The backward writes one gradient record per intersection (each tile
// owns its intersections' records) and sums them per entry in intersection order, so the gradients are
// the same bits for any number of threads.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "surfel_kernels.h"

namespace gsplat_py::cpu {

namespace {

constexpr int64_t kProjectionGrain = 1024;  // pairs per thread at least
// Surfels per chunk when reducing the cameras' gradients: a fixed size, so the sum does not depend on the
// number of threads.
constexpr int64_t kCameraGradChunk = 2048;

// A tile's pixels and its range of intersections.
struct TileRange {
    int64_t image, x0, y0, x1, y1;  // pixels [x0, x1) x [y0, y1) of `image`
    int64_t begin, end;             // intersections [begin, end)
};

template <typename T>
TileRange tile_range(const SurfelRasterArgs<T>& a, int64_t tile) {
    const int64_t per_image = int64_t(a.tile_width) * a.tile_height;
    const int64_t in_image = tile % per_image;
    const int64_t x0 = (in_image % a.tile_width) * a.tile_size, y0 = (in_image / a.tile_width) * a.tile_size;
    return {tile / per_image,
            x0,
            y0,
            std::min<int64_t>(a.width, x0 + a.tile_size),
            std::min<int64_t>(a.height, y0 + a.tile_size),
            a.isect_offsets[tile],
            tile + 1 < a.n_tiles ? a.isect_offsets[tile + 1] : a.n_isects};
}

// The alpha of a surfel at a pixel, or a negative value where it does not take part in blending.
template <typename T>
T surfel_alpha(const SurfelHit<T>& h, T opacity, T* vis_out) {
    if (!h.hit) return T(-1);
    const T vis = splat_exp(-h.sigma);
    const T alpha = splat_alpha<T, T>(opacity, vis);
    *vis_out = vis;
    return splat_contributes<T, T>(h.sigma, alpha) ? alpha : T(-1);
}

}  // namespace

template <typename T>
void project_surfels_forward(const SurfelProjectionArgs<T>& a, const SurfelProjectionOutputs<T>& out) {
    parallel_for(a.n_pairs(), kProjectionGrain, a.n_threads, [&](int64_t begin, int64_t end) {
        for (int64_t pair = begin; pair < end; ++pair) {
            const ProjectedSurfel<T> s = a.project(pair);
            if (s.visible) out.store(pair, s);  // outputs were zero-initialised
        }
    });
}

template <typename T>
void project_surfels_backward(const SurfelProjectionArgs<T>& a, const SurfelProjectionGradients<T>& g) {
    const int64_t N = a.n_gaussians, C = a.n_cameras;
    const bool camera_grads = g.v_viewmats != nullptr;
    // Camera gradients: one partial sum (viewmat, then fx, fy, cx, cy) per chunk of a batch's surfels and
    // camera, summed in chunk order.
    const int64_t chunks_per_batch = (N + kCameraGradChunk - 1) / kCameraGradChunk;
    const int64_t n_chunks = a.n_batches * chunks_per_batch;
    std::vector<T> cam_partial(camera_grads ? size_t(n_chunks * C * kCameraGradSlots) : 0, T(0));
    parallel_for(n_chunks, 1, a.n_threads, [&](int64_t chunk_begin, int64_t chunk_end) {
        T discarded[kCameraGradSlots];
        for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
            const int64_t b = chunk / chunks_per_batch;
            const int64_t n_begin = (chunk % chunks_per_batch) * kCameraGradChunk;
            const int64_t n_end = std::min(N, n_begin + kCameraGradChunk);
            for (int64_t n = n_begin; n < n_end; ++n) {
                const int64_t gauss = b * N + n;
                for (int64_t c = 0; c < C; ++c) {  // cameras in order: a fixed sum order per surfel
                    const int64_t image = b * C + c, pair = image * N + n;
                    if (!g.visible(pair)) continue;
                    T* cam =
                        camera_grads ? cam_partial.data() + (chunk * C + c) * kCameraGradSlots : discarded;
                    project_surfel_vjp<T>(a.means + 3 * gauss, a.quats + 4 * gauss, a.scales + 3 * gauss,
                                          a.viewmats + 16 * image, a.Ks + 9 * image, g.v_means2d[2 * pair],
                                          g.v_means2d[2 * pair + 1], g.v_depths[pair],
                                          g.v_transforms + 9 * pair, g.v_normals + 3 * pair,
                                          g.v_means + 3 * gauss, g.v_quats + 4 * gauss,
                                          g.v_scales + 3 * gauss, cam, cam + kViewmatGradSlots);
                }
            }
        }
    });
    if (!camera_grads) return;
    for (int64_t image = 0; image < a.n_images(); ++image) {
        const int64_t b = image / C, c = image % C;
        for (int64_t k = 0; k < chunks_per_batch; ++k) {
            const T* slots = cam_partial.data() + ((b * chunks_per_batch + k) * C + c) * kCameraGradSlots;
            for (int i = 0; i < kViewmatGradSlots; ++i) g.v_viewmats[16 * image + i] += slots[i];
            for (int i = 0; i < kIntrinsics; ++i)
                g.v_Ks[9 * image + K_index_of_intrinsic(i)] += slots[kViewmatGradSlots + i];
        }
    }
}

template <typename T>
void rasterize_surfels_forward(const SurfelRasterArgs<T>& a, const SurfelRasterOutputs<T>& out) {
    const int D = a.channels;
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(a.n_threads, 1))
    for (int64_t tile = 0; tile < a.n_tiles; ++tile) {
        const TileRange r = tile_range(a, tile);
        for (int64_t y = r.y0; y < r.y1; ++y)
            for (int64_t x = r.x0; x < r.x1; ++x) {
                const int64_t pixel = (r.image * a.height + y) * a.width + x;
                const T px = T(x) + T(0.5), py = T(y) + T(0.5);
                T* color = out.colors + pixel * D;
                T* normal = out.normals + pixel * 3;
                std::fill(color, color + D, T(0));
                std::fill(normal, normal + 3, T(0));
                T trans = T(1), distortion = T(0), depth_sum = T(0), median = T(0);
                int32_t last = -1, median_id = -1;
                for (int64_t m = r.begin; m < r.end; ++m) {
                    const int64_t e = a.flatten_ids[m];
                    const SurfelHit<T> h =
                        surfel_hit(a.transforms + 9 * e, a.means2d[2 * e], a.means2d[2 * e + 1], px, py);
                    T vis;
                    const T alpha = surfel_alpha(h, a.opacities[e], &vis);
                    if (alpha < T(0)) continue;
                    const T next = trans * (T(1) - alpha);
                    if (next <= T(kTransmittanceMin)) break;  // this surfel is not blended
                    const T weight = alpha * trans, depth = a.depths[e];
                    for (int k = 0; k < D; ++k) color[k] += weight * a.colors[e * D + k];
                    for (int k = 0; k < 3; ++k) normal[k] += weight * a.normals[3 * e + k];
                    distortion += T(2) * weight * (depth * (T(1) - trans) - depth_sum);
                    depth_sum += weight * depth;
                    if (trans > T(0.5)) {
                        median = depth;
                        median_id = int32_t(m);
                    }
                    last = int32_t(m);
                    trans = next;
                }
                out.alphas[pixel] = T(1) - trans;
                out.transmittance[pixel] = trans;
                out.distortions[pixel] = distortion;
                out.depth_sums[pixel] = depth_sum;
                out.medians[pixel] = median;
                out.last_ids[pixel] = last;
                out.median_ids[pixel] = median_id;
            }
    }
}

template <typename T>
void rasterize_surfels_backward(const SurfelRasterArgs<T>& a, const SurfelRasterBackwardInputs<T>& in,
                                const SurfelRasterGradients<T>& g) {
    const int D = a.channels;
    const int record = kSurfelRecordFixed + D;
    // record layout: mean2d 0-1, |mean2d| 2-3, transform 4-12, opacity 13, normal 14-16, depth 17, colours
    std::vector<T> records(size_t(a.n_isects) * size_t(record), T(0));
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(a.n_threads, 1))
    for (int64_t tile = 0; tile < a.n_tiles; ++tile) {
        const TileRange r = tile_range(a, tile);
        for (int64_t y = r.y0; y < r.y1; ++y)
            for (int64_t x = r.x0; x < r.x1; ++x) {
                const int64_t pixel = (r.image * a.height + y) * a.width + x;
                const int32_t last = in.last_ids[pixel];
                if (last < 0) continue;
                const T px = T(x) + T(0.5), py = T(y) + T(0.5);
                const T* v_color = in.v_colors + pixel * D;
                const T* v_normal = in.v_normals + pixel * 3;
                const T v_distortion = in.v_distortions[pixel];
                const T trans_final = in.transmittance[pixel], depth_sum = in.depth_sums[pixel];
                // Walking back: the transmittance behind the current surfel, and the sums over the surfels
                // behind it of the weight times its per-weight gradient, of the weights and of w d.
                T trans = trans_final, behind = T(0), w_after = T(0), d_after = T(0);
                for (int64_t m = last; m >= r.begin; --m) {
                    const int64_t e = a.flatten_ids[m];
                    const T* tr = a.transforms + 9 * e;
                    const SurfelHit<T> h = surfel_hit(tr, a.means2d[2 * e], a.means2d[2 * e + 1], px, py);
                    T vis;
                    const T opacity = a.opacities[e];
                    const T alpha = surfel_alpha(h, opacity, &vis);
                    if (alpha < T(0)) continue;
                    const T ra = T(1) / (T(1) - alpha);
                    const T trans_before = trans * ra, weight = alpha * trans_before, depth = a.depths[e];
                    T v_weight = T(0);
                    for (int k = 0; k < D; ++k) v_weight += v_color[k] * a.colors[e * D + k];
                    for (int k = 0; k < 3; ++k) v_weight += v_normal[k] * a.normals[3 * e + k];
                    const DistortionGrad<T> dist =
                        distortion_vjp(weight, depth, T(1) - trans_before,
                                       depth_sum - d_after - weight * depth, w_after, d_after);
                    v_weight += v_distortion * dist.v_weight;
                    const T v_alpha =
                        v_weight * trans_before - behind * ra + in.v_alphas[pixel] * trans_final * ra;

                    T* rec = records.data() + m * record;
                    for (int k = 0; k < D; ++k) rec[kSurfelRecordFixed + k] += weight * v_color[k];
                    for (int k = 0; k < 3; ++k) rec[14 + k] += weight * v_normal[k];
                    rec[17] += v_distortion * dist.v_depth +
                               (m == in.median_ids[pixel] ? in.v_medians[pixel] : T(0));
                    if (!(opacity * vis > T(kMaxAlpha))) {  // a clamped alpha has no gradient
                        rec[13] += vis * v_alpha;
                        T v_mean2d[2] = {T(0), T(0)};
                        surfel_sigma_vjp(h, px, py, -opacity * vis * v_alpha, v_mean2d, rec + 4);
                        rec[0] += v_mean2d[0];
                        rec[1] += v_mean2d[1];
                        rec[2] += std::abs(v_mean2d[0]);
                        rec[3] += std::abs(v_mean2d[1]);
                    }
                    behind += v_weight * weight;
                    w_after += weight;
                    d_after += weight * depth;
                    trans = trans_before;
                }
            }
    }
    // Sum the records per entry, in intersection order, then hand each field to its gradient.
    std::vector<T> sums(size_t(a.n_entries) * size_t(record), T(0));
    scatter_add_rows(
        records.data(), a.n_isects, record, [&](int64_t m) { return int64_t(a.flatten_ids[m]); }, sums.data(),
        a.n_threads);
    parallel_for(a.n_entries, 4096, a.n_threads, [&](int64_t begin, int64_t end) {
        for (int64_t e = begin; e < end; ++e) {
            const T* s = sums.data() + e * record;
            g.v_means2d[2 * e] += s[0];
            g.v_means2d[2 * e + 1] += s[1];
            if (g.v_means2d_abs) {
                g.v_means2d_abs[2 * e] += s[2];
                g.v_means2d_abs[2 * e + 1] += s[3];
            }
            for (int k = 0; k < 9; ++k) g.v_transforms[9 * e + k] += s[4 + k];
            g.v_opacities[e] += s[13];
            for (int k = 0; k < 3; ++k) g.v_normals[3 * e + k] += s[14 + k];
            g.v_depths[e] += s[17];
            for (int k = 0; k < D; ++k) g.v_colors[e * D + k] += s[kSurfelRecordFixed + k];
        }
    });
}

#define GS_INSTANTIATE_SURFELS(T)                                                                          \
    template void project_surfels_forward<T>(const SurfelProjectionArgs<T>&,                               \
                                             const SurfelProjectionOutputs<T>&);                           \
    template void project_surfels_backward<T>(const SurfelProjectionArgs<T>&,                              \
                                              const SurfelProjectionGradients<T>&);                        \
    template void rasterize_surfels_forward<T>(const SurfelRasterArgs<T>&, const SurfelRasterOutputs<T>&); \
    template void rasterize_surfels_backward<T>(                                                           \
        const SurfelRasterArgs<T>&, const SurfelRasterBackwardInputs<T>&, const SurfelRasterGradients<T>&);
GS_INSTANTIATE_SURFELS(float)
GS_INSTANTIATE_SURFELS(double)
#undef GS_INSTANTIATE_SURFELS

}  // namespace gsplat_py::cpu
