// What the 2DGS (surfel) kernels of both backends take: their argument structs (one definition each,
// for csrc/cpu/surfel_kernels.h and csrc/cuda/surfel_kernels.h), beside op_args.h's for 3DGS.
// Pointers are to contiguous memory on the device of the call; B batches, C cameras, N surfels per batch,
// E projected entries (B * C * N), I images (B * C), M intersections, D channels.
#pragma once

#include <cstdint>

#include "op_args.h"
#include "surfel_math.h"

namespace gsplat_py {

// ---- projection: pair = image * N + n with image = b * C + c, as ProjectionArgs -------------------
template <typename T>
struct SurfelProjectionArgs {
    const T* means;     // [B, N, 3]
    const T* quats;     // [B, N, 4]
    const T* scales;    // [B, N, 3]
    const T* viewmats;  // [B, C, 4, 4]
    const T* Ks;        // [B, C, 3, 3]
    int64_t n_batches, n_cameras, n_gaussians;
    int width, height;
    T near_plane, far_plane, radius_clip;
    int n_threads;  // of the CPU kernels (OpenMP); the CUDA kernels ignore it

    GS_HD int64_t n_images() const { return n_batches * n_cameras; }
    GS_HD int64_t n_pairs() const { return n_images() * n_gaussians; }
    GS_HD int64_t gaussian_of(int64_t image, int64_t n) const {
        return (image / n_cameras) * n_gaussians + n;
    }
    GS_HD ProjectedSurfel<T> project(int64_t pair) const {
        const int64_t image = pair / n_gaussians;
        const int64_t g = gaussian_of(image, pair % n_gaussians);
        return project_surfel<T>(means + 3 * g, quats + 4 * g, scales + 3 * g, viewmats + 16 * image,
                                 Ks + 9 * image, width, height, near_plane, far_plane, radius_clip);
    }
};

template <typename T>
struct SurfelProjectionOutputs {  // [B, C, N, ...], zero-filled by the caller
    int32_t* radii;               // [.., 2]
    T* means2d;                   // [.., 2]
    T* depths;                    // [..]
    T* transforms;                // [.., 3, 3]
    T* normals;                   // [.., 3]

    GS_HD void store(int64_t pair, const ProjectedSurfel<T>& s) const {
        radii[2 * pair] = s.radius_x;
        radii[2 * pair + 1] = s.radius_y;
        means2d[2 * pair] = s.mean_x;
        means2d[2 * pair + 1] = s.mean_y;
        depths[pair] = s.depth;
        for (int k = 0; k < 9; ++k) transforms[9 * pair + k] = s.transform[k];
        for (int k = 0; k < 3; ++k) normals[3 * pair + k] = s.normal[k];
    }
};

template <typename T>
struct SurfelProjectionGradients {
    const int32_t* radii;   // [B, C, N, 2]: only visible pairs have gradients
    const T* v_means2d;     // [B, C, N, 2]
    const T* v_depths;      // [B, C, N]
    const T* v_transforms;  // [B, C, N, 3, 3]
    const T* v_normals;     // [B, C, N, 3]
    T* v_means;             // [B, N, 3] accumulated into (zero-filled by the caller)
    T* v_quats;             // [B, N, 4]
    T* v_scales;            // [B, N, 3] (the third stays 0)
    T* v_viewmats;          // [B, C, 4, 4] accumulated into, or null: no camera gradients
    T* v_Ks;                // [B, C, 3, 3] likewise
    GS_HD bool visible(int64_t pair) const { return radii[2 * pair] > 0 && radii[2 * pair + 1] > 0; }
};

// ---- rasterization: E entries in the layout flatten_ids indexes (unpacked or packed) ---------------
template <typename T>
struct SurfelRasterArgs {
    const T* means2d;              // [E, 2]
    const T* transforms;           // [E, 3, 3]
    const T* colors;               // [E, D]
    const T* opacities;            // [E]
    const T* normals;              // [E, 3]
    const T* depths;               // [E]
    const int32_t* isect_offsets;  // [I, TH, TW]
    const int32_t* flatten_ids;    // [M]
    int64_t n_entries, n_isects, n_tiles;
    int width, height, tile_size, tile_width, tile_height, channels;
    int n_threads;  // of the CPU kernels (OpenMP); the CUDA kernels ignore it
};

template <typename T>
struct SurfelRasterOutputs {  // per pixel of [I, H, W]
    T* colors;                // [.., D], without background
    T* alphas;                // [..]
    T* normals;               // [.., 3]
    T* distortions;           // [..]
    T* medians;               // [..] median depth (0 where nothing blends)
    T* transmittance;         // [..] final T (for the backward)
    T* depth_sums;            // [..] sum of w d (for the distortion's backward)
    int32_t* last_ids;        // [..] last blended intersection, -1 if none
    int32_t* median_ids;      // [..] intersection of the median, -1 if none
};

template <typename T>
struct SurfelRasterBackwardInputs {
    const T* transmittance;
    const T* depth_sums;
    const int32_t* last_ids;
    const int32_t* median_ids;
    const T* v_colors;       // [I, H, W, D]
    const T* v_alphas;       // [I, H, W]
    const T* v_normals;      // [I, H, W, 3]
    const T* v_distortions;  // [I, H, W]
    const T* v_medians;      // [I, H, W]
};

template <typename T>
struct SurfelRasterGradients {  // accumulated into (zero-filled by the caller)
    T* v_means2d;               // [E, 2]
    T* v_means2d_abs;           // [E, 2] or null
    T* v_transforms;            // [E, 9]
    T* v_colors;                // [E, D]
    T* v_opacities;             // [E]
    T* v_normals;               // [E, 3]
    T* v_depths;                // [E]
};

// Values of one intersection's gradient record (CPU backward: one record per intersection, then summed
// per entry): mean2d, |mean2d|, transform, opacity, normal, depth, then the D colour channels.
constexpr int kSurfelRecordFixed = 2 + 2 + 9 + 1 + 3 + 1;

}  // namespace gsplat_py
