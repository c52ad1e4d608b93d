// Projection of B batches of N Gaussians into their C cameras (forward and backward), one (camera,
// Gaussian) pair at a time with the shared math of gsplat_math.h; unpacked ([B, C, N] outputs) or packed
// (the visible pairs only).
#include <algorithm>
#include <vector>

#include "cpu_common.h"
#include "gsplat_math.h"
#include "kernels.h"

namespace gsplat_py::cpu {

namespace {

// The gradient rows of the Gaussians of one (quats and scales) or the other (covars) input, as separate
// buffers of `rows` rows.
template <typename T>
struct GradientRows {
    std::vector<T> means, quats, scales, covars;
    GradientRows(const GaussianGradients<T>& like, int64_t rows)
        : means(size_t(3 * rows), T(0)),
          quats(like.v_quats ? size_t(4 * rows) : 0, T(0)),
          scales(like.v_scales ? size_t(3 * rows) : 0, T(0)),
          covars(like.v_covars ? size_t(kCovarValues * rows) : 0, T(0)) {}
    GaussianGradients<T> view() {
        return {means.data(), quats.empty() ? nullptr : quats.data(),
                scales.empty() ? nullptr : scales.data(), covars.empty() ? nullptr : covars.data()};
    }
};

}  // namespace

template <typename T>
void project_gaussians_forward(const ProjectionArgs<T>& a, const ProjectionOutputs<T>& out) {
    parallel_for(a.n_pairs(), kProjectionGrain, a.n_threads, [&](int64_t begin, int64_t end) {
        for (int64_t pair = begin; pair < end; ++pair) {
            const ProjectedGaussian<T> g = a.project(pair);
            if (g.visible) out.store(pair, g);  // outputs were zero-initialised
        }
    });
}

template <typename T>
int64_t project_gaussians_packed_forward(const ProjectionArgs<T>& a, PackedProjectionMemory<T>& memory) {
    // One pass: every thread keeps the visible pairs of its range, in order; the ranges concatenated in
    // order are the pair order, for any number of threads. The dense [B, C, N] outputs never exist.
    struct Visible {
        int64_t pair;
        ProjectedGaussian<T> g;
    };
    const int64_t total = a.n_pairs();
    const int n_ranges = range_count(total, kProjectionGrain, a.n_threads);
    std::vector<std::vector<Visible>> found(static_cast<size_t>(n_ranges));
    parallel_ranges(total, n_ranges, [&](int r, int64_t begin, int64_t end) {
        std::vector<Visible>& list = found[size_t(r)];
        for (int64_t pair = begin; pair < end; ++pair) {
            const ProjectedGaussian<T> g = a.project(pair);
            if (g.visible) list.push_back({pair, g});
        }
    });
    std::vector<int64_t> first(size_t(n_ranges) + 1, 0);
    for (int r = 0; r < n_ranges; ++r)
        first[size_t(r) + 1] = first[size_t(r)] + int64_t(found[size_t(r)].size());
    const int64_t nnz = first.back();
    const ProjectionOutputs<T> out = memory.allocate(nnz);
    parallel_ranges(int64_t(n_ranges), n_ranges, [&](int, int64_t r_begin, int64_t r_end) {
        for (int64_t r = r_begin; r < r_end; ++r) {
            std::vector<Visible>& list = found[size_t(r)];
            for (size_t i = 0; i < list.size(); ++i) {
                const int64_t row = first[size_t(r)] + int64_t(i);
                out.store(row, list[i].g);
                out.store_ids(row, list[i].pair, a.n_cameras, a.n_gaussians);
            }
            std::vector<Visible>().swap(list);
        }
    });
    return nnz;
}

template <typename T>
void project_gaussians_backward(const ProjectionArgs<T>& a, const ProjectionGradients<T>& g) {
    projection_backward_pairs(
        a.n_batches, a.n_cameras, a.n_gaussians, a.n_threads, g.v_viewmats, g.v_Ks,
        [&](int64_t pair) { return g.radii[2 * pair] > 0 && g.radii[2 * pair + 1] > 0; },
        [&](int64_t gauss, int64_t image, int64_t pair, T* cam) {
            project_gaussian_vjp<T>(a.gaussian(gauss), a.camera(image), a.width, a.height, a.eps2d,
                                    g.at(pair), g.gaussians.row(gauss), cam, cam + kViewmatGradSlots);
        });
}

template <typename T>
void project_gaussians_packed_backward(const ProjectionArgs<T>& a, const PackedEntries& e,
                                       const ProjectionGradients<T>& g) {
    const int64_t N = a.n_gaussians, C = a.n_cameras, nnz = e.nnz;
    const bool camera_grads = g.v_viewmats != nullptr;
    auto image_of = [&](int64_t i) { return e.batch_ids[i] * C + e.camera_ids[i]; };
    auto gaussian_of = [&](int64_t i) { return e.batch_ids[i] * N + e.gaussian_ids[i]; };
    // Where an entry's Gaussian gradients go: its own row (sparse); the Gaussian's row when no other entry
    // has that Gaussian (one camera per batch); else a row of `records`, summed per Gaussian afterwards.
    const bool direct = e.per_entry || C == 1;
    GradientRows<T> records(g.gaussians, direct ? 0 : nnz);
    const GaussianGradients<T> targets = direct ? g.gaussians : records.view();

    // Camera gradients: per chunk of entries, one partial sum for each image of the chunk's range (entries
    // are sorted by image), summed in chunk order.
    const int64_t n_chunks = (nnz + kCameraGradChunk - 1) / kCameraGradChunk;
    std::vector<std::vector<T>> cam_partial(camera_grads ? size_t(n_chunks) : 0);

    parallel_for(n_chunks, 1, a.n_threads, [&](int64_t chunk_begin, int64_t chunk_end) {
        T discarded_camera_grads[kCameraGradSlots];
        for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
            const int64_t i_begin = chunk * kCameraGradChunk,
                          i_end = std::min(nnz, i_begin + kCameraGradChunk);
            const int64_t first_image = image_of(i_begin);
            if (camera_grads)
                cam_partial[size_t(chunk)].assign(
                    size_t((image_of(i_end - 1) - first_image + 1) * kCameraGradSlots), T(0));
            for (int64_t i = i_begin; i < i_end; ++i) {
                const int64_t image = image_of(i), gauss = gaussian_of(i);
                T* cam = camera_grads
                             ? cam_partial[size_t(chunk)].data() + (image - first_image) * kCameraGradSlots
                             : discarded_camera_grads;
                project_gaussian_vjp<T>(a.gaussian(gauss), a.camera(image), a.width, a.height, a.eps2d,
                                        g.at(i), targets.row(e.per_entry || !direct ? i : gauss), cam,
                                        cam + kViewmatGradSlots);
            }
        }
    });

