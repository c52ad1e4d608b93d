// Binning of projected Gaussians into screen tiles. The visible Gaussians are first sorted by depth
// (a stable radix sort of the depth bits, so ties keep index order); a counting sort by (camera, tile)
// that visits them in that order then leaves every tile's list sorted by depth.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_common.h"
#include "ops.h"

namespace gsplat_py::cpu {

namespace {

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
template <> struct SortKey<float> { using type = uint32_t; };
template <> struct SortKey<double> { using type = uint64_t; };

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
    int32_t tile_base;  // first tile of its camera
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

template <typename T>
void bin_impl(const at::Tensor& means2d, const at::Tensor& radii, const at::Tensor& depths,
              int tile_size, int tile_width, int tile_height, at::Tensor& tiles_per_gauss,
              at::Tensor& isect_offsets, at::Tensor& flatten_ids) {
    using U = typename SortKey<T>::type;
    const int64_t C = means2d.size(0), N = means2d.size(1);
    const int64_t tiles_per_camera = int64_t(tile_width) * tile_height;
    const int64_t n_tiles = C * tiles_per_camera;
    const T* mean_p = means2d.data_ptr<T>();
    const int32_t* radii_p = radii.data_ptr<int32_t>();
    const T* depth_p = depths.data_ptr<T>();
    int32_t* count_p = tiles_per_gauss.data_ptr<int32_t>();

    std::vector<TileRect> rects(size_t(C * N));
    at::parallel_for(0, C * N, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t idx = begin; idx < end; ++idx) {
            rects[idx] = tile_rect(mean_p + 2 * idx, radii_p + 2 * idx, tile_size, tile_width, tile_height);
            count_p[idx] = int32_t(rects[idx].count());
        }
    });
    std::vector<BinItem<U>> items;
    items.reserve(size_t(C * N));
    for (int64_t idx = 0; idx < C * N; ++idx)
        if (count_p[idx] > 0)
            items.push_back({order_preserving_bits(depth_p[idx]), int32_t(idx),
                             int32_t((idx / N) * tiles_per_camera), rects[idx]});
    radix_sort(items);

    // Tile sizes, their offsets, then every tile's members in depth order.
    std::vector<int64_t> tile_start(size_t(n_tiles + 1), 0);
    for (const BinItem<U>& item : items)
        for (int y = item.rect.y0; y < item.rect.y1; ++y)
            for (int x = item.rect.x0; x < item.rect.x1; ++x)
                ++tile_start[item.tile_base + int64_t(y) * tile_width + x + 1];
    for (int64_t t = 0; t < n_tiles; ++t) tile_start[t + 1] += tile_start[t];
    const int64_t M = tile_start[n_tiles];
    TORCH_CHECK(M < (int64_t(1) << 31), "too many Gaussian-tile intersections (", M, ") for int32 ids");

    flatten_ids = at::empty({M}, means2d.options().dtype(at::kInt));
    int32_t* ids = flatten_ids.data_ptr<int32_t>();
    std::vector<int64_t> cursor(tile_start.begin(), tile_start.end() - 1);
    for (const BinItem<U>& item : items)
        for (int y = item.rect.y0; y < item.rect.y1; ++y)
            for (int x = item.rect.x0; x < item.rect.x1; ++x)
                ids[cursor[item.tile_base + int64_t(y) * tile_width + x]++] = item.id;
    int32_t* offsets = isect_offsets.data_ptr<int32_t>();
    for (int64_t t = 0; t < n_tiles; ++t) offsets[t] = int32_t(tile_start[t]);
}

}  // namespace

std::vector<at::Tensor> bin_gaussians_to_tiles(const at::Tensor& means2d, const at::Tensor& radii,
                                               const at::Tensor& depths, int64_t tile_size,
                                               int64_t tile_width, int64_t tile_height) {
    check_binning_inputs(means2d, radii, depths);
    const int64_t C = means2d.size(0), N = means2d.size(1);
    auto int_opts = means2d.options().dtype(at::kInt);
    at::Tensor tiles_per_gauss = at::zeros({C, N}, int_opts);
    at::Tensor isect_offsets = at::empty({C, tile_height, tile_width}, int_opts);
    at::Tensor flatten_ids;
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "bin_gaussians_to_tiles", [&] {
        bin_impl<scalar_t>(means2d, radii, depths, int(tile_size), int(tile_width), int(tile_height),
                           tiles_per_gauss, isect_offsets, flatten_ids);
    });
    return {tiles_per_gauss, isect_offsets, flatten_ids};
}

}  // namespace gsplat_py::cpu
