// Projection of B batches of N Gaussians into their C cameras (forward and backward), in blocks of
// (camera, Gaussian) pairs with the shared math of gsplat_math.h; unpacked ([B, C, N] outputs) or packed
// (the visible pairs only). No fma contraction (GCC fuses a * b + c in C++ by default where the level has
// fma): every SIMD level gives the baseline build's bits. No trapping math (only floating-point exception
// flags differ, which nothing reads): GCC then computes both sides of a branch on a comparison or a square
// root, which the lane loops need to vectorise.
#pragma GCC optimize("fp-contract=off", "no-trapping-math")

#include <algorithm>
#include <type_traits>
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

// The forward goes through each image's pairs in blocks of kProjectionLanes, lane by lane in arrays that
// GCC's vectoriser keeps in vector registers: first every lane's camera-space Gaussian and footprint (the
// depth test does not branch around them, and the lens model is a template constant), then the tests and
// the outputs a lane at a time. Each lane does its pair's operations in the pair's order, so every level
// gives the bits of project_gaussian (a pair at a time, as the CUDA kernel runs it).
constexpr int kProjectionLanes = 16;

// A block's Gaussians (or their gradients) lane by lane: the mean, then the quaternion and scales or
// (Covars) the covariance, each value an array over the lanes, which the compute loops read and write (GCC
// does not vectorise them over the rows' strided reads).
template <typename T, bool Covars>
struct LaneGaussians {
    static constexpr int kValues = Covars ? 3 + kCovarValues : 3 + 4 + 3;
    T values[kValues][kProjectionLanes];

    void load(int lane, const GaussianInput<T>& gauss) {
        for (int k = 0; k < 3; ++k) values[k][lane] = gauss.mean[k];
        if constexpr (Covars) {
            for (int k = 0; k < kCovarValues; ++k) values[3 + k][lane] = gauss.covar[k];
        } else {
            for (int k = 0; k < 4; ++k) values[3 + k][lane] = gauss.quat[k];
            for (int k = 0; k < 3; ++k) values[7 + k][lane] = gauss.scale[k];
        }
    }
    // Lane `lane`'s Gaussian, its values copied to `row` (kValues).
    GaussianInput<T> at(int lane, T* row) const {
        for (int k = 0; k < kValues; ++k) row[k] = values[k][lane];
        return Covars ? GaussianInput<T>{row, nullptr, nullptr, row + 3}
                      : GaussianInput<T>{row, row + 3, row + 7, nullptr};
    }
    // Gradients in this layout, written to `row` (kValues).
    static GaussianGradient<T> gradients(T* row) {
        return Covars ? GaussianGradient<T>{row, nullptr, nullptr, row + 3}
                      : GaussianGradient<T>{row, row + 3, row + 7, nullptr};
    }
    // These values as gradients: lane `lane`'s added to a Gaussian's gradient row.
    void add_to(int lane, const GaussianGradient<T>& row) const {
        for (int k = 0; k < 3; ++k) row.v_mean[k] += values[k][lane];
        if constexpr (Covars) {
            for (int k = 0; k < kCovarValues; ++k) row.v_covar[k] += values[3 + k][lane];
        } else {
            for (int k = 0; k < 4; ++k) row.v_quat[k] += values[3 + k][lane];
            for (int k = 0; k < 3; ++k) row.v_scale[k] += values[7 + k][lane];
        }
    }
};

