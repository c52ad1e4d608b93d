// SIMD tile rasterizer, forward (front to back) and backward (back to front).
//
// Threads take whole tiles (dynamic schedule: tile costs vary a lot). Inside a tile the loop over its
// Gaussians is outer and the loop over the tile's pixels inner, a block of pixels at a time in GCC vector
// types (GCC >= 12 or clang) as wide as one register of the instruction set this file is compiled for
// (setup.py builds it once per x86-64 level, and once on aarch64, each into namespace GS_ISA): 4x4 pixels
// with AVX-512, 4x2 with AVX2, 2x2 with SSE2 and NEON. Blocks a Gaussian's ellipse cannot reach, or whose
// pixels have all stopped, are skipped. The backward pass writes one gradient record per (tile, Gaussian)
// intersection; rasterize.cpp sums each Gaussian's records in intersection order, so gradients are
// bit-identical from run to run and for any number of threads (for one build: the lane sums, and FMA
// contraction, differ between builds).
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
#error "GS_ISA must name the instruction-set namespace (x86_64_v4, x86_64_v3, baseline or neon)"
#endif

// clang-format off: formatted once the rewrite of these SIMD internals on another branch has landed
// (until then a reformat would only make that merge conflict)

namespace gsplat_py::cpu::GS_ISA {

namespace {

// A vector is one native register of floats of the instruction set this file is compiled for: 16 lanes
// with AVX-512, 8 with AVX (AVX2), 4 otherwise (SSE2, NEON, any other target of GCC's vector types).
// Wider vectors than the registers made GCC split every operation and spill the halves: the 16-lane
// AVX2 build was ~5x slower than AVX-512 per pixel instead of 2x. GS_LANES overrides it (experiments).
#if defined(GS_LANES)
constexpr int kLanes = GS_LANES;
#elif defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
static_assert(kLanes == 4 || kLanes == 8 || kLanes == 16, "a vector has 4, 8 or 16 lanes");

template <typename T> struct Simd {
    typedef T V __attribute__((vector_size(kLanes * sizeof(T))));
    using M = decltype(V{} < V{});  // lane masks: all bits set where true
    using Lane = decltype(M{}[0]);  // the integer type of a mask lane
};

using VF = Simd<float>::V;
using VD = Simd<double>::V;

// exp(x) for x <= 0 lane by lane: Cody-Waite range reduction and a degree-7 polynomial (Cephes expf,
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

// sqrt lane by lane (x >= 0): GCC turns the unrolled loop into one vector sqrt.
template <typename V> inline V simd_sqrt(V x) {
    V r;
    for (int l = 0; l < kLanes; ++l) r[l] = std::sqrt(x[l]);
    return r;
}

// |x|: the sign bit cleared (one AND instead of a compare and a select).
template <typename V> inline V simd_abs(V x) {
    using M = decltype(V{} < V{});
    M bits;
    std::memcpy(&bits, &x, sizeof(x));
    bits &= ~((M{} + 1) << (sizeof(x[0]) * 8 - 1));
    std::memcpy(&x, &bits, sizeof(x));
    return x;
}

// 0, 1, ..., kLanes - 1.
template <typename V> inline V lane_iota() {
    V v;
    for (int l = 0; l < kLanes; ++l) v[l] = l;
    return v;
}

// Whether any lane of a mask is set: an OR of its 64-bit words, far cheaper than lane extracts.
template <typename M> inline bool any_lane(M m) {
    uint64_t words[sizeof(M) / 8];
    std::memcpy(words, &m, sizeof(M));
    uint64_t any = 0;
    for (uint64_t w : words) any |= w;
    return any != 0;
}

// Sum of the lanes as a fixed tree (lanes l and l + n/2 of the n lanes, then of the n/2 sums, ...): a
// few instructions instead of n - 1 dependent scalar adds, in the same order for every build of a width.
template <typename V> inline auto hsum(V v) {
    constexpr int n = sizeof(V) / sizeof(v[0]);
    if constexpr (n == 16)
        return hsum(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
    else if constexpr (n == 8)
        return hsum(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
    else if constexpr (n == 4)
        return hsum(__builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3));
    else
        return v[0] + v[1];
}

template <typename T> struct TileGeometry {
    int camera, x0, y0, width, height, n_inside;  // width x height: the tile's pixels in the image
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

// A vector holds a block of kBlockWidth x kBlockHeight pixels (lane l: column l % kBlockWidth, row
// l / kBlockWidth): 4x4 for 16 lanes, 4x2 for 8, 2x2 for 4. A tile is a grid of blocks_x * blocks_y
// blocks, padded where the tile size is not a multiple of the block size. Near-square blocks fit the
// footprint of a small splat more tightly than tile rows do.
constexpr int kBlockWidth = kLanes == 4 ? 2 : 4;
constexpr int kBlockHeight = kLanes / kBlockWidth;

template <typename T> int blocks_x(const RasterArgs<T>& a) {
    return (a.tile_size + kBlockWidth - 1) / kBlockWidth;
}
template <typename T> int blocks_y(const RasterArgs<T>& a) {
    return (a.tile_size + kBlockHeight - 1) / kBlockHeight;
}

template <typename T> int vectors_per_tile(const RasterArgs<T>& a) { return blocks_x(a) * blocks_y(a); }

// Pixel centres of a tile, and which lanes are real pixels of the image (the tile's first `width`
// columns and `height` rows).
template <typename T>
TileGeometry<T> tile_setup(const RasterArgs<T>& a, int64_t tile, typename Simd<T>::V* px,
                           typename Simd<T>::V* py, typename Simd<T>::M* inside) {
    using V = typename Simd<T>::V;
    const int64_t per_camera = int64_t(a.tile_width) * a.tile_height;
    const int64_t local = tile % per_camera;
    TileGeometry<T> g;
    g.camera = int(tile / per_camera);
    g.x0 = int(local % a.tile_width) * a.tile_size;
    g.y0 = int(local / a.tile_width) * a.tile_size;
    g.width = a.width - g.x0 < a.tile_size ? a.width - g.x0 : a.tile_size;
    g.height = a.height - g.y0 < a.tile_size ? a.height - g.y0 : a.tile_size;
    g.n_inside = g.width * g.height;
    g.begin = a.isect_offsets[tile];
    g.end = tile + 1 < a.n_tiles ? a.isect_offsets[tile + 1] : a.n_isects;
    V column, row;  // of each lane in its block
    for (int l = 0; l < kLanes; ++l) {
        column[l] = l % kBlockWidth;
        row[l] = l / kBlockWidth;
    }
    const int B = blocks_x(a), Q = vectors_per_tile(a);
    for (int q = 0; q < Q; ++q) {
        const V lx = T((q % B) * kBlockWidth) + column, ly = T((q / B) * kBlockHeight) + row;
        px[q] = lx + T(g.x0) + T(0.5);
        py[q] = ly + T(g.y0) + T(0.5);
        inside[q] = (lx < T(g.width)) & (ly < T(g.height));
    }
    return g;
}

// Calls f(pixel index in the image, vector, lane) for each pixel of the tile in the image, row by row.
template <typename T, typename F> void for_each_pixel(const RasterArgs<T>& a, const TileGeometry<T>& g, F f) {
    const int B = blocks_x(a);
    for (int y = 0; y < g.height; ++y) {
        const int64_t row = (int64_t(g.camera) * a.height + g.y0 + y) * a.width + g.x0;
        const int q_row = y / kBlockHeight * B, l_row = y % kBlockHeight * kBlockWidth;
        for (int x = 0; x < g.width; ++x) f(row + x, q_row + x / kBlockWidth, l_row + x % kBlockWidth);
    }
}

// The blocks of a tile a splat can reach: block rows [y_begin, y_end), and in block row `by` the
// blocks [x_begin[by], x_end[by]).
constexpr int kMaxBlockRows = (kMaxTileSize + kBlockHeight - 1) / kBlockHeight;

struct BlockRange {
    int y_begin, y_end;
    // kLanes - 1 entries of room: rows are computed a vector at a time.
    alignas(64) int32_t x_begin[kMaxBlockRows + kLanes - 1];
    alignas(64) int32_t x_end[kMaxBlockRows + kLanes - 1];
};

typedef int32_t VI __attribute__((vector_size(kLanes * sizeof(int32_t))));

template <typename T> struct Splat {
    T mx, my, opacity;
    Sym2<T> conic;
    const T* color;
    BlockRange blocks;
};

// Blocks [begin, end) of `block` pixels holding the pixels whose index in the tile lies in [first, last]
// (fractional; a pixel of margin on each side), or an empty range.
template <typename T>
void pixel_span_to_blocks(T first, T last, int tile_size, int block, int& begin, int& end) {
    first -= T(1);
    last += T(1);
    if (!(last >= T(0) && first <= T(tile_size - 1))) {  // also rejects NaN
        begin = end = 0;
        return;
    }
    begin = (first < T(0) ? 0 : int(first)) / block;
    end = (last >= T(tile_size - 1) ? tile_size - 1 : int(last)) / block + 1;
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
    const int BX = blocks_x(a), BY = blocks_y(a), ts = a.tile_size;
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
        s.blocks.y_end = BY;
        for (int by = 0; by < BY; ++by) {
            s.blocks.x_begin[by] = 0;
            s.blocks.x_end[by] = BX;
        }
        return s;
    }
    const T cx = s.mx - T(x0) - T(0.5), cy = s.my - T(y0) - T(0.5);  // mean in pixel-index units
    pixel_span_to_blocks(cy - sh.half_height, cy + sh.half_height, ts, kBlockHeight, s.blocks.y_begin,
                         s.blocks.y_end);
    // kLanes block rows at a time: the blocks of each row the ellipse reaches, as pixel_span_to_blocks.
    using V = typename Simd<T>::V;
    for (int by0 = s.blocks.y_begin; by0 < s.blocks.y_end; by0 += kLanes) {
        // Bounds over the block row's dy range: the shear at both ends, the width at the dy nearest 0.
        const V top = (T(by0) + lane_iota<V>()) * T(kBlockHeight);
        const V dy_lo = top - cy, dy_hi = (top + T(kBlockHeight - 1)) - cy;
        const V shift_lo = sh.shear * dy_lo, shift_hi = sh.shear * dy_hi;
        const V dy_near = dy_lo > T(0) ? dy_lo : (dy_hi < T(0) ? dy_hi : V{});
        const V width_sq = (sh.two_s_max - sh.det_over_a * dy_near * dy_near) * sh.inv_a;
        const auto reached = width_sq >= T(0);  // false for NaN
        const V half_width = simd_sqrt(reached ? width_sq : V{});
        const V lo = shift_lo < shift_hi ? shift_lo : shift_hi, hi = shift_lo < shift_hi ? shift_hi : shift_lo;
        const V first = cx + lo - half_width - T(1), last = cx + hi + half_width + T(1);
        const auto in_tile = reached & (last >= T(0)) & (first <= T(ts - 1));  // also rejects NaN
        // Clamped to the tile before the conversion, which is then exact (truncation of values >= 0).
        const V first_px = in_tile ? (first < T(0) ? V{} : first) : V{};
        const V last_px = in_tile ? (last >= T(ts - 1) ? V{} + T(ts - 1) : last) : V{};
        const VI in_tile_i = __builtin_convertvector(in_tile, VI);
        const VI begin = (__builtin_convertvector(first_px, VI) / kBlockWidth) & in_tile_i;
        const VI end = (__builtin_convertvector(last_px, VI) / kBlockWidth + 1) & in_tile_i;
        std::memcpy(s.blocks.x_begin + by0, &begin, sizeof(VI));
        std::memcpy(s.blocks.x_end + by0, &end, sizeof(VI));
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
void forward_tiles(const RasterArgs<T>& a, const SplatShape<T>* shapes, const RasterForwardOutputs<T>& out) {
    using V = typename Simd<T>::V;
    using M = typename Simd<T>::M;
#pragma omp parallel num_threads(a.n_threads)
    {
        // Inside the parallel region, so that the outlined function sees D as the constant it is.
        const int Q = vectors_per_tile(a), B = blocks_x(a), D = channel_count<kChannels>(a.channels);
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
            for_each_pixel(a, g, [&](int64_t pix, int q, int l) {
                const T t = trans[q][l];
                for (int ch = 0; ch < D; ++ch)
                    out.colors[pix * D + ch] = acc[ch * Q + q][l] + (bg ? t * bg[ch] : T(0));
                out.alphas[pix] = T(1) - t;
                out.transmittance[pix] = t;
                out.last_ids[pix] = int32_t(last[q][l]);
            });
        }
    }
}

template <typename T, int kChannels>
void backward_tiles(const RasterArgs<T>& a, const SplatShape<T>* shapes, const RasterBackwardInputs<T>& in,
                    const BackwardOut<T>& out) {
    using V = typename Simd<T>::V;
    using M = typename Simd<T>::M;
#pragma omp parallel num_threads(a.n_threads)
    {
        const int Q = vectors_per_tile(a), B = blocks_x(a), D = channel_count<kChannels>(a.channels);
        const int R = kRecordFixed + D;
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
            for (int q = 0; q < Q; ++q) {  // lanes outside the image keep these
                t_final[q] = v_trans_final[q] = V{};
                last[q] = M{} - 1;
                for (int ch = 0; ch < D; ++ch) v_color[ch * Q + q] = V{};
            }
            for_each_pixel(a, g, [&](int64_t pix, int q, int l) {
                t_final[q][l] = in.transmittance[pix];
                last[q][l] = in.last_ids[pix];
                T v_tf = in.v_alphas[pix];
                for (int ch = 0; ch < D; ++ch) {
                    const T vc = in.v_colors[pix * D + ch];
                    v_color[ch * Q + q][l] = vc;
                    if (bg) v_tf -= bg[ch] * vc;
                }
                v_trans_final[q][l] = v_tf;
            });
            int64_t max_last = -1;
            for (int q = 0; q < Q; ++q) {
                vector_last[q] = -1;
                for (int l = 0; l < kLanes; ++l)
                    vector_last[q] = last[q][l] > vector_last[q] ? int64_t(last[q][l]) : vector_last[q];
                max_last = vector_last[q] > max_last ? vector_last[q] : max_last;
            }
            for (int ch = 0; ch < D; ++ch) {
                V total = V{};
                for (int q = 0; q < Q; ++q) total += t_final[q] * v_color[ch * Q + q];
                out.background[tile * D + ch] = hsum(total);
            }
            for (int q = 0; q < Q; ++q) trans[q] = t_final[q];
            for (int k = 0; k < D * Q; ++k) behind[k] = V{};

            // Every record is written here, zeros for the intersections no pixel blended: the caller's
            // buffer needs no zero fill (a serial pass over all of it).
            auto zero_record = [&](int64_t i) {
                for (int f = 0; f < R; ++f) out.records[i * R + f] = T(0);
            };
            for (int64_t i = max_last + 1 > g.begin ? max_last + 1 : g.begin; i < g.end; ++i) zero_record(i);
            for (int64_t i = max_last; i >= g.begin; --i) {
                prefetch_splat(a, shapes, i - kPrefetchDistance, g.begin, g.end);
                const Splat<T> s = load_splat(a, shapes, a.flatten_ids[i], g.x0, g.y0);
                if (s.blocks.y_begin >= s.blocks.y_end) {
                    zero_record(i);
                    continue;
                }
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
                    g_ax += simd_abs(sg.v_mean_x);
                    g_ay += simd_abs(sg.v_mean_y);
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

template <typename T> void forward_any(const RasterArgs<T>& a, const RasterForwardOutputs<T>& out) {
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
void backward_any(const RasterArgs<T>& a, const RasterBackwardInputs<T>& in, const BackwardOut<T>& out) {
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

void rasterize_forward(const RasterArgs<float>& args, const RasterForwardOutputs<float>& out) {
    forward_any(args, out);
}
void rasterize_forward(const RasterArgs<double>& args, const RasterForwardOutputs<double>& out) {
    forward_any(args, out);
}
void rasterize_backward(const RasterArgs<float>& args, const RasterBackwardInputs<float>& in,
                        const BackwardOut<float>& out) {
    backward_any(args, in, out);
}
void rasterize_backward(const RasterArgs<double>& args, const RasterBackwardInputs<double>& in,
                        const BackwardOut<double>& out) {
    backward_any(args, in, out);
}

}  // namespace gsplat_py::cpu::GS_ISA
// clang-format on
