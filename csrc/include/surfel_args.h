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

// ---- the per-pixel loops of both backends -----------------------------------------------------------
// A tile's pixels and its range of intersections.
struct SurfelTile {
    int64_t image, x0, y0, x1, y1;  // pixels [x0, x1) x [y0, y1) of `image`
    int64_t begin, end;             // intersections [begin, end)
};

template <typename T>
GS_HD SurfelTile surfel_tile(const SurfelRasterArgs<T>& a, int64_t tile) {
    const int64_t per_image = int64_t(a.tile_width) * a.tile_height;
    const int64_t in_image = tile % per_image;
    const int64_t x0 = (in_image % a.tile_width) * a.tile_size, y0 = (in_image / a.tile_width) * a.tile_size;
    const int64_t x1 = x0 + a.tile_size < a.width ? x0 + a.tile_size : a.width;
    const int64_t y1 = y0 + a.tile_size < a.height ? y0 + a.tile_size : a.height;
    return {tile / per_image,
            x0,
            y0,
            x1,
            y1,
            a.isect_offsets[tile],
            tile + 1 < a.n_tiles ? a.isect_offsets[tile + 1] : a.n_isects};
}

// The alpha of entry e at a pixel, or -1 where it takes no part in blending; `h` and `vis` for the VJP.
template <typename T>
GS_HD T surfel_pixel_alpha(const SurfelRasterArgs<T>& a, int64_t e, T px, T py, SurfelHit<T>& h, T& vis) {
    h = surfel_hit(a.transforms + 9 * e, a.means2d[2 * e], a.means2d[2 * e + 1], px, py);
    if (!h.hit) return T(-1);
    const T opacity = a.opacities[e];
    // Most pairs of a tile are far from the surfel: beyond kSurfelSkipSigma an opacity up to 1 stays below
    // the 1/255 threshold (by far more than rounding), so the exp is skipped, the decision unchanged.
    if (h.sigma > T(kSurfelSkipSigma) && opacity <= T(1)) return T(-1);
    vis = splat_exp(-h.sigma);
    const T alpha = splat_alpha<T, T>(opacity, vis);
    return splat_contributes<T, T>(h.sigma, alpha) ? alpha : T(-1);
}