// Pairs first .. first + lanes - 1 (lanes <= kProjectionLanes, all of one image) into results; Covars: the
// Gaussians' covariances are given (a.covars), not quaternions and scales.
template <typename T, int Model, bool Covars>
__attribute__((always_inline)) inline void project_block(const ProjectionArgs<T>& a, int64_t first, int lanes,
                                                         ProjectedGaussian<T>* results) {
    if (Covars != (a.covars != nullptr)) __builtin_unreachable();
    const int64_t image = first / a.n_gaussians;
    const int64_t gauss0 = a.gaussian_of(image, first % a.n_gaussians);
    CameraInput<T> cam = a.camera(image);
    cam.model = Model;
    // The depth test's result as an integer of T's width: a bool array would make GCC's vectoriser pick
    // four times the lanes of T (64 on AVX-512), more than a block has.
    using Mask = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
    Mask in_depth[kProjectionLanes];
    T depth[kProjectionLanes], mean_x[kProjectionLanes], mean_y[kProjectionLanes];
    T cov_a[kProjectionLanes], cov_b[kProjectionLanes], cov_c[kProjectionLanes];
    T conic_a[kProjectionLanes], conic_b[kProjectionLanes], conic_c[kProjectionLanes];
    T det[kProjectionLanes], compensation[kProjectionLanes];
    // A short block repeats its last pair in the lanes past it, whose results are not used.
    using Lanes = LaneGaussians<T, Covars>;
    Lanes gaussians;
    for (int l = 0; l < kProjectionLanes; ++l) gaussians.load(l, a.gaussian(gauss0 + std::min(l, lanes - 1)));
    for (int l = 0; l < kProjectionLanes; ++l) {
        T row[Lanes::kValues];
        const GaussianInput<T> gauss = gaussians.at(l, row);
        const CameraSpaceGaussian<T> g = to_camera_space(gauss, cam.viewmat);
        const Footprint<T> f = footprint(g, cam, a.width, a.height, a.eps2d);
        in_depth[l] = depth_visible(g.p, Model, a.near_plane, a.far_plane);
        depth[l] = g.p.z;
        mean_x[l] = f.mean_x;
        mean_y[l] = f.mean_y;
        cov_a[l] = f.cov.a;
        cov_b[l] = f.cov.b;
        cov_c[l] = f.cov.c;
        conic_a[l] = f.con.conic.a;
        conic_b[l] = f.con.conic.b;
        conic_c[l] = f.con.conic.c;
        det[l] = f.con.det;
        compensation[l] = f.con.compensation;
    }
    for (int l = 0; l < lanes; ++l) {
        results[l].visible = false;
        if (!in_depth[l]) continue;
        const Footprint<T> f = {mean_x[l],
                                mean_y[l],
                                {cov_a[l], cov_b[l], cov_c[l]},
                                {{conic_a[l], conic_b[l], conic_c[l]}, det[l], compensation[l]}};
        results[l] = bound_footprint(f, depth[l], a.opacities ? a.opacities + gauss0 + l : nullptr, a.width,
                                     a.height, a.eps2d, a.radius_clip, a.calc_compensations);
    }
}

// Built for the instruction-set levels of the rasterizer kernels and run at the one they use (simd_level()).
template <typename T>
using ProjectBlock = void (*)(const ProjectionArgs<T>&, int64_t, int, ProjectedGaussian<T>*);

// builds(model, covars) for the lens model `model` and the covariance input (covars: given) as constants:
// the build of a kernel at the level in use, which `builds` picks (PerLevel).
template <typename F, typename Builds>
F build_for(int model, bool covars, const Builds& builds) {
    const auto for_model = [&](auto covars_constant) -> F {
        switch (model) {
            case kOrtho: return builds(std::integral_constant<int, kOrtho>{}, covars_constant);
            case kFisheye: return builds(std::integral_constant<int, kFisheye>{}, covars_constant);
            default: return builds(std::integral_constant<int, kPinhole>{}, covars_constant);
        }
    };
    return covars ? for_model(std::true_type{}) : for_model(std::false_type{});
}

template <typename T>
ProjectBlock<T> project_block_of(const ProjectionArgs<T>& a) {
    return build_for<ProjectBlock<T>>(a.camera_model, a.covars != nullptr, [](auto model, auto covars) {
        constexpr int m = decltype(model)::value;
        constexpr bool c = decltype(covars)::value;
        return PerLevel<ProjectBlock<T>, project_block<T, m, c>>::at_level();
    });
}

