// SIMD tile rasterizer, forward (front to back) and backward (back to front).
//
// Threads take whole tiles (dynamic schedule: tile costs vary a lot). Inside a tile the loop over its
// Gaussians is outer and the loop over the tile's pixels inner, a 4x4 block of pixels at a time in GCC
// vector types (GCC >= 12 or clang), so each step of the blending runs on whole SIMD registers whatever
// the instruction set this file is compiled for (setup.py builds it once per x86-64 level, namespace
// GS_ISA); blocks a Gaussian's ellipse cannot reach, or whose pixels have all stopped, are skipped. The
// backward pass
// writes one gradient record per (tile, Gaussian) intersection; rasterize.cpp sums each Gaussian's
// records in intersection order, so gradients are bit-identical from run to run and for any number of
// threads.
//
// This file includes no torch or C++ library template headers on purpose: its inline functions are
// compiled with ISA-specific flags and must not be shared (ODR) with the rest of the extension.
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "gsplat_math.h"
#include "raster_kernels.h"

#ifndef GS_ISA
#error "GS_ISA must name the instruction-set namespace (x86_64_v4, x86_64_v3 or baseline)"
#endif

namespace gsplat_py::cpu::GS_ISA {

namespace {

constexpr int kLanes = 16;

template <typename T> struct Simd {
    typedef T V __attribute__((vector_size(kLanes * sizeof(T))));
    using M = decltype(V{} < V{});  // lane masks: all bits set where true
    using Lane = decltype(M{}[0]);  // the integer type of a mask lane
};

using VF = Simd<float>::V;
using VD = Simd<double>::V;

// exp(x) for x <= 0 on 16 floats: Cody-Waite range reduction and a degree-7 polynomial (Cephes expf,
// max relative error ~2e-7). Inputs below -87 give exp(-87), far below any blending threshold.
inline VF simd_exp(VF x) {
    x = x < -87.0f ? VF{} - 87.0f : x;
    const VF n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
    const VF r = x - n * 0.693359375f + n * 2.12194440e-4f;                // x - n ln 2 in two parts
    VF p = VF{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const Simd<float>::M bits = (__builtin_convertvector(n, Simd<float>::M) + 127) << 23;  // 2^n
    VF scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

// Double precision serves gradcheck and the tests, not speed: the exact exp, lane by lane.
inline VD simd_exp(VD x) {
    VD r;
    for (int l = 0; l < kLanes; ++l) r[l] = std::exp(x[l]);
    return r;
}

// Whether any lane of a mask is set: an OR of its 64-bit words, far cheaper than lane extracts.
template <typename M> inline bool any_lane(M m) {
    uint64_t words[sizeof(M) / 8];
    std::memcpy(words, &m, sizeof(M));
    uint64_t any = 0;
    for (uint64_t w : words) any |= w;
    return any != 0;
}

// Sum of the 16 lanes as a fixed tree of vector adds (lanes l and l+8, then l and l+4, ...): a few
// instructions instead of 15 dependent scalar adds, and the same order on every instruction set.
template <typename V> inline auto hsum(V v) {
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return v[0];
}

template <typename T> struct TileGeometry {
    int camera, x0, y0, n_inside;
    int64_t begin, end;  // the tile's range in flatten_ids
};

// Lane buffers of one thread: `count` vectors, 64-byte aligned, released with the thread's scope.
template <typename V> struct LaneBuffer {
    V* data;
    explicit LaneBuffer(size_t count)
        : data(static_cast<V*>(std::aligned_alloc(64, (count * sizeof(V) + 63) / 64 * 64))) {}
    ~LaneBuffer() { std::free(data); }
    LaneBuffer(const LaneBuffer&) = delete;
    LaneBuffer& operator=(const LaneBuffer&) = delete;
};

// A vector holds a 4x4 block of pixels (lane l: column l % 4, row l / 4); a tile is a grid of
// blocks_per_side^2 blocks, padded where the tile size is not a multiple of 4. Square blocks fit the
// footprint of a small splat more tightly than tile rows do.
constexpr int kBlockSide = 4;
static_assert(kBlockSide * kBlockSide == kLanes, "a vector is one block of pixels");

template <typename T> int blocks_per_side(const RasterArgs<T>& a) {
    return (a.tile_size + kBlockSide - 1) / kBlockSide;
}

template <typename T> int vectors_per_tile(const RasterArgs<T>& a) {
    return blocks_per_side(a) * blocks_per_side(a);
}

// Position in the tile of lane l of vector q.
template <typename T> void lane_position(const RasterArgs<T>& a, int q, int l, int& lx, int& ly) {
    const int B = blocks_per_side(a);
    lx = (q % B) * kBlockSide + l % kBlockSide;
    ly = (q / B) * kBlockSide + l / kBlockSide;
}

// Pixel centres of a tile, and which lanes are real pixels of the image.
template <typename T>
TileGeometry<T> tile_setup(const RasterArgs<T>& a, int64_t tile, typename Simd<T>::V* px,
                           typename Simd<T>::V* py, typename Simd<T>::M* inside) {
    const int64_t per_camera = int64_t(a.tile_width) * a.tile_height;
    const int64_t local = tile % per_camera;
    TileGeometry<T> g;
    g.camera = int(tile / per_camera);
    g.x0 = int(local % a.tile_width) * a.tile_size;
    g.y0 = int(local / a.tile_width) * a.tile_size;
    g.begin = a.isect_offsets[tile];
    g.end = tile + 1 < a.n_tiles ? a.isect_offsets[tile + 1] : a.n_isects;
    g.n_inside = 0;
    const int Q = vectors_per_tile(a);
    for (int q = 0; q < Q; ++q)
        for (int l = 0; l < kLanes; ++l) {
            int lx, ly;
            lane_position(a, q, l, lx, ly);
            const bool in = lx < a.tile_size && ly < a.tile_size && g.x0 + lx < a.width && g.y0 + ly < a.height;
            px[q][l] = T(g.x0 + lx) + T(0.5);
            py[q][l] = T(g.y0 + ly) + T(0.5);
            inside[q][l] = in ? -1 : 0;
            g.n_inside += in;
        }
    return g;
}

// Image index of lane l of vector q, or -1 outside the image.
template <typename T> int64_t pixel_index(const RasterArgs<T>& a, const TileGeometry<T>& g, int q, int l) {
    int lx, ly;
    lane_position(a, q, l, lx, ly);
    const int x = g.x0 + lx, y = g.y0 + ly;
    if (lx >= a.tile_size || ly >= a.tile_size || x >= a.width || y >= a.height) return -1;
    return (int64_t(g.camera) * a.height + y) * a.width + x;
}

// The blocks of a tile a splat can reach: block rows [y_begin, y_end), and in block row `by` the
// blocks [x_begin[by], x_end[by]).
constexpr int kMaxBlocksPerSide = 16;  // tile_size <= 64

struct BlockRange {
    int y_begin, y_end;
    int x_begin[kMaxBlocksPerSide], x_end[kMaxBlocksPerSide];
};

template <typename T> struct Splat {
    T mx, my, opacity;
    Sym2<T> conic;
    const T* color;
    BlockRange blocks;
};

// Blocks [begin, end) holding the pixels whose index in the tile lies in [first, last] (fractional;
// a pixel of margin on each side), or an empty range.
template <typename T> void pixel_span_to_blocks(T first, T last, int tile_size, int& begin, int& end) {
    first -= T(1);
    last += T(1);
    if (!(last >= T(0) && first <= T(tile_size - 1))) {  // also rejects NaN
        begin = end = 0;
        return;
    }
    begin = (first < T(0) ? 0 : int(first)) / kBlockSide;
    end = (last >= T(tile_size - 1) ? tile_size - 1 : int(last)) / kBlockSide + 1;
}

// What the blending needs of one projected Gaussian, gathered (and its footprint precomputed) once per
// call rather than once per tile it touches. A pixel takes part only if alpha >= 1/255, i.e. sigma <=
// s_max = ln(255 opacity): inside the ellipse d^T conic d <= 2 s_max, whose rows span
// |dy| <= sqrt(2 s_max cov_yy) and whose row at dy spans dx in -b/a dy +- sqrt((2 s_max - det/a dy^2)/a).
enum class Footprint : int32_t { kNone, kEllipse, kEverywhere };

template <typename T> struct SplatShape {
    T mx, my, opacity;
    Sym2<T> conic;
    T two_s_max, shear, det_over_a, inv_a, half_height;
    Footprint footprint;
};

template <typename T> SplatShape<T> make_shape(const RasterArgs<T>& a, int64_t id) {
    SplatShape<T> s;
    s.mx = a.means2d[2 * id];
    s.my = a.means2d[2 * id + 1];
    s.opacity = a.opacities[id];
    s.conic = {a.conics[3 * id], a.conics[3 * id + 1], a.conics[3 * id + 2]};
    // ln(255 opacity) up to rounding: only a clearly lower opacity is dropped here, the exact test
    // (alpha >= 1/255) stays in the pixel loop.
    const T max_sigma = std::log(s.opacity * T(255)) + T(1e-3);
    const T det = s.conic.a * s.conic.c - s.conic.b * s.conic.b;
    s.footprint = !(max_sigma > T(0)) ? Footprint::kNone  // can never reach 1/255 (or NaN)
                  : (det > T(0) && s.conic.a > T(0)) ? Footprint::kEllipse
                                                      : Footprint::kEverywhere;  // not positive definite
    s.two_s_max = T(2) * max_sigma;
    s.shear = -s.conic.b / s.conic.a;
    s.det_over_a = det / s.conic.a;
    s.inv_a = T(1) / s.conic.a;
    s.half_height = std::sqrt(s.two_s_max * s.conic.a / det);
    return s;
}

template <typename T> void make_shapes(const RasterArgs<T>& a, SplatShape<T>* shapes, int64_t count) {
#pragma omp parallel for num_threads(a.n_threads) schedule(static)
    for (int64_t id = 0; id < count; ++id) shapes[id] = make_shape(a, id);
}

// Gaussian `id` with the blocks it can reach in the tile at (x0, y0). Blocks outside would be masked out
// anyway, so skipping them changes no result, only the time.
template <typename T>
Splat<T> load_splat(const RasterArgs<T>& a, const SplatShape<T>* shapes, int64_t id, int x0, int y0) {
    const SplatShape<T>& sh = shapes[id];
    const int B = blocks_per_side(a), ts = a.tile_size;
    Splat<T> s;
    s.mx = sh.mx;
    s.my = sh.my;
    s.opacity = sh.opacity;
    s.conic = sh.conic;
    s.color = a.colors + id * a.channels;
    s.blocks.y_begin = 0;
    s.blocks.y_end = 0;
    if (sh.footprint == Footprint::kNone) return s;
    if (sh.footprint == Footprint::kEverywhere) {
        s.blocks.y_end = B;
        for (int by = 0; by < B; ++by) {
            s.blocks.x_begin[by] = 0;
            s.blocks.x_end[by] = B;
        }
        return s;
    }
    const T cx = s.mx - T(x0) - T(0.5), cy = s.my - T(y0) - T(0.5);  // mean in pixel-index units
    pixel_span_to_blocks(cy - sh.half_height, cy + sh.half_height, ts, s.blocks.y_begin, s.blocks.y_end);
    for (int by = s.blocks.y_begin; by < s.blocks.y_end; ++by) {
        // Bounds over the block row's dy range: the shear at both ends, the width at the dy nearest 0.
        const T dy_lo = T(by * kBlockSide) - cy, dy_hi = T(by * kBlockSide + kBlockSide - 1) - cy;
        const T shift_lo = sh.shear * dy_lo, shift_hi = sh.shear * dy_hi;
        const T dy_near = dy_lo > T(0) ? dy_lo : (dy_hi < T(0) ? dy_hi : T(0));
        const T width_sq = (sh.two_s_max - sh.det_over_a * dy_near * dy_near) * sh.inv_a;
        if (!(width_sq >= T(0))) {
            s.blocks.x_begin[by] = s.blocks.x_end[by] = 0;
            continue;
        }
        const T half_width = std::sqrt(width_sq);
        const T lo = shift_lo < shift_hi ? shift_lo : shift_hi, hi = shift_lo < shift_hi ? shift_hi : shift_lo;
        pixel_span_to_blocks(cx + lo - half_width, cx + hi + half_width, ts, s.blocks.x_begin[by],
                             s.blocks.x_end[by]);
    }
    return s;
}

// Gaussians are visited in depth order, i.e. at random places in their arrays: fetching the ones a few
// steps ahead hides the cache misses (measured: 15% of the forward time waited on colour loads).
constexpr int kPrefetchDistance = 4;

// always_inline: as a separate function GCC deems it pure (prefetches have no visible effect) and
// deletes its calls before inlining.
template <typename T>
__attribute__((always_inline)) inline void prefetch_splat(const RasterArgs<T>& a, const SplatShape<T>* shapes,
                                                          int64_t i, int64_t begin, int64_t end) {
    const int64_t id = a.flatten_ids[i < begin ? begin : (i >= end ? end - 1 : i)];
    __builtin_prefetch(shapes + id);
    __builtin_prefetch(reinterpret_cast<const char*>(shapes + id) + sizeof(SplatShape<T>) - 1);
    __builtin_prefetch(a.colors + id * a.channels);
}

// Kernels are instantiated for the channel counts of RGB (3), RGB+depth (4) and depth (1), where the
// per-channel work unrolls into registers inside the pixel loop, and for any count (kChannels = 0).
template <int kChannels> int channel_count(int runtime) { return kChannels > 0 ? kChannels : runtime; }
constexpr int kMaxRegisterChannels = 4;

template <typename T, int kChannels>
void forward_tiles(const RasterArgs<T>& a, const SplatShape<T>* shapes, const ForwardOut<T>& out) {
    using V = typename Simd<T>::V;
    using M = typename Simd<T>::M;
    const int Q = vectors_per_tile(a), B = blocks_per_side(a), D = channel_count<kChannels>(a.channels);
#pragma omp parallel num_threads(a.n_threads)
    {
        LaneBuffer<V> values{size_t(Q) * (3 + D)};
        LaneBuffer<M> masks{size_t(Q) * 2};
        LaneBuffer<uint8_t> live_buffer{size_t(Q)};
        V* px = values.data;
        V* py = px + Q;
        V* trans = py + Q;
        V* acc = trans + Q;  // [D][Q]
        M* active = masks.data;
        M* last = active + Q;
        uint8_t* live = live_buffer.data;  // whether a pixel vector still has active lanes
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < a.n_tiles; ++tile) {
            const TileGeometry<T> g = tile_setup(a, tile, px, py, active);
            for (int q = 0; q < Q; ++q) {
                trans[q] = V{} + T(1);
                last[q] = M{} - 1;
                live[q] = any_lane(active[q]);
            }
            for (int k = 0; k < D * Q; ++k) acc[k] = V{};
            int64_t remaining = g.n_inside;
            for (int64_t i = g.begin; i < g.end && remaining > 0; ++i) {
                prefetch_splat(a, shapes, i + kPrefetchDistance, g.begin, g.end);
                const Splat<T> s = load_splat(a, shapes, a.flatten_ids[i], g.x0, g.y0);
                M stopped = M{};
                for (int by = s.blocks.y_begin; by < s.blocks.y_end; ++by)
                for (int q = by * B + s.blocks.x_begin[by]; q < by * B + s.blocks.x_end[by]; ++q) {
                    if (!live[q]) continue;  // every pixel of this block has stopped
                    const V sigma = splat_sigma(s.conic, s.mx - px[q], s.my - py[q]);
                    const V alpha = splat_alpha(s.opacity, simd_exp(-sigma));
                    const M contributes = active[q] & splat_contributes<T>(sigma, alpha);
                    const V next_t = trans[q] * (T(1) - alpha);
                    const M stop = contributes & (next_t <= T(kTransmittanceMin));
                    const M blend = contributes & ~stop;
                    const V weight = blend ? alpha * trans[q] : V{};
                    for (int ch = 0; ch < D; ++ch) acc[ch * Q + q] += weight * s.color[ch];
                    trans[q] = blend ? next_t : trans[q];
                    active[q] &= ~stop;
                    last[q] = blend ? M{} + typename Simd<T>::Lane(i) : last[q];
                    stopped += stop;  // lanes count -1 per stop
                }
                if (any_lane(stopped)) {
                    remaining += hsum(stopped);
                    for (int by = s.blocks.y_begin; by < s.blocks.y_end; ++by)
                        for (int q = by * B + s.blocks.x_begin[by]; q < by * B + s.blocks.x_end[by]; ++q)
                            live[q] = live[q] && any_lane(active[q]);
                }
            }
            const T* bg = a.backgrounds ? a.backgrounds + int64_t(g.camera) * D : nullptr;
            for (int q = 0; q < Q; ++q)
                for (int l = 0; l < kLanes; ++l) {
                    const int64_t pix = pixel_index(a, g, q, l);
                    if (pix < 0) continue;
                    const T t = trans[q][l];
                    for (int ch = 0; ch < D; ++ch)
                        out.colors[pix * D + ch] = acc[ch * Q + q][l] + (bg ? t * bg[ch] : T(0));
                    out.alphas[pix] = T(1) - t;
                    out.transmittance[pix] = t;
                    out.last_ids[pix] = int32_t(last[q][l]);
                }
        }
    }
}

template <typename T, int kChannels>
void backward_tiles(const RasterArgs<T>& a, const SplatShape<T>* shapes, const BackwardIn<T>& in,
                    const BackwardOut<T>& out) {
    using V = typename Simd<T>::V;
    using M = typename Simd<T>::M;
    const int Q = vectors_per_tile(a), B = blocks_per_side(a), D = channel_count<kChannels>(a.channels);
    const int R = kRecordFixed + D;
#pragma omp parallel num_threads(a.n_threads)
    {
        // Per-channel sums of one Gaussian: registers when the count is fixed, else this buffer.
        LaneBuffer<V> values{size_t(Q) * (5 + 2 * D) + size_t(D)};
        LaneBuffer<M> masks{size_t(Q) * 2};
        LaneBuffer<int64_t> vector_last_buffer{size_t(Q)};
        V* px = values.data;
        V* py = px + Q;
        V* t_final = py + Q;
        V* trans = t_final + Q;
        V* v_trans_final = trans + Q;  // d loss / d T_final: v_alpha - sum_ch bg v_color
        V* v_color = v_trans_final + Q;  // [D][Q]
        V* behind = v_color + D * Q;     // [D][Q]: colour accumulated behind the current Gaussian
        V* color_sums_buffer = behind + D * Q;
        M* inside = masks.data;
        M* last = inside + Q;
        int64_t* vector_last = vector_last_buffer.data;  // the largest last index of a pixel vector
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < a.n_tiles; ++tile) {
            const TileGeometry<T> g = tile_setup(a, tile, px, py, inside);
            const T* bg = a.backgrounds ? a.backgrounds + int64_t(g.camera) * D : nullptr;
            int64_t max_last = -1;
            for (int q = 0; q < Q; ++q) {
                vector_last[q] = -1;
                for (int l = 0; l < kLanes; ++l) {
                    const int64_t pix = pixel_index(a, g, q, l);
                    const bool in_image = pix >= 0;
                    t_final[q][l] = in_image ? in.transmittance[pix] : T(0);
                    last[q][l] = in_image ? in.last_ids[pix] : -1;
                    T v_tf = in_image ? in.v_alphas[pix] : T(0);
                    for (int ch = 0; ch < D; ++ch) {
                        const T vc = in_image ? in.v_colors[pix * D + ch] : T(0);
                        v_color[ch * Q + q][l] = vc;
                        if (bg) v_tf -= bg[ch] * vc;
                    }
                    v_trans_final[q][l] = v_tf;
                    vector_last[q] = last[q][l] > vector_last[q] ? int64_t(last[q][l]) : vector_last[q];
                }
                max_last = vector_last[q] > max_last ? vector_last[q] : max_last;
            }
            for (int ch = 0; ch < D; ++ch) {
                V total = V{};
                for (int q = 0; q < Q; ++q) total += t_final[q] * v_color[ch * Q + q];
                out.background[tile * D + ch] = hsum(total);
            }
            for (int q = 0; q < Q; ++q) trans[q] = t_final[q];
            for (int k = 0; k < D * Q; ++k) behind[k] = V{};

            for (int64_t i = max_last; i >= g.begin; --i) {
                prefetch_splat(a, shapes, i - kPrefetchDistance, g.begin, g.end);
                const Splat<T> s = load_splat(a, shapes, a.flatten_ids[i], g.x0, g.y0);
                if (s.blocks.y_begin >= s.blocks.y_end) continue;
                V color_sums_registers[kChannels > 0 ? kChannels : 1];
                V* color_sums = kChannels > 0 ? color_sums_registers : color_sums_buffer;
                for (int ch = 0; ch < D; ++ch) color_sums[ch] = V{};
                V g_mx = V{}, g_my = V{}, g_ax = V{}, g_ay = V{}, g_ca = V{}, g_cb = V{}, g_cc = V{},
                  g_op = V{};
                for (int by = s.blocks.y_begin; by < s.blocks.y_end; ++by)
                for (int q = by * B + s.blocks.x_begin[by]; q < by * B + s.blocks.x_end[by]; ++q) {
                    if (i > vector_last[q]) continue;  // no pixel of this block blended Gaussian i
                    const V dx = s.mx - px[q], dy = s.my - py[q];
                    const V sigma = splat_sigma(s.conic, dx, dy);
                    const V vis = simd_exp(-sigma);
                    const V alpha = splat_alpha(s.opacity, vis);
                    const M hit = (M{} + typename Simd<T>::Lane(i) <= last[q]) & splat_contributes<T>(sigma, alpha);
                    const V ratio = T(1) / (T(1) - alpha);  // T in front of this Gaussian = T behind * ratio
                    const V t_before = trans[q] * ratio;
                    const V weight = hit ? alpha * t_before : V{};
                    trans[q] = hit ? t_before : trans[q];
                    V v_alpha = t_final[q] * ratio * v_trans_final[q];
                    for (int ch = 0; ch < D; ++ch) {
                        const V vc = v_color[ch * Q + q];
                        V& beh = behind[ch * Q + q];
                        v_alpha += (s.color[ch] * t_before - beh * ratio) * vc;
                        color_sums[ch] += weight * vc;
                        beh += weight * s.color[ch];
                    }
                    v_alpha = hit ? v_alpha : V{};
                    const SplatGrad<V> sg = splat_alpha_vjp(s.conic, s.opacity, dx, dy, vis, v_alpha);
                    g_mx += sg.v_mean_x;
                    g_my += sg.v_mean_y;
                    g_ax += sg.v_mean_x < T(0) ? -sg.v_mean_x : sg.v_mean_x;
                    g_ay += sg.v_mean_y < T(0) ? -sg.v_mean_y : sg.v_mean_y;
                    g_ca += sg.v_conic_a;
                    g_cb += sg.v_conic_b;
                    g_cc += sg.v_conic_c;
                    g_op += sg.v_opacity;
                }
                T* rec = out.records + i * R;
                rec[0] = hsum(g_mx);
                rec[1] = hsum(g_my);
                rec[2] = hsum(g_ax);
                rec[3] = hsum(g_ay);
                rec[4] = hsum(g_ca);
                rec[5] = hsum(g_cb);
                rec[6] = hsum(g_cc);
                rec[7] = hsum(g_op);
                for (int ch = 0; ch < D; ++ch) rec[kRecordFixed + ch] = hsum(color_sums[ch]);
            }
        }
    }
}

template <typename T> void forward_any(const RasterArgs<T>& a, const ForwardOut<T>& out) {
    LaneBuffer<SplatShape<T>> shapes{size_t(a.n_gaussians)};
    make_shapes(a, shapes.data, a.n_gaussians);
    switch (a.channels) {
        case 1: return forward_tiles<T, 1>(a, shapes.data, out);
        case 3: return forward_tiles<T, 3>(a, shapes.data, out);
        case kMaxRegisterChannels: return forward_tiles<T, kMaxRegisterChannels>(a, shapes.data, out);
        default: return forward_tiles<T, 0>(a, shapes.data, out);
    }
}

template <typename T>
void backward_any(const RasterArgs<T>& a, const BackwardIn<T>& in, const BackwardOut<T>& out) {
    LaneBuffer<SplatShape<T>> shapes{size_t(a.n_gaussians)};
    make_shapes(a, shapes.data, a.n_gaussians);
    switch (a.channels) {
        case 1: return backward_tiles<T, 1>(a, shapes.data, in, out);
        case 3: return backward_tiles<T, 3>(a, shapes.data, in, out);
        case kMaxRegisterChannels: return backward_tiles<T, kMaxRegisterChannels>(a, shapes.data, in, out);
        default: return backward_tiles<T, 0>(a, shapes.data, in, out);
    }
}

}  // namespace

int simd_lanes() { return kLanes; }

void rasterize_forward(const RasterArgs<float>& args, const ForwardOut<float>& out) { forward_any(args, out); }
void rasterize_forward(const RasterArgs<double>& args, const ForwardOut<double>& out) { forward_any(args, out); }
void rasterize_backward(const RasterArgs<float>& args, const BackwardIn<float>& in, const BackwardOut<float>& out) {
    backward_any(args, in, out);
}
void rasterize_backward(const RasterArgs<double>& args, const BackwardIn<double>& in,
                        const BackwardOut<double>& out) {
    backward_any(args, in, out);
}

}  // namespace gsplat_py::cpu::GS_ISA
