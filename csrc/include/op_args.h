// What the kernels of both backends take and share: the ops' argument structs (one definition each, for
// csrc/cpu/kernels.h and csrc/cuda/kernels.h), the limits the kernels are built around, the constants
// both backends use, and the numeric argument checks that the torch wrappers of both backends run
// (csrc/torch/); the kernels assume the checks passed.
//
// Pointers are to contiguous memory on the device of the call (host memory for the CPU kernels); the
// comments give shapes with C cameras, N Gaussians, M intersections, D channels and K SH bases.
// Beyond gsplat_math.h it includes only <cstddef> and <cstdint>: raster_kernels.cpp, compiled once per
// instruction set, includes it and must not share library template code with the rest (see there).
#pragma once

#include <cstddef>
#include <cstdint>

#include "gsplat_math.h"

// ---- limits -------------------------------------------------------------------------------------
// gsplat_py/rendering/limits.py defines them; setup.py (and .ci/run for nvcc) passes them as macros.
#if !defined(GSPLAT_PY_MAX_SH_DEGREE) || !defined(GSPLAT_PY_MAX_TILE_SIZE)
#error "GSPLAT_PY_MAX_SH_DEGREE and GSPLAT_PY_MAX_TILE_SIZE must be defined (as setup.py does)"
#endif

#define GSPLAT_PY_STRINGIFY_(x) #x
#define GSPLAT_PY_STRINGIFY(x) GSPLAT_PY_STRINGIFY_(x)

namespace gsplat_py {

constexpr int kMaxShDegree = GSPLAT_PY_MAX_SH_DEGREE;
constexpr int kMaxShBases = sh_num_bases(kMaxShDegree);  // per colour channel
constexpr int kMaxTileSize = GSPLAT_PY_MAX_TILE_SIZE;    // pixels on a side
static_assert(kMaxShDegree >= 0 && kMaxShDegree <= 3, "sh_basis (gsplat_math.h) has the degrees 0..3");
static_assert(kMaxTileSize >= 1, "a tile has at least one pixel");

// Gaussians (C * N) and intersections (M) are counted up to this: their ids are int32 (flatten_ids,
// last_ids).
constexpr int64_t kMaxIdCount = INT32_MAX;

// ---- constants ----------------------------------------------------------------------------------
// The projection backward reduces the gradients of a camera in these slots: the 16 entries of the
// row-major viewmat, then the intrinsics fx, fy, cx, cy (project_gaussian_vjp's v_K), which sit in K
// at K_index_of_intrinsic (gsplat_math.h).
constexpr int kViewmatGradSlots = 16;
constexpr int kCameraGradSlots = kViewmatGradSlots + kIntrinsics;

// ---- numeric argument checks ----------------------------------------------------------------------
// nullptr when the argument is fine, else what is wrong (the wrappers add the values given).
inline const char* tile_size_error(int64_t tile_size) {
    if (tile_size >= 1 && tile_size <= kMaxTileSize) return nullptr;
    return "tile_size must be in 1.." GSPLAT_PY_STRINGIFY(GSPLAT_PY_MAX_TILE_SIZE);
}

inline const char* sh_error(int64_t degree, int64_t bases) {
    if (degree < 0 || degree > kMaxShDegree)
        return "sh degree must be in 0.." GSPLAT_PY_STRINGIFY(GSPLAT_PY_MAX_SH_DEGREE);
    if (bases < sh_num_bases(int(degree))) return "coeffs must have at least (degree + 1)^2 bases";
    return nullptr;
}

inline const char* gaussian_count_error(int64_t n_cameras, int64_t n_gaussians) {
    if (n_cameras * n_gaussians <= kMaxIdCount) return nullptr;
    return "too many Gaussians (C * N) for int32 ids";
}

inline const char* intersection_count_error(int64_t n_isects) {
    if (n_isects <= kMaxIdCount) return nullptr;
    return "too many Gaussian-tile intersections for int32 ids";
}

// ---- projection ----------------------------------------------------------------------------------
template <typename T>
struct ProjectionArgs {
    const T* means;      // [N, 3]
    const T* quats;      // [N, 4]
    const T* scales;     // [N, 3]
    const T* opacities;  // [N] or null
    const T* viewmats;   // [C, 4, 4]
    const T* Ks;         // [C, 3, 3]
    int64_t n_gaussians, n_cameras;
    int width, height;
    T eps2d, near_plane, far_plane, radius_clip;
    bool calc_compensations;
    int camera_model;
    int n_threads;  // of the CPU kernels (OpenMP); the CUDA kernels ignore it
};

template <typename T>
struct ProjectionOutputs {  // all zero-filled by the caller
    int32_t* radii;         // [C, N, 2]
    T* means2d;             // [C, N, 2]
    T* depths;              // [C, N]
    T* conics;              // [C, N, 3]
    T* compensations;       // [C, N]

