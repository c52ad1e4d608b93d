// 2D Gaussian splatting on the CPU: the projection of every (camera, surfel) pair, and the tile
// rasterizer (a thread per tile, a pixel at a time, front to back) with its backward pass, on the
// shared math and per-pixel loops of surfel_math.h and surfel_args.h. The backward writes one gradient record
// per intersection (each tile owns its intersections' records) and sums them per entry in intersection order,
// so the gradients are the same bits for any number of threads.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "surfel_kernels.h"

namespace gsplat_py::cpu {

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
    projection_backward_pairs(
        a.n_batches, a.n_cameras, a.n_gaussians, a.n_threads, g.v_viewmats, g.v_Ks,
        [&](int64_t pair) { return g.visible(pair); },
        [&](int64_t gauss, int64_t image, int64_t pair, T* cam) {
            project_surfel_vjp<T>(a.means + 3 * gauss, a.quats + 4 * gauss, a.scales + 3 * gauss,
                                  a.viewmats + 16 * image, a.Ks + 9 * image, g.v_means2d[2 * pair],
                                  g.v_means2d[2 * pair + 1], g.v_depths[pair], g.v_transforms + 9 * pair,
                                  g.v_normals + 3 * pair, g.v_means + 3 * gauss, g.v_quats + 4 * gauss,
                                  g.v_scales + 3 * gauss, cam, cam + kViewmatGradSlots);
        });
}

template <typename T>
void rasterize_surfels_forward(const SurfelRasterArgs<T>& a, const SurfelRasterOutputs<T>& out) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(a.n_threads, 1))
    for (int64_t t = 0; t < a.n_tiles; ++t) {
        const SurfelTile tile = surfel_tile(a, t);
        for (int64_t y = tile.y0; y < tile.y1; ++y)
            for (int64_t x = tile.x0; x < tile.x1; ++x) rasterize_surfel_pixel(a, out, tile, x, y);
    }
}

// Fields of an intersection's gradient record: mean2d, |mean2d|, transform, opacity, normal, depth, then the
// D colour channels.
constexpr int kRecordMean = 0, kRecordAbs = 2, kRecordTransform = 4, kRecordOpacity = 13, kRecordNormal = 14,
              kRecordDepth = 17, kRecordColors = 18;

template <typename T>
void rasterize_surfels_backward(const SurfelRasterArgs<T>& a, const SurfelRasterBackwardInputs<T>& in,
                                const SurfelRasterGradients<T>& g) {
    const int D = a.channels;
    const int record = kRecordColors + D;
    std::vector<T> records(size_t(a.n_isects) * size_t(record), T(0));
    // Each intersection belongs to one tile, so the tiles' threads write disjoint records.
    auto sink = [&](int64_t m, int64_t, const SurfelPixelGradient<T>& v) {
        T* rec = records.data() + m * record;
        for (int k = 0; k < 2; ++k) {
            rec[kRecordMean + k] += v.v_mean2d[k];
            rec[kRecordAbs + k] += v.v_mean2d_abs[k];
        }
        for (int k = 0; k < 9; ++k) rec[kRecordTransform + k] += v.v_transform[k];
        rec[kRecordOpacity] += v.v_opacity;
        for (int k = 0; k < 3; ++k) rec[kRecordNormal + k] += v.v_normal[k];
        rec[kRecordDepth] += v.v_depth;
        for (int k = 0; k < D; ++k) rec[kRecordColors + k] += v.weight * v.pixel_v_colors[k];
    };
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(a.n_threads, 1))
    for (int64_t t = 0; t < a.n_tiles; ++t) {
        const SurfelTile tile = surfel_tile(a, t);
        for (int64_t y = tile.y0; y < tile.y1; ++y)
            for (int64_t x = tile.x0; x < tile.x1; ++x)
                rasterize_surfel_pixel_backward(a, in, tile, x, y, sink);
    }
    // Sum the records per entry, in intersection order, then hand each field to its gradient.
    std::vector<T> sums(size_t(a.n_entries) * size_t(record), T(0));
    scatter_add_rows(
        records.data(), a.n_isects, record, [&](int64_t m) { return int64_t(a.flatten_ids[m]); }, sums.data(),
        a.n_threads);
    parallel_for(a.n_entries, 4096, a.n_threads, [&](int64_t begin, int64_t end) {
        for (int64_t e = begin; e < end; ++e) {
            const T* s = sums.data() + e * record;
            for (int k = 0; k < 2; ++k) {
                g.v_means2d[2 * e + k] += s[kRecordMean + k];
                if (g.v_means2d_abs) g.v_means2d_abs[2 * e + k] += s[kRecordAbs + k];
            }
            for (int k = 0; k < 9; ++k) g.v_transforms[9 * e + k] += s[kRecordTransform + k];
            g.v_opacities[e] += s[kRecordOpacity];
            for (int k = 0; k < 3; ++k) g.v_normals[3 * e + k] += s[kRecordNormal + k];
            g.v_depths[e] += s[kRecordDepth];
            for (int k = 0; k < D; ++k) g.v_colors[e * D + k] += s[kRecordColors + k];
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
