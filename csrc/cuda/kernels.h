// Interface between the torch-facing CUDA ops (ops_cuda.cpp) and the kernels (*.cu). The kernels
// include no torch header: nvcc compiles them with the CUDA toolkit alone, which is how CI checks them
// on machines whose torch has no CUDA. Every function launches on `stream` and returns without
// synchronising, except bin_gaussians_to_tiles, which must read the number of intersections.
// Errors (a failed launch, an out-of-memory sort) are thrown as std::runtime_error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace gsplat_py::cuda {

// ---- projection ----------------------------------------------------------------------------------
template <typename T> struct ProjectionArgs {
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
};

template <typename T> struct ProjectionOutputs {  // all [C, N, ...], zero-filled by the caller
    int32_t* radii;  // [C, N, 2]
    T* means2d;      // [C, N, 2]
    T* depths;       // [C, N]
    T* conics;       // [C, N, 3]
    T* compensations;  // [C, N]
};

template <typename T> struct ProjectionGradients {
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

template <typename T>
void project_gaussians_forward(const ProjectionArgs<T>& args, const ProjectionOutputs<T>& out,
                               cudaStream_t stream);
template <typename T>
void project_gaussians_backward(const ProjectionArgs<T>& args, const ProjectionGradients<T>& grads,
                                cudaStream_t stream);

// ---- spherical harmonics -------------------------------------------------------------------------
template <typename T> struct ShArgs {
    int degree;
    const T* dirs;      // [M, 3]
    const T* coeffs;    // [M, K, 3]
    const bool* masks;  // [M] or null
    int64_t count;      // M
    int64_t bases;      // K (>= (degree + 1)^2)
};

template <typename T> void spherical_harmonics_forward(const ShArgs<T>& args, T* colors, cudaStream_t stream);
// Writes every element of v_dirs [M, 3] and v_coeffs [M, K, 3].
template <typename T>
void spherical_harmonics_backward(const ShArgs<T>& args, const T* v_colors, T* v_dirs, T* v_coeffs,
                                  cudaStream_t stream);

// ---- tile binning --------------------------------------------------------------------------------
// Device memory for the binning's scratch and its variable-size result, provided by the caller (the
// torch launcher hands out tensors from PyTorch's caching allocator).
class DeviceMemory {
  public:
    virtual ~DeviceMemory() = default;
    virtual void* scratch(size_t bytes) = 0;                   // valid until the call returns
    virtual int32_t* flatten_ids(int64_t n_isects) = 0;        // the result [M]
};

template <typename T> struct BinningArgs {
    const T* means2d;      // [C, N, 2]
    const int32_t* radii;  // [C, N, 2]
    const T* depths;       // [C, N]
    int64_t n_cameras, n_gaussians;
    int tile_size, tile_width, tile_height;
};

// Fills tiles_per_gauss [C, N] and isect_offsets [C, TH, TW], and the flatten_ids it allocates through
// `memory`: each tile's Gaussians sorted by depth, ties in index order (the CPU backend's order).
// Returns the number of intersections.
template <typename T>
int64_t bin_gaussians_to_tiles(const BinningArgs<T>& args, int32_t* tiles_per_gauss,
                               int32_t* isect_offsets, DeviceMemory& memory, cudaStream_t stream);

// ---- rasterization -------------------------------------------------------------------------------
template <typename T> struct RasterArgs {
    const T* means2d;              // [C*N, 2]
    const T* conics;               // [C*N, 3]
    const T* colors;               // [C*N, D]
    const T* opacities;            // [C*N]
    const T* backgrounds;          // [C, D] or null
    const int32_t* isect_offsets;  // [C*TH*TW]
    const int32_t* flatten_ids;    // [M]
    int64_t n_isects;
    int64_t n_tiles;  // C*TH*TW
    int width, height, tile_size, tile_width, tile_height, channels;
};

template <typename T> struct RasterForwardOutputs {
    T* colors;          // [C, H, W, D]
    T* alphas;          // [C, H, W]
    T* transmittance;   // [C, H, W]
    int32_t* last_ids;  // [C, H, W]
};

template <typename T> struct RasterBackwardInputs {
    const T* transmittance;   // [C, H, W]
    const int32_t* last_ids;  // [C, H, W]
    const T* v_colors;        // [C, H, W, D]
    const T* v_alphas;        // [C, H, W]
    // [C, H, W, D] of scratch when no kernel is specialised for D channels
    // (raster_kernel_specialised(D) is false), else null.
    T* channel_scratch;
};

template <typename T> struct RasterGradients {  // accumulated into (zero-filled by the caller)
    T* v_means2d;      // [C*N, 2]
    T* v_means2d_abs;  // [C*N, 2] or null
    T* v_conics;       // [C*N, 3]
    T* v_colors;       // [C*N, D]
    T* v_opacities;    // [C*N]
    T* v_backgrounds;  // [C, D] or null
};

// Whether a kernel keeps D channels per pixel in registers; other counts run a generic kernel that
// keeps them in device memory (the output, or RasterBackwardInputs::channel_scratch).
bool raster_kernel_specialised(int channels);

template <typename T>
void rasterize_forward(const RasterArgs<T>& args, const RasterForwardOutputs<T>& out, cudaStream_t stream);
template <typename T>
void rasterize_backward(const RasterArgs<T>& args, const RasterBackwardInputs<T>& in,
                        const RasterGradients<T>& grads, cudaStream_t stream);

}  // namespace gsplat_py::cuda
