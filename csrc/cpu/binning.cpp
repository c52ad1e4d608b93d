// Binning of projected Gaussians (entries: [I, N] pairs, or packed ones with their image) into screen
// tiles. The visible entries are first sorted by depth (a stable radix sort of the depth bits, so ties keep
// index order); a counting sort by (image, tile) that visits them in that order then leaves every tile's
// list sorted by depth. gsplat's intersection ids (image | tile | depth) are written alongside. Every pass
// runs on up to n_threads contiguous ranges whose outputs go where the serial pass puts them (see below).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "cpu_common.h"
#include "kernels.h"

namespace gsplat_py::cpu {

namespace {

// Gaussians per thread at least, when finding their tiles.
constexpr int64_t kRectGrain = 4096;
// Visible Gaussians per thread at least, when sorting them and writing them into their tiles.
constexpr int64_t kItemGrain = 8192;

struct TileRect {
    int x0, x1, y0, y1;  // [x0, x1) x [y0, y1)
    int64_t count() const { return int64_t(x1 - x0) * (y1 - y0); }
};

template <typename T>
TileRect tile_rect(const T* mean, const int32_t* radius, int tile_size, int tile_width, int tile_height) {
    if (radius[0] <= 0 || radius[1] <= 0) return {0, 0, 0, 0};
    auto clampi = [](T v, int hi) { return int(std::min<T>(std::max<T>(v, T(0)), T(hi))); };
    const T ts = T(tile_size);
    return {clampi(std::floor((mean[0] - radius[0]) / ts), tile_width),
            clampi(std::ceil((mean[0] + radius[0]) / ts), tile_width),
            clampi(std::floor((mean[1] - radius[1]) / ts), tile_height),
            clampi(std::ceil((mean[1] + radius[1]) / ts), tile_height)};
}

// Unsigned integer whose order is the order of the floating-point value (for non-NaN values).
template <typename T> struct SortKey;
template <> struct SortKey<float> {
    using type = uint32_t;
};
template <> struct SortKey<double> {
    using type = uint64_t;
};

template <typename T> typename SortKey<T>::type order_preserving_bits(T value) {
    using U = typename SortKey<T>::type;
    U bits;
    std::memcpy(&bits, &value, sizeof(bits));
    const U sign = U(1) << (8 * sizeof(U) - 1);
    return (bits & sign) ? ~bits : (bits | sign);
}

// The value back from its order-preserving bits (the same bits, NaNs included): the sorted items carry
// their depth, which saves a random read of depths[id] per item when writing the intersection ids.
template <typename T> T from_order_preserving_bits(typename SortKey<T>::type key) {
    using U = typename SortKey<T>::type;
    const U sign = U(1) << (8 * sizeof(U) - 1);
    const U bits = (key & sign) ? (key & ~sign) : ~key;
    T value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
}

// A visible Gaussian on its way to the tiles; sorting these records (not indices into other arrays)
// keeps the later passes sequential in memory.
template <typename U> struct BinItem {
    U key;  // depth, as order-preserving bits
    int32_t id;
    int32_t image;
    TileRect rect;
};

// The passes below split their input into the same contiguous ranges (parallel_ranges), one per thread,
// and give every range its own slice or offsets of the output, computed from per-range counts in range
// order: each range then writes exactly where the serial pass would, so the result is the same bits for
// any thread count.

// Finds every entry's tiles (tiles_per_gauss) and collects the visible entries, in index order, into
// `items`: each range counts its visible entries, then writes them after those of the ranges before it.
// Returns the number of intersections (the tiles of the visible entries).
template <typename T, typename U>
int64_t collect_visible(const BinningArgs<T>& a, int32_t* tiles_per_gauss, std::vector<BinItem<U>>& items) {
    const int64_t total = a.n_entries;
    const int n_ranges = range_count(total, kRectGrain, a.n_threads);
    std::vector<TileRect> rects(static_cast<size_t>(total));
    std::vector<int64_t> first_item(size_t(n_ranges) + 1, 0), range_isects(size_t(n_ranges), 0);
    parallel_ranges(total, n_ranges, [&](int r, int64_t begin, int64_t end) {
        int64_t visible = 0, isects = 0;
        for (int64_t idx = begin; idx < end; ++idx) {
            rects[idx] =
                tile_rect(a.means2d + 2 * idx, a.radii + 2 * idx, a.tile_size, a.tile_width, a.tile_height);
            tiles_per_gauss[idx] = int32_t(rects[idx].count());
            if (tiles_per_gauss[idx] > 0) ++visible, isects += rects[idx].count();
        }
        first_item[r + 1] = visible;
        range_isects[r] = isects;
    });
    for (int r = 0; r < n_ranges; ++r) first_item[r + 1] += first_item[r];
    items.resize(size_t(first_item[n_ranges]));
    parallel_ranges(total, n_ranges, [&](int r, int64_t begin, int64_t end) {
        BinItem<U>* out = items.data() + first_item[r];
        for (int64_t idx = begin; idx < end; ++idx)
            if (tiles_per_gauss[idx] > 0)
                *out++ = {order_preserving_bits(a.depths[idx]), int32_t(idx), int32_t(a.image_of(idx)),
                          rects[idx]};
    });
    int64_t isects = 0;
    for (int64_t range : range_isects) isects += range;
    return isects;
}

// Stable LSD radix sort by key, 11 bits per pass. In a pass, every range counts its items' digits; an item
// then goes after all items of smaller digits and after the items of its digit in earlier ranges (and in
// its own range before it): the place the serial stable pass gives it.
template <typename U> void radix_sort(std::vector<BinItem<U>>& items, int n_threads) {
    constexpr int kBits = 11, kBuckets = 1 << kBits;
    const int64_t n = int64_t(items.size());
    const int n_ranges = range_count(n, kItemGrain, n_threads);
    std::vector<BinItem<U>> scratch(items.size());
    std::vector<int64_t> next_slot(size_t(n_ranges) * kBuckets);  // [range][digit]: counts, then slots
    for (int shift = 0; shift < int(8 * sizeof(U)); shift += kBits) {
        auto digit = [shift](const BinItem<U>& item) { return int((item.key >> shift) & (kBuckets - 1)); };
        std::fill(next_slot.begin(), next_slot.end(), 0);  // a range past the end counts nothing
        parallel_ranges(n, n_ranges, [&](int r, int64_t begin, int64_t end) {
            int64_t* count = next_slot.data() + int64_t(r) * kBuckets;
            for (int64_t i = begin; i < end; ++i) ++count[digit(items[i])];
        });
        bool one_digit = false;  // every key has the same digit here: the pass would change nothing
        int64_t slot = 0;
        for (int d = 0; d < kBuckets; ++d) {
            const int64_t digit_start = slot;
            for (int r = 0; r < n_ranges; ++r) {
                const int64_t count = next_slot[int64_t(r) * kBuckets + d];
                next_slot[int64_t(r) * kBuckets + d] = slot;
                slot += count;
            }
            one_digit = one_digit || slot - digit_start == n;
        }
        if (one_digit) continue;
        parallel_ranges(n, n_ranges, [&](int r, int64_t begin, int64_t end) {
            int64_t* range_slot = next_slot.data() + int64_t(r) * kBuckets;
            for (int64_t i = begin; i < end; ++i) scratch[range_slot[digit(items[i])]++] = items[i];
        });
        items.swap(scratch);
    }
}

// f(tile, tile_in_image) for the tiles of an item, row by row: tile indexes [I, TH, TW].
template <typename U, typename F>
void for_each_tile(const BinItem<U>& item, int tile_width, int64_t tiles_per_image, const F& f) {
    for (int y = item.rect.y0; y < item.rect.y1; ++y)
        for (int x = item.rect.x0; x < item.rect.x1; ++x) {
            const int64_t tile_in_image = int64_t(y) * tile_width + x;
            f(int64_t(item.image) * tiles_per_image + tile_in_image, tile_in_image);
        }
}

// How many ranges count and fill the tiles: each keeps a counter per tile (ranges x n_tiles int64),
// allowed up to one per intersection so that they never outweigh the flatten_ids they fill; with more
// tiles than that (large or many images with few Gaussians), one range does it all.
int tile_pass_ranges(int64_t n_items, int64_t n_tiles, int64_t n_isects, int n_threads) {
    const int ranges = range_count(n_items, kItemGrain, n_threads);
    return ranges * n_tiles <= n_isects ? ranges : 1;
}

}  // namespace

template <typename T>
int64_t bin_gaussians_to_tiles(const BinningArgs<T>& a, int32_t* tiles_per_gauss, int32_t* isect_offsets,
                               DeviceMemory& memory) {
    using U = typename SortKey<T>::type;
    const int64_t tiles_per_image = int64_t(a.tile_width) * a.tile_height;
    const int64_t n_tiles = a.n_images * tiles_per_image;

    std::vector<BinItem<U>> items;
    const int64_t M = collect_visible(a, tiles_per_gauss, items);
    if (const char* error = intersection_count_error(M)) throw std::runtime_error(error);
    radix_sort(items, a.n_threads);

    // Every tile's members in depth order: each range of the sorted items counts its members of every tile,
    // and its members of a tile go after those of the earlier ranges.
    const int64_t n_items = int64_t(items.size());
    const int n_ranges = tile_pass_ranges(n_items, n_tiles, M, a.n_threads);
    std::vector<int64_t> next_slot(size_t(n_ranges * n_tiles), 0);  // [range][tile]: counts, then slots
    parallel_ranges(n_items, n_ranges, [&](int r, int64_t begin, int64_t end) {
        int64_t* count = next_slot.data() + r * n_tiles;
        for (int64_t i = begin; i < end; ++i)
            for_each_tile(items[i], a.tile_width, tiles_per_image,
                          [&](int64_t tile, int64_t) { ++count[tile]; });
    });
    int64_t slot = 0;
    for (int64_t t = 0; t < n_tiles; ++t) {
        isect_offsets[t] = int32_t(slot);
        for (int r = 0; r < n_ranges; ++r) {
            const int64_t count = next_slot[r * n_tiles + t];
            next_slot[r * n_tiles + t] = slot;
            slot += count;
        }
    }

    int32_t* ids = memory.flatten_ids(M);
    const IsectIdLayout layout = isect_id_layout(a.n_images, tiles_per_image);
    const bool with_isect_ids = isect_id_bits_fit(layout);
    int64_t* isect_ids = memory.isect_ids(with_isect_ids ? M : 0);
    parallel_ranges(n_items, n_ranges, [&](int r, int64_t begin, int64_t end) {
        int64_t* range_slot = next_slot.data() + r * n_tiles;
        for (int64_t i = begin; i < end; ++i) {
            const BinItem<U>& item = items[i];
            // the item's image and depth bits; each tile adds its own
            const int64_t item_key =
                with_isect_ids ? isect_id(layout, item.image, 0, from_order_preserving_bits<T>(item.key)) : 0;
            for_each_tile(item, a.tile_width, tiles_per_image, [&](int64_t tile, int64_t tile_in_image) {
                const int64_t s = range_slot[tile]++;
                ids[s] = item.id;
                if (with_isect_ids) isect_ids[s] = item_key | (tile_in_image << 32);
            });
        }
    });
    return M;
}

template int64_t bin_gaussians_to_tiles<float>(const BinningArgs<float>&, int32_t*, int32_t*, DeviceMemory&);
template int64_t bin_gaussians_to_tiles<double>(const BinningArgs<double>&, int32_t*, int32_t*,
                                                DeviceMemory&);

}  // namespace gsplat_py::cpu
