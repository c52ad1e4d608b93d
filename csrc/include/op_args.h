// What the kernels of both backends take and share: the ops' argument structs (one definition each, for
// csrc/cpu/kernels.h and csrc/cuda/kernels.h), the limits the kernels are built around, the constants
// both backends use, and the numeric argument checks that the torch wrappers of both backends run
// (csrc/torch/); the kernels assume the checks passed.
//
// Pointers are to contiguous memory on the device of the call (host memory for the CPU kernels); the
// comments give shapes with B batches, C cameras, N Gaussians per batch, M intersections, D channels
// and K SH bases.
// Beyond gsplat_math.h it includes only C headers (<cstddef>, <cstdint>, <cstring>): raster_kernels.cpp,
// compiled once per instruction set, includes it and must not share library template code with the rest
// (see there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

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
static_assert(kMaxShDegree >= 0 && kMaxShDegree <= 4, "sh_basis (gsplat_math.h) has the degrees 0..4");
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

// The projected Gaussians the binning and rasterization index with int32 ids: B * C * N pairs, or the
// packed entries.
inline const char* entry_count_error(int64_t n_entries) {
    if (n_entries <= kMaxIdCount) return nullptr;
    return "too many projected Gaussians (B * C * N, or packed entries) for int32 ids";
}

inline const char* intersection_count_error(int64_t n_isects) {
    if (n_isects <= kMaxIdCount) return nullptr;
    return "too many Gaussian-tile intersections for int32 ids";
}

// ---- projection ----------------------------------------------------------------------------------
// B batches of N Gaussians, each seen by its own C cameras: the (camera, Gaussian) pairs are indexed
// pair = image * N + n with image = b * C + c, and pair's Gaussian is b * N + n.
template <typename T>
struct ProjectionArgs {
    const T* means;                             // [B, N, 3]
    const T* quats;                             // [B, N, 4], or null (covars given)
    const T* scales;                            // [B, N, 3], or null (covars given)
    const T* covars;                            // [B, N, 6] upper triangles (xx, xy, xz, yy, yz, zz), or null
    const T* opacities;                         // [B, N] or null
    const T* viewmats;                          // [B, C, 4, 4]
    const T* Ks;                                // [B, C, 3, 3]
    const T* radial_coeffs;                     // [B, C, 4] fisheye k1..k4, or null (equidistant)
    int64_t n_batches, n_cameras, n_gaussians;  // B, C, N
    int width, height;
    T eps2d, near_plane, far_plane, radius_clip;
    bool calc_compensations;
    int camera_model;
    int n_threads;  // of the CPU kernels (OpenMP); the CUDA kernels ignore it

    GS_HD int64_t n_images() const { return n_batches * n_cameras; }
    GS_HD int64_t n_pairs() const { return n_images() * n_gaussians; }
    GS_HD int64_t gaussian_of(int64_t image, int64_t n) const {
        return (image / n_cameras) * n_gaussians + n;
    }
    GS_HD GaussianInput<T> gaussian(int64_t g) const {
        if (covars) return {means + 3 * g, nullptr, nullptr, covars + kCovarValues * g};
        return {means + 3 * g, quats + 4 * g, scales + 3 * g, nullptr};
    }
    GS_HD CameraInput<T> camera(int64_t image) const {
        return {viewmats + 16 * image, Ks + 9 * image,
                radial_coeffs ? radial_coeffs + kFisheyeCoeffs * image : nullptr, camera_model};
    }
    GS_HD ProjectedGaussian<T> project(int64_t pair) const {
        const int64_t image = pair / n_gaussians;
        const int64_t g = gaussian_of(image, pair % n_gaussians);
        return project_gaussian<T>(gaussian(g), opacities ? opacities + g : nullptr, camera(image), width,
                                   height, eps2d, near_plane, far_plane, radius_clip, calc_compensations);
    }
};

template <typename T>
struct ProjectionOutputs {  // unpacked: [B, C, N, ...] zero-filled by the caller; packed: [nnz, ...]
    int32_t* radii;         // [.., 2]
    T* means2d;             // [.., 2]
    T* depths;              // [..]
    T* conics;              // [.., 3]
    T* compensations;       // [..]
    // packed only (else null): each entry's batch b, camera c and Gaussian n (within its batch)
    int64_t* batch_ids;
    int64_t* camera_ids;
    int64_t* gaussian_ids;