// visit(first, lanes, results) for each block of the pairs [begin, end), blocks cut where an image ends.
template <typename T, typename Visit>
void project_range(const ProjectionArgs<T>& a, ProjectBlock<T> block, int64_t begin, int64_t end,
                   const Visit& visit) {
    ProjectedGaussian<T> results[kProjectionLanes];
    for (int64_t first = begin; first < end;) {
        const int64_t image_end = (first / a.n_gaussians + 1) * a.n_gaussians;
        const int lanes = int(std::min<int64_t>({kProjectionLanes, end - first, image_end - first}));
        block(a, first, lanes, results);
        visit(first, lanes, results);
        first += lanes;
    }
}

// The backward goes through blocks of kProjectionLanes pairs of one image the same way: every lane's
// gradients lane by lane in arrays, then those of the visible lanes added to their Gaussians' rows and to
// the camera's slots, a lane at a time in order. A Gaussian's rows get the bits of a pair at a time; the
// camera's slots get each pair's gradient summed first, then added (a pair at a time, each term is added
// to the running sum), which rounds differently.
struct VjpLanes {
    int64_t image;
    int lanes;
    int64_t gauss[kProjectionLanes];     // the Gaussian of each lane
    int64_t grad_row[kProjectionLanes];  // its row of the projection's output gradients
    int64_t target[kProjectionLanes];    // its row of the Gaussians' gradients (targets)
    bool visible[kProjectionLanes];      // an invisible lane adds nothing
};

template <typename T, int Model, bool Covars>
__attribute__((always_inline)) inline void project_vjp_block(const ProjectionArgs<T>& a,
                                                             const ProjectionGradients<T>& g,
                                                             const GaussianGradients<T>& targets,
                                                             const VjpLanes& block, T* camera_slots) {
    if (Covars != (a.covars != nullptr)) __builtin_unreachable();
    CameraInput<T> cam = a.camera(block.image);
    cam.model = Model;
    constexpr int kGrads = 7;  // mean2d (2), depth, conic (3), compensation
    using Lanes = LaneGaussians<T, Covars>;
    Lanes gaussians, v_gaussians;
    T v_out[kGrads][kProjectionLanes];
    for (int l = 0; l < kProjectionLanes; ++l) {
        const int lane = std::min(l, block.lanes - 1);  // a short block repeats its last pair
        gaussians.load(l, a.gaussian(block.gauss[lane]));
        const ProjectedGradient<T> v = g.at(block.grad_row[lane]);
        const T values[kGrads] = {v.v_mean_x,  v.v_mean_y,  v.v_depth,       v.v_conic.a,
                                  v.v_conic.b, v.v_conic.c, v.v_compensation};
        for (int k = 0; k < kGrads; ++k) v_out[k][l] = values[k];
    }
    T v_cam[kCameraGradSlots][kProjectionLanes];
    for (int l = 0; l < kProjectionLanes; ++l) {
        T row[Lanes::kValues];
        const GaussianInput<T> gauss = gaussians.at(l, row);
        const ProjectedGradient<T> v = {
            v_out[0][l], v_out[1][l], v_out[2][l], {v_out[3][l], v_out[4][l], v_out[5][l]}, v_out[6][l]};
        T grads[Lanes::kValues] = {}, cam_grads[kCameraGradSlots] = {};
        project_gaussian_vjp<T>(gauss, cam, a.width, a.height, a.eps2d, v, Lanes::gradients(grads), cam_grads,
                                cam_grads + kViewmatGradSlots);
        // (unrolled: the lane loop must be innermost for the vectoriser)
#pragma GCC unroll 32
        for (int k = 0; k < Lanes::kValues; ++k) v_gaussians.values[k][l] = grads[k];
#pragma GCC unroll 32
        for (int k = 0; k < kCameraGradSlots; ++k) v_cam[k][l] = cam_grads[k];
    }
    for (int l = 0; l < block.lanes; ++l) {
        if (!block.visible[l]) continue;
        v_gaussians.add_to(l, targets.row(block.target[l]));
        if (camera_slots)
            for (int k = 0; k < kCameraGradSlots; ++k) camera_slots[k] += v_cam[k][l];
    }
}

template <typename T>
using ProjectVjpBlock = void (*)(const ProjectionArgs<T>&, const ProjectionGradients<T>&,
                                 const GaussianGradients<T>&, const VjpLanes&, T*);