    if (!direct) {
        auto target = [&](int64_t i) { return gaussian_of(i); };
        scatter_add_rows(records.means.data(), nnz, 3, target, g.gaussians.v_means, a.n_threads);
        if (g.gaussians.v_quats)
            scatter_add_rows(records.quats.data(), nnz, 4, target, g.gaussians.v_quats, a.n_threads);
        if (g.gaussians.v_scales)
            scatter_add_rows(records.scales.data(), nnz, 3, target, g.gaussians.v_scales, a.n_threads);
        if (g.gaussians.v_covars)
            scatter_add_rows(records.covars.data(), nnz, kCovarValues, target, g.gaussians.v_covars,
                             a.n_threads);
    }
    if (!camera_grads) return;
    for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
        const std::vector<T>& partial = cam_partial[size_t(chunk)];
        const int64_t first_image = image_of(chunk * kCameraGradChunk);
        for (size_t k = 0; k < partial.size() / kCameraGradSlots; ++k) {
            const int64_t image = first_image + int64_t(k);
            add_camera_grads(partial.data() + k * kCameraGradSlots, g.v_viewmats + 16 * image,
                             g.v_Ks + 9 * image);
        }
    }
}

#define GS_INSTANTIATE_PROJECTION(T)                                                                      \
    template void project_gaussians_forward<T>(const ProjectionArgs<T>&, const ProjectionOutputs<T>&);    \
    template int64_t project_gaussians_packed_forward<T>(const ProjectionArgs<T>&,                        \
                                                         PackedProjectionMemory<T>&);                     \
    template void project_gaussians_backward<T>(const ProjectionArgs<T>&, const ProjectionGradients<T>&); \
    template void project_gaussians_packed_backward<T>(const ProjectionArgs<T>&, const PackedEntries&,    \
                                                       const ProjectionGradients<T>&);
GS_INSTANTIATE_PROJECTION(float)
GS_INSTANTIATE_PROJECTION(double)
#undef GS_INSTANTIATE_PROJECTION

}  // namespace gsplat_py::cpu