    // The visible Gaussian g into row `row` (the pair index, or the packed entry).
    GS_HD void store(int64_t row, const ProjectedGaussian<T>& g) const {
        radii[2 * row] = g.radius_x;
        radii[2 * row + 1] = g.radius_y;
        means2d[2 * row] = g.mean_x;
        means2d[2 * row + 1] = g.mean_y;
        depths[row] = g.depth;
        conics[3 * row] = g.conic.a;
        conics[3 * row + 1] = g.conic.b;
        conics[3 * row + 2] = g.conic.c;
        compensations[row] = g.compensation;
    }
    // The ids of packed entry `row`, which is `pair`.
    GS_HD void store_ids(int64_t row, int64_t pair, int64_t n_cameras, int64_t n_gaussians) const {
        const int64_t image = pair / n_gaussians;
        batch_ids[row] = image / n_cameras;
        camera_ids[row] = image % n_cameras;
        gaussian_ids[row] = pair % n_gaussians;
    }
};

// Memory on the device of the call for the packed projection: the outputs, allocated once the kernel
// knows how many pairs are visible, and scratch (valid until the call returns).
template <typename T>
class PackedProjectionMemory {
  public:
    virtual ~PackedProjectionMemory() = default;
    virtual ProjectionOutputs<T> allocate(int64_t nnz) = 0;
    virtual void* scratch(size_t bytes) = 0;
};

// Gradients of the Gaussians: [B, N, ...] accumulated into (zero-filled by the caller), or, in packed
// mode with per_entry, one row per entry [nnz, ...] (sparse gradients). v_quats and v_scales, or
// v_covars, are null according to the input.
template <typename T>
struct GaussianGradients {
    T* v_means;
    T* v_quats;
    T* v_scales;
    T* v_covars;
    GS_HD GaussianGradient<T> row(int64_t r) const {
        return {v_means + 3 * r, v_quats ? v_quats + 4 * r : nullptr, v_scales ? v_scales + 3 * r : nullptr,
                v_covars ? v_covars + kCovarValues * r : nullptr};
    }
};

template <typename T>
struct ProjectionGradients {
    const int32_t* radii;      // [B, C, N, 2] (unpacked); packed entries are all visible
    const T* v_means2d;        // [B, C, N, 2] or [nnz, 2]
    const T* v_depths;         // [B, C, N] or [nnz]
    const T* v_conics;         // [B, C, N, 3] or [nnz, 3]
    const T* v_compensations;  // [B, C, N] or [nnz], or null
    GaussianGradients<T> gaussians;
    T* v_viewmats;  // [B, C, 4, 4] accumulated into, or null: no camera gradients
    T* v_Ks;        // [B, C, 3, 3] likewise
    GS_HD ProjectedGradient<T> at(int64_t row) const {
        return {v_means2d[2 * row],
                v_means2d[2 * row + 1],
                v_depths[row],
                {v_conics[3 * row], v_conics[3 * row + 1], v_conics[3 * row + 2]},
                v_compensations ? v_compensations[row] : T(0)};
    }
};

// The packed entries of a backward pass (the forward's ids) and the layout of the Gaussians' gradients.
struct PackedEntries {
    const int64_t* batch_ids;     // [nnz]
    const int64_t* camera_ids;    // [nnz]
    const int64_t* gaussian_ids;  // [nnz]
    int64_t nnz;
    bool per_entry;  // gradients of the Gaussians one row per entry (sparse) rather than per Gaussian
};