// Front-to-back blending of pixel (x, y) of the tile's image over its intersections; kChannels > 0 keeps
// that many channels in registers (0: a.channels, accumulated in the output).
template <int kChannels, typename T>
GS_HD void rasterize_surfel_pixel(const SurfelRasterArgs<T>& a, const SurfelRasterOutputs<T>& out,
                                  const SurfelTile& tile, int64_t x, int64_t y) {
    const int D = kChannels > 0 ? kChannels : a.channels;
    const int64_t pixel = (tile.image * a.height + y) * a.width + x;
    const T px = T(x) + T(0.5), py = T(y) + T(0.5);
    T registers[kChannels > 0 ? kChannels : 1];
    T* color = kChannels > 0 ? registers : out.colors + pixel * D;
    T normal[3] = {T(0), T(0), T(0)};
    for (int k = 0; k < D; ++k) color[k] = T(0);
    T trans = T(1), distortion = T(0), depth_sum = T(0), median = T(0);
    int32_t last = -1, median_id = -1;
    for (int64_t m = tile.begin; m < tile.end; ++m) {
        const int64_t e = a.flatten_ids[m];
        SurfelHit<T> h;
        T vis;
        const T alpha = surfel_pixel_alpha(a, e, px, py, h, vis);
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
    if (kChannels > 0)
        for (int k = 0; k < D; ++k) out.colors[pixel * D + k] = color[k];
    for (int k = 0; k < 3; ++k) out.normals[pixel * 3 + k] = normal[k];
    out.alphas[pixel] = T(1) - trans;
    out.transmittance[pixel] = trans;
    out.distortions[pixel] = distortion;
    out.depth_sums[pixel] = depth_sum;
    out.medians[pixel] = median;
    out.last_ids[pixel] = last;
    out.median_ids[pixel] = median_id;
}

// rasterize_surfel_pixel with the channels in registers for the common counts (RGB, RGB+depth, depth).
template <typename T>
GS_HD void rasterize_surfel_pixel(const SurfelRasterArgs<T>& a, const SurfelRasterOutputs<T>& out,
                                  const SurfelTile& tile, int64_t x, int64_t y) {
    switch (a.channels) {
        case 1: return rasterize_surfel_pixel<1>(a, out, tile, x, y);
        case 3: return rasterize_surfel_pixel<3>(a, out, tile, x, y);
        case 4: return rasterize_surfel_pixel<4>(a, out, tile, x, y);
        default: return rasterize_surfel_pixel<0>(a, out, tile, x, y);
    }
}

// The gradients one pixel gives one blended entry: the colours' are weight * pixel_v_colors.
template <typename T>
struct SurfelPixelGradient {
    T v_mean2d[2], v_mean2d_abs[2], v_transform[9], v_opacity, v_normal[3], v_depth, weight;
    const T* pixel_v_colors;
};

// The backward of rasterize_surfel_pixel: walks the pixel's blended entries back to front and hands each
// one's gradients to sink(m, e, gradient) (m its intersection, e its entry).
template <typename T, typename Sink>
GS_HD void rasterize_surfel_pixel_backward(const SurfelRasterArgs<T>& a,
                                           const SurfelRasterBackwardInputs<T>& in, const SurfelTile& tile,
                                           int64_t x, int64_t y, Sink& sink) {
    const int D = a.channels;
    const int64_t pixel = (tile.image * a.height + y) * a.width + x;
    const int32_t last = in.last_ids[pixel];
    if (last < 0) return;
    const T px = T(x) + T(0.5), py = T(y) + T(0.5);
    SurfelPixelGradient<T> grad;
    grad.pixel_v_colors = in.v_colors + pixel * D;
    const T* v_normal = in.v_normals + pixel * 3;
    const T v_distortion = in.v_distortions[pixel], v_alpha_out = in.v_alphas[pixel];
    const T trans_final = in.transmittance[pixel], depth_sum = in.depth_sums[pixel];
    // Walking back: the transmittance behind the current surfel, and the sums over the surfels behind it of
    // the weight times its per-weight gradient, of the weights and of w d.
    T trans = trans_final, behind = T(0), w_after = T(0), d_after = T(0);
    for (int64_t m = last; m >= tile.begin; --m) {
        const int64_t e = a.flatten_ids[m];
        SurfelHit<T> h;
        T vis;
        const T alpha = surfel_pixel_alpha(a, e, px, py, h, vis);
        if (alpha < T(0)) continue;
        const T opacity = a.opacities[e];
        const T ra = T(1) / (T(1) - alpha);
        const T trans_before = trans * ra, weight = alpha * trans_before, depth = a.depths[e];
        T v_weight = T(0);
        for (int k = 0; k < D; ++k) v_weight += grad.pixel_v_colors[k] * a.colors[e * D + k];
        for (int k = 0; k < 3; ++k) v_weight += v_normal[k] * a.normals[3 * e + k];
        const DistortionGrad<T> dist = distortion_vjp(weight, depth, T(1) - trans_before,
                                                      depth_sum - d_after - weight * depth, w_after, d_after);
        v_weight += v_distortion * dist.v_weight;
        const T v_alpha = v_weight * trans_before - behind * ra + v_alpha_out * trans_final * ra;

        grad.weight = weight;
        for (int k = 0; k < 3; ++k) grad.v_normal[k] = weight * v_normal[k];
        grad.v_depth = v_distortion * dist.v_depth + (m == in.median_ids[pixel] ? in.v_medians[pixel] : T(0));
        for (int k = 0; k < 9; ++k) grad.v_transform[k] = T(0);
        grad.v_mean2d[0] = grad.v_mean2d[1] = T(0);
        grad.v_opacity = T(0);
        if (!(opacity * vis > T(kMaxAlpha))) {  // a clamped alpha has no gradient
            grad.v_opacity = vis * v_alpha;
            surfel_sigma_vjp(h, px, py, -opacity * vis * v_alpha, grad.v_mean2d, grad.v_transform);
        }
        grad.v_mean2d_abs[0] = grad.v_mean2d[0] < T(0) ? -grad.v_mean2d[0] : grad.v_mean2d[0];
        grad.v_mean2d_abs[1] = grad.v_mean2d[1] < T(0) ? -grad.v_mean2d[1] : grad.v_mean2d[1];
        sink(m, e, grad);
        behind += v_weight * weight;
        w_after += weight;
        d_after += weight * depth;
        trans = trans_before;
    }
}

}  // namespace gsplat_py