    // The visible Gaussian g as (camera, Gaussian) pair idx = c * N + n.
    GS_HD void store(int64_t idx, const ProjectedGaussian<T>& g) const {
        radii[2 * idx] = g.radius_x;
        radii[2 * idx + 1] = g.radius_y;
        means2d[2 * idx] = g.mean_x;
        means2d[2 * idx + 1] = g.mean_y;
        depths[idx] = g.depth;
        conics[3 * idx] = g.conic.a;
        conics[3 * idx + 1] = g.conic.b;
        conics[3 * idx + 2] = g.conic.c;
        compensations[idx] = g.compensation;
    }
};

template <typename T>
struct ProjectionGradients {
    const int32_t* radii;      // [C, N, 2]
    const T* v_means2d;        // [C, N, 2]
    const T* v_depths;         // [C, N]
    const T* v_conics;         // [C, N, 3]
    const T* v_compensations;  // [C, N] or null
    // accumulated into (zero-filled by the caller):
    T* v_means;     // [N, 3]
    T* v_quats;     // [N, 4]
    T* v_scales;    // [N, 3]
    T* v_viewmats;  // [C, 4, 4], or null: no camera gradients
    T* v_Ks;        // [C, 3, 3], or null likewise
};

// ---- spherical harmonics -------------------------------------------------------------------------
template <typename T>
struct ShArgs {
    int degree;
    const T* dirs;      // [M, 3]
    const T* coeffs;    // [M, K, 3]
    const bool* masks;  // [M] or null
    int64_t count;      // M
    int64_t bases;      // K (>= (degree + 1)^2)
    int n_threads;      // of the CPU kernels (OpenMP); the CUDA kernels ignore it
};

// ---- tile binning --------------------------------------------------------------------------------
// Memory on the device of the call for the binning's scratch and its variable-size result, provided by
// the caller (the torch wrappers hand out tensors from PyTorch's allocator).
class DeviceMemory {
  public:
    virtual ~DeviceMemory() = default;
    virtual void* scratch(size_t bytes) = 0;             // valid until the call returns
    virtual int32_t* flatten_ids(int64_t n_isects) = 0;  // the result [M]
};

template <typename T>
struct BinningArgs {
    const T* means2d;      // [C, N, 2]
    const int32_t* radii;  // [C, N, 2]
    const T* depths;       // [C, N]
    int64_t n_cameras, n_gaussians;
    int tile_size, tile_width, tile_height;
    int n_threads;  // of the CPU kernels (OpenMP); the CUDA kernels ignore it
};

// ---- rasterization -------------------------------------------------------------------------------
template <typename T>
struct RasterArgs {
    const T* means2d;              // [C*N, 2]
    const T* conics;               // [C*N, 3]
    const T* colors;               // [C*N, D]
    const T* opacities;            // [C*N]
    const T* backgrounds;          // [C, D] or null
    const int32_t* isect_offsets;  // [C*TH*TW]
    const int32_t* flatten_ids;    // [M]
    int64_t n_gaussians;           // C*N
    int64_t n_isects;              // M
    int64_t n_tiles;               // C*TH*TW
    int width, height, tile_size, tile_width, tile_height, channels;
    int n_threads;  // of the CPU kernels (OpenMP); the CUDA kernels ignore it
};

template <typename T>
struct RasterForwardOutputs {
    T* colors;          // [C, H, W, D]
    T* alphas;          // [C, H, W]
    T* transmittance;   // [C, H, W]
    int32_t* last_ids;  // [C, H, W]: last blended intersection per pixel, -1 if none
};

template <typename T>
struct RasterBackwardInputs {
    const T* transmittance;   // [C, H, W]
    const int32_t* last_ids;  // [C, H, W]
    const T* v_colors;        // [C, H, W, D]
    const T* v_alphas;        // [C, H, W]
    // [C, H, W, D] of scratch for the CUDA kernels when none is specialised for D channels
    // (raster_kernel_specialised(D) is false), else null; the CPU kernels ignore it.
    T* channel_scratch;
};

template <typename T>
struct RasterGradients {  // accumulated into (zero-filled by the caller)
    T* v_means2d;         // [C*N, 2]
    T* v_means2d_abs;     // [C*N, 2] or null
    T* v_conics;          // [C*N, 3]
    T* v_colors;          // [C*N, D]
    T* v_opacities;       // [C*N]
    T* v_backgrounds;     // [C, D] or null
};

// ---- Adam (adam_math.h) ---------------------------------------------------------------------------
// One parameter tensor of an adam_step: `rows` rows of `row_size` values in each of the four arrays, and
// its optimiser's settings; `step` counts this step (1 on the first).
template <typename T>
struct AdamTensor {
    T* param;
    const T* grad;
    T* exp_avg;
    T* exp_avg_sq;
    int64_t rows, row_size;
    double lr, beta1, beta2, eps, step;
};

template <typename T>
struct AdamArgs {
    const AdamTensor<T>* tensors;  // `count` of them, in host memory for either backend
    int count;
    const bool* visible;  // [rows] (every tensor has as many): a false row is left as it is; null: all rows
    int n_threads;        // OpenMP (CPU)
};

// ---- SSIM (the CPU backend alone has it) ---------------------------------------------------------
// The blurred maps per channel (G x, G y, G x^2, G y^2, G xy) the forward keeps for the backward.
constexpr int kSsimMaps = 5;

template <typename T>
struct SsimArgs {
    const T* img1;  // [B, H, W, C]
    const T* img2;  // [B, H, W, C]
    int64_t batch, height, width, channels;
    int n_threads;  // OpenMP
};

}  // namespace gsplat_py