// ---- spherical harmonics -------------------------------------------------------------------------
// A row's coefficients are held in two parts, the first basis (DC) and the rest, each with its own row
// stride: one [R, K, 3] tensor gives dc = its data and rest = dc + 3, both of stride 3K; gsplat's split
// parameters sh0 [R, 1, 3] and shN [R, K - 1, 3] are read (and their gradients written) in place, without
// the [R, K, 3] concatenation and the split of its gradient. Gradients have the layout of the inputs.
template <typename T>
struct ShCoeffs {
    T* dc;                // [R, ..., 3]: basis 0 at dc + r * dc_stride
    T* rest;              // bases 1.. at rest + r * rest_stride (unused when K == 1)
    int64_t dc_stride;    // values between rows
    int64_t rest_stride;  // values between rows
    GS_HD T* dc_row(int64_t r) const { return dc + r * dc_stride; }
    GS_HD T* rest_row(int64_t r) const { return rest + r * rest_stride; }
    // the 3 values of basis k of row r
    GS_HD T* basis(int64_t r, int k) const { return k == 0 ? dc_row(r) : rest_row(r) + 3 * (k - 1); }
    // value j = 3 k + c (basis k, channel c) of row r
    GS_HD T& value(int64_t r, int j) const { return j < 3 ? dc_row(r)[j] : rest_row(r)[j - 3]; }
};

template <typename T>
struct ShArgs {
    int degree;
    const T* dirs;              // [M, 3]
    ShCoeffs<const T> coeffs;   // M rows, or R rows picked by coeff_rows
    const int64_t* coeff_rows;  // [M] distinct rows of coeffs, or null (direction i uses row i)
    const bool* masks;          // [M] or null
    int64_t count;              // M
    int64_t bases;              // K (>= (degree + 1)^2)
    int n_threads;              // of the CPU kernels (OpenMP); the CUDA kernels ignore it
    GS_HD int64_t row(int64_t i) const { return coeff_rows ? coeff_rows[i] : i; }
};

// ---- tile binning --------------------------------------------------------------------------------
// Memory on the device of the call for the binning's scratch and its variable-size result, provided by
// the caller (the torch wrappers hand out tensors from PyTorch's allocator).
class DeviceMemory {
  public:
    virtual ~DeviceMemory() = default;
    virtual void* scratch(size_t bytes) = 0;             // valid until the call returns
    virtual int32_t* flatten_ids(int64_t n_isects) = 0;  // the result [M]
    virtual int64_t* isect_ids(int64_t n_isects) = 0;    // the result [M]
};

// The projected Gaussians are E entries: I images of N each ([I, N, ...], image_ids null), or packed
// entries each with its image (image_ids [E]).
template <typename T>
struct BinningArgs {
    const T* means2d;                                // [E, 2]
    const int32_t* radii;                            // [E, 2]
    const T* depths;                                 // [E]
    const int64_t* image_ids;                        // [E] or null
    int64_t n_entries, n_images, entries_per_image;  // E, I, and N when image_ids is null
    int tile_size, tile_width, tile_height;
    int n_threads;  // of the CPU kernels (OpenMP); the CUDA kernels ignore it
    GS_HD int64_t image_of(int64_t e) const { return image_ids ? image_ids[e] : e / entries_per_image; }
};

// gsplat's intersection ids, image | tile | depth: the image in the top bits, then the tile within its
// image in tile_bits, then the depth's float32 bits in the low 32. Valid when image_bits + tile_bits
// <= 32 (isect_id_bits_fit), as gsplat requires.
struct IsectIdLayout {
    int tile_bits, image_bits;
};

GS_HD int bit_width(uint64_t value) {
    int bits = 0;
    while (value >> bits) ++bits;
    return bits;
}

// gsplat's widths: floor(log2(n)) + 1 bits for n tiles per image and n images.
inline IsectIdLayout isect_id_layout(int64_t n_images, int64_t tiles_per_image) {
    return {bit_width(uint64_t(tiles_per_image)), bit_width(uint64_t(n_images))};
}

inline bool isect_id_bits_fit(const IsectIdLayout& layout) {
    return layout.tile_bits + layout.image_bits <= 32;
}

template <typename T>
GS_HD int64_t isect_id(const IsectIdLayout& layout, int64_t image, int64_t tile_in_image, T depth) {
    const float depth32 = float(depth);
    uint32_t depth_bits;
    memcpy(&depth_bits, &depth32, sizeof(depth_bits));
    return int64_t((uint64_t(image) << (32 + layout.tile_bits)) | (uint64_t(tile_in_image) << 32) |
                   depth_bits);
}

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
