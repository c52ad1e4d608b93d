// Binning of projected Gaussians (entries: [I, N] pairs, or packed ones with their image) into screen
// tiles. The visible entries are first sorted by depth (a stable radix sort of the depth bits, so ties keep
// index order); a counting sort by (image, tile) that visits them in that order then leaves every tile's
// list sorted by depth. gsplat's intersection ids (image | tile | depth) are written alongside.
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

// A visible Gaussian on its way to the tiles; sorting these records (not indices into other arrays)
// keeps the later passes sequential in memory.
template <typename U> struct BinItem {
    U key;  // depth, as order-preserving bits
    int32_t id;
    int32_t image;
    TileRect rect;
};

// Stable LSD radix sort by key, 11 bits per pass.
template <typename U> void radix_sort(std::vector<BinItem<U>>& items) {
    constexpr int kBits = 11, kBuckets = 1 << kBits;
    std::vector<BinItem<U>> scratch(items.size());
    std::vector<size_t> count(kBuckets + 1);
    for (int shift = 0; shift < int(8 * sizeof(U)); shift += kBits) {
        std::fill(count.begin(), count.end(), 0);
        for (const BinItem<U>& item : items) ++count[((item.key >> shift) & (kBuckets - 1)) + 1];
        if (count[1] == items.size()) continue;  // every key has the same digit here
        for (int d = 0; d < kBuckets; ++d) count[d + 1] += count[d];
        for (const BinItem<U>& item : items) scratch[count[(item.key >> shift) & (kBuckets - 1)]++] = item;
        items.swap(scratch);
    }
}

}  // namespace

template <typename T>
int64_t bin_gaussians_to_tiles(const BinningArgs<T>& a, int32_t* tiles_per_gauss, int32_t* isect_offsets,
                               DeviceMemory& memory) {
    using U = typename SortKey<T>::type;
    const int64_t tiles_per_image = int64_t(a.tile_width) * a.tile_height;
    const int64_t n_tiles = a.n_images * tiles_per_image, total = a.n_entries;

    std::vector<TileRect> rects(static_cast<size_t>(total));
    parallel_for(total, kRectGrain, a.n_threads, [&](int64_t begin, int64_t end) {
        for (int64_t idx = begin; idx < end; ++idx) {
            rects[idx] =
                tile_rect(a.means2d + 2 * idx, a.radii + 2 * idx, a.tile_size, a.tile_width, a.tile_height);
            tiles_per_gauss[idx] = int32_t(rects[idx].count());
        }
    });
    std::vector<BinItem<U>> items;
    items.reserve(size_t(total));
    for (int64_t idx = 0; idx < total; ++idx)
        if (tiles_per_gauss[idx] > 0)
            items.push_back(
                {order_preserving_bits(a.depths[idx]), int32_t(idx), int32_t(a.image_of(idx)), rects[idx]});
    radix_sort(items);

    // Tile sizes, their offsets, then every tile's members in depth order.
    std::vector<int64_t> tile_start(size_t(n_tiles + 1), 0);
    for (const BinItem<U>& item : items)
        for (int y = item.rect.y0; y < item.rect.y1; ++y)
            for (int x = item.rect.x0; x < item.rect.x1; ++x)
                ++tile_start[int64_t(item.image) * tiles_per_image + int64_t(y) * a.tile_width + x + 1];
    for (int64_t t = 0; t < n_tiles; ++t) tile_start[t + 1] += tile_start[t];
    const int64_t M = tile_start[n_tiles];
    if (const char* error = intersection_count_error(M)) throw std::runtime_error(error);

    int32_t* ids = memory.flatten_ids(M);
    const IsectIdLayout layout = isect_id_layout(a.n_images, tiles_per_image);
    const bool with_isect_ids = isect_id_bits_fit(layout);
    int64_t* isect_ids = memory.isect_ids(with_isect_ids ? M : 0);
    std::vector<int64_t> cursor(tile_start.begin(), tile_start.end() - 1);
    for (const BinItem<U>& item : items) {
        // the item's image and depth bits; each tile adds its own
        const int64_t item_key = with_isect_ids ? isect_id(layout, item.image, 0, a.depths[item.id]) : 0;
        for (int y = item.rect.y0; y < item.rect.y1; ++y)
            for (int x = item.rect.x0; x < item.rect.x1; ++x) {
                const int64_t tile = int64_t(y) * a.tile_width + x;
                const int64_t slot = cursor[int64_t(item.image) * tiles_per_image + tile]++;
                ids[slot] = item.id;
                if (with_isect_ids) isect_ids[slot] = item_key | (tile << 32);
            }
    }
    for (int64_t t = 0; t < n_tiles; ++t) isect_offsets[t] = int32_t(tile_start[t]);
    return M;
}

template int64_t bin_gaussians_to_tiles<float>(const BinningArgs<float>&, int32_t*, int32_t*, DeviceMemory&);
template int64_t bin_gaussians_to_tiles<double>(const BinningArgs<double>&, int32_t*, int32_t*,
                                                DeviceMemory&);

}  // namespace gsplat_py::cpu