template <typename T>
ProjectVjpBlock<T> project_vjp_block_of(const ProjectionArgs<T>& a) {
    return build_for<ProjectVjpBlock<T>>(a.camera_model, a.covars != nullptr, [](auto model, auto covars) {
        constexpr int m = decltype(model)::value;
        constexpr bool c = decltype(covars)::value;
        return PerLevel<ProjectVjpBlock<T>, project_vjp_block<T, m, c>>::at_level();
    });
}

}  // namespace

template <typename T>
void project_gaussians_forward(const ProjectionArgs<T>& a, const ProjectionOutputs<T>& out) {
    const ProjectBlock<T> block = project_block_of(a);
    parallel_for(a.n_pairs(), kProjectionGrain, a.n_threads, [&](int64_t begin, int64_t end) {
        project_range(a, block, begin, end,
                      [&](int64_t first, int lanes, const ProjectedGaussian<T>* results) {
                          for (int l = 0; l < lanes; ++l)
                              if (results[l].visible)
                                  out.store(first + l, results[l]);  // outputs were zero-initialised
                      });
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
    const ProjectBlock<T> block = project_block_of(a);
    parallel_ranges(total, n_ranges, [&](int r, int64_t begin, int64_t end) {
        std::vector<Visible>& list = found[size_t(r)];
        project_range(a, block, begin, end,
                      [&](int64_t first, int lanes, const ProjectedGaussian<T>* results) {
                          for (int l = 0; l < lanes; ++l)
                              if (results[l].visible) list.push_back({first + l, results[l]});
                      });
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
    const ProjectVjpBlock<T> vjp_block = project_vjp_block_of(a);
    const int64_t N = a.n_gaussians;
    projection_backward_blocks(
        a.n_batches, a.n_cameras, N, a.n_threads, kProjectionLanes, g.v_viewmats, g.v_Ks,
        [&](int64_t b, int64_t c, int64_t n_begin, int64_t n_end, T* camera_slots) {
            VjpLanes block;
            block.image = b * a.n_cameras + c;
            block.lanes = int(n_end - n_begin);
            bool any_visible = false;
            for (int l = 0; l < block.lanes; ++l) {
                const int64_t pair = block.image * N + n_begin + l;
                block.gauss[l] = block.target[l] = b * N + n_begin + l;
                block.grad_row[l] = pair;
                block.visible[l] = g.radii[2 * pair] > 0 && g.radii[2 * pair + 1] > 0;
                any_visible |= block.visible[l];
            }
            if (any_visible) vjp_block(a, g, g.gaussians, block, g.v_viewmats ? camera_slots : nullptr);
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

    const ProjectVjpBlock<T> vjp_block = project_vjp_block_of(a);
    parallel_for(n_chunks, 1, a.n_threads, [&](int64_t chunk_begin, int64_t chunk_end) {
        for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
            const int64_t i_begin = chunk * kCameraGradChunk,
                          i_end = std::min(nnz, i_begin + kCameraGradChunk);
            const int64_t first_image = image_of(i_begin);
            if (camera_grads)
                cam_partial[size_t(chunk)].assign(
                    size_t((image_of(i_end - 1) - first_image + 1) * kCameraGradSlots), T(0));
            // blocks of entries of one image (entries are sorted by image)
            for (int64_t i = i_begin; i < i_end;) {
                VjpLanes block;
                block.image = image_of(i);
                block.lanes = 0;
                for (; i < i_end && block.lanes < kProjectionLanes && image_of(i) == block.image; ++i) {
                    const int l = block.lanes++;
                    block.gauss[l] = gaussian_of(i);
                    block.grad_row[l] = i;
                    block.target[l] = e.per_entry || !direct ? i : block.gauss[l];
                    block.visible[l] = true;
                }
                vjp_block(a, g, targets, block,
                          camera_grads ? cam_partial[size_t(chunk)].data() +
                                             (block.image - first_image) * kCameraGradSlots
                                       : nullptr);
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
