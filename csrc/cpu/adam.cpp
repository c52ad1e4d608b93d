// Adam over several parameter tensors in one OpenMP region (adam_math.h has the update). A training step
// updates six tensors of one row per Gaussian; torch's fused Adam opens a region per tensor, and every
// region is a wake-up of the worker threads and a barrier, which a busy machine makes costly.
//
// The work is cut into items of about kItemValues values, whole rows each (so the `visible` mask applies
// by row), spread statically over the threads; each value is updated independently, so the result does
// not depend on the number of threads.
#include <algorithm>
#include <vector>

#include "adam_math.h"
#include "cpu_common.h"
#include "kernels.h"

namespace gsplat_py::cpu {
namespace {

constexpr int64_t kItemValues = 1 << 14;       // values per work item (4 arrays of 64 KiB in float)
constexpr int64_t kValuesPerThread = 1 << 16;  // at least, or the region costs more than it saves

constexpr int64_t kMaskValues = 4096;  // values per block of the visible-rows path

// Rows [0, rows) of `row_size` values from the given pointers: all of them, or those whose `visible`
// entry is true. The second computes every value too and keeps the visible ones' (a select the compiler
// vectorises, where skipping rows one by one would not): each row costs the same either way.
template <typename T>
__attribute__((always_inline)) inline void update_rows(const AdamCoefficients<T>& c, T* __restrict__ param,
                                                       const T* __restrict__ grad, T* __restrict__ exp_avg,
                                                       T* __restrict__ exp_avg_sq, int64_t rows,
                                                       int64_t row_size, const bool* visible) {
    if (visible == nullptr) {
        for (int64_t i = 0; i < rows * row_size; ++i)
            adam_update(c, param[i], grad[i], exp_avg[i], exp_avg_sq[i]);
        return;
    }
    const int64_t rows_per_block = std::max<int64_t>(1, kMaskValues / row_size);
    std::vector<unsigned char> keep(rows_per_block * row_size);
    for (int64_t first = 0; first < rows; first += rows_per_block) {
        const int64_t block_rows = std::min(rows_per_block, rows - first);
        for (int64_t row = 0; row < block_rows; ++row)
            std::fill_n(keep.data() + row * row_size, row_size, visible[first + row]);
        const int64_t offset = first * row_size;
        T* p = param + offset;
        const T* g = grad + offset;
        T* m = exp_avg + offset;
        T* v = exp_avg_sq + offset;
        for (int64_t i = 0; i < block_rows * row_size; ++i) {
            T new_p = p[i], new_m = m[i], new_v = v[i];
            adam_update(c, new_p, g[i], new_m, new_v);
            p[i] = keep[i] ? new_p : p[i];
            m[i] = keep[i] ? new_m : m[i];
            v[i] = keep[i] ? new_v : v[i];
        }
    }
}

// The update needs fma and, per value, a square root and two divisions, so it is compiled for the
// instruction-set levels of the rasterizer kernels and runs the one they use (simd_level(); so
// GSPLAT_PY_SIMD lowers both): AVX-512 with 512-bit vectors, AVX2+FMA, and the baseline. The x86-64
// baseline has no fma instruction and calls libm's: the same, correctly rounded result, slowly (only
// x86-64 CPUs from before 2013 lack FMA); aarch64 has fma in its baseline.
template <typename T>
using UpdateRows = void (*)(const AdamCoefficients<T>&, T*, const T*, T*, T*, int64_t, int64_t, const bool*);

struct Item {
    int tensor;
    int64_t row_begin, row_end;
};

}  // namespace

template <typename T>
void adam_step(const AdamArgs<T>& a) {
    static const UpdateRows<T> update = PerLevel<UpdateRows<T>, update_rows<T>>::at_level();
    std::vector<AdamCoefficients<T>> coefficients;
    std::vector<Item> items;
    int64_t values = 0;
    for (int i = 0; i < a.count; ++i) {
        const AdamTensor<T>& t = a.tensors[i];
        coefficients.push_back(adam_coefficients<T>(t.lr, t.beta1, t.beta2, t.eps, t.step));
        if (t.row_size == 0) continue;
        const int64_t rows_per_item = std::max<int64_t>(1, kItemValues / t.row_size);
        for (int64_t row = 0; row < t.rows; row += rows_per_item)
            items.push_back({i, row, std::min(t.rows, row + rows_per_item)});
        values += t.rows * t.row_size;
    }
    const int threads = int(std::clamp<int64_t>(values / kValuesPerThread, 1, std::max(a.n_threads, 1)));
    const int64_t n_items = int64_t(items.size());
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t k = 0; k < n_items; ++k) {
        const Item& item = items[k];
        const AdamTensor<T>& t = a.tensors[item.tensor];
        const int64_t offset = item.row_begin * t.row_size;
        update(coefficients[item.tensor], t.param + offset, t.grad + offset, t.exp_avg + offset,
               t.exp_avg_sq + offset, item.row_end - item.row_begin, t.row_size,
               a.visible ? a.visible + item.row_begin : nullptr);
    }
}

template void adam_step<float>(const AdamArgs<float>&);
template void adam_step<double>(const AdamArgs<double>&);

}  // namespace gsplat_py::cpu
