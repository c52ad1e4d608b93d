// Spherical harmonics colours on the GPU: one thread per direction (with its row of coefficients), the
// basis of gsplat_math.h.
#include <type_traits>

#include "cuda_common.cuh"
#include "gsplat_math.h"
#include "kernels.h"

namespace gsplat_py::cuda {

namespace {

// A warp handles 32 consecutive directions and moves their coefficient rows between device memory and
// shared memory together, so the loads and stores are coalesced (a thread reading or writing its own
// 48-value row would touch 32 rows at once per instruction: measured 4x slower than bandwidth).
// Warps per block: their staged rows stay within 48 KB of shared memory (39 KB at degree 4).
template <typename T> __host__ __device__ constexpr int warps_per_block() { return sizeof(T) == 4 ? 4 : 2; }

template <typename T> struct UnitDir {
    T x, y, z, inv_norm;
};

template <typename T> __device__ UnitDir<T> normalise(const T* d) {
    const T inv = T(1) / std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    return {d[0] * inv, d[1] * inv, d[2] * inv, inv};
}

// The warp's directions and their rows in shared memory; rows are padded by one value against bank
// conflicts. `count` <= 0 means the warp has no direction.
template <typename T, int kDegree> struct WarpRows {
    static constexpr int kBases = sh_num_bases(kDegree);
    static constexpr int kUsed = 3 * kBases;  // the coefficients the degree reads
    static constexpr int kPitch = kUsed + 1;
    int64_t first;
    int count, lane;
    T* rows;

    __device__ WarpRows(const ShArgs<T>& a, T (*staged)[32 * kPitch]) {
        const int warp = threadIdx.x / 32;
        lane = threadIdx.x % 32;
        first = (int64_t(blockIdx.x) * warps_per_block<T>() + warp) * 32;
        count = int(a.count - first < 32 ? a.count - first : 32);
        rows = staged[warp];
    }

    // Coefficients [e][k][c] (the first kUsed of each row) into shared memory, then a warp barrier.
    __device__ void load_coefficients(const ShArgs<T>& a) {
        for (int p = lane; p < count * kUsed; p += 32) {
            const int e = p / kUsed, r = p - e * kUsed;
            rows[e * kPitch + r] = a.coeffs.value(a.row(first + e), r);
        }
        __syncwarp();
    }

    __device__ bool masked(const ShArgs<T>& a) const { return a.masks && !a.masks[first + lane]; }
};

// The degree is a template parameter so the loops over bases unroll and the basis stays in registers.
template <typename T, int kDegree>
__global__ void sh_forward_kernel(const ShArgs<T> a, T* __restrict__ colors) {
    using Rows = WarpRows<T, kDegree>;
    __shared__ T staged[warps_per_block<T>()][32 * Rows::kPitch];
    Rows w(a, staged);
    if (w.count <= 0) return;
    w.load_coefficients(a);
    if (w.lane >= w.count) return;
    const int64_t i = w.first + w.lane;
    T sum[3] = {T(0), T(0), T(0)};
    if (!w.masked(a)) {
        const UnitDir<T> u = normalise(a.dirs + 3 * i);
        T basis[kMaxShBases];
        sh_basis(kDegree, u.x, u.y, u.z, basis);
        const T* c = w.rows + w.lane * Rows::kPitch;
#pragma unroll
        for (int k = 0; k < Rows::kBases; ++k)
#pragma unroll
            for (int ch = 0; ch < 3; ++ch) sum[ch] += basis[k] * c[3 * k + ch];
    }
#pragma unroll
    for (int ch = 0; ch < 3; ++ch) colors[3 * i + ch] = sum[ch];
}

template <typename T, int kDegree>
__global__ void sh_backward_kernel(const ShArgs<T> a, const T* __restrict__ v_colors, T* __restrict__ v_dirs,
                                   const ShCoeffs<T> v_coeffs) {
    using Rows = WarpRows<T, kDegree>;
    constexpr int kBases = Rows::kBases;
    __shared__ T staged[warps_per_block<T>()][32 * Rows::kPitch];
    Rows w(a, staged);
    if (w.count <= 0) return;
    w.load_coefficients(a);
    const bool active = w.lane < w.count && !w.masked(a);
    const int64_t i = w.first + w.lane;
    T basis[kMaxShBases] = {};
    T vc[3] = {T(0), T(0), T(0)};
    if (active) {
        const UnitDir<T> u = normalise(a.dirs + 3 * i);
        sh_basis(kDegree, u.x, u.y, u.z, basis);
#pragma unroll
        for (int ch = 0; ch < 3; ++ch) vc[ch] = v_colors[3 * i + ch];
        const T* c = w.rows + w.lane * Rows::kPitch;
        T weights[kMaxShBases];
#pragma unroll
        for (int k = 0; k < kBases; ++k)
            weights[k] = c[3 * k] * vc[0] + c[3 * k + 1] * vc[1] + c[3 * k + 2] * vc[2];
        // through the normalisation: (I - u u^T) g / |d|
        const Vec3<T> g = sh_basis_vjp(kDegree, u.x, u.y, u.z, weights);
        const T dot = g.x * u.x + g.y * u.y + g.z * u.z;
        v_dirs[3 * i] = (g.x - dot * u.x) * u.inv_norm;
        v_dirs[3 * i + 1] = (g.y - dot * u.y) * u.inv_norm;
        v_dirs[3 * i + 2] = (g.z - dot * u.z) * u.inv_norm;
    } else if (w.lane < w.count) {
        v_dirs[3 * i] = v_dirs[3 * i + 1] = v_dirs[3 * i + 2] = T(0);
    }
    // The rows now hold each direction's basis and colour gradient (zeros when masked): v_coeffs[e][k][c]
    // = basis_e[k] * v_color_e[c], written out by the whole warp, bases above the degree as zeros.
    __syncwarp();
    if (w.lane < w.count) {
        T* row = w.rows + w.lane * Rows::kPitch;
#pragma unroll
        for (int k = 0; k < kBases; ++k) row[k] = basis[k];
#pragma unroll
        for (int ch = 0; ch < 3; ++ch) row[kBases + ch] = vc[ch];
    }
    __syncwarp();
    const int out_row = int(3 * a.bases);
    for (int p = w.lane; p < w.count * out_row; p += 32) {
        const int e = p / out_row, r = p - e * out_row, k = r / 3, ch = r - 3 * k;
        const T* row = w.rows + e * Rows::kPitch;
        v_coeffs.value(a.row(w.first + e), r) = k < kBases ? row[k] * row[kBases + ch] : T(0);
    }
}

static_assert(kMaxShDegree == 4, "with_degree instantiates the kernels for the degrees 0..4");
template <typename Launch> void with_degree(int degree, Launch launch) {
    switch (degree) {
        case 0: return launch(std::integral_constant<int, 0>{});
        case 1: return launch(std::integral_constant<int, 1>{});
        case 2: return launch(std::integral_constant<int, 2>{});
        case 3: return launch(std::integral_constant<int, 3>{});
        case 4: return launch(std::integral_constant<int, 4>{});
        default: throw std::runtime_error(std::string("gsplat_py CUDA: ") + sh_error(degree, kMaxShBases));
    }
}

}  // namespace

template <typename T>
void spherical_harmonics_forward(const ShArgs<T>& args, T* colors, cudaStream_t stream) {
    if (args.count == 0) return;
    with_degree(args.degree, [&](auto degree) {
        sh_forward_kernel<T, degree.value>
            <<<blocks_for(args.count, 32 * warps_per_block<T>()), 32 * warps_per_block<T>(), 0, stream>>>(
                args, colors);
    });
    check_launch("sh_forward_kernel");
}

template <typename T>
void spherical_harmonics_backward(const ShArgs<T>& args, const T* v_colors, T* v_dirs,
                                  const ShCoeffs<T>& v_coeffs, cudaStream_t stream) {
    if (args.count == 0) return;
    with_degree(args.degree, [&](auto degree) {
        sh_backward_kernel<T, degree.value>
            <<<blocks_for(args.count, 32 * warps_per_block<T>()), 32 * warps_per_block<T>(), 0, stream>>>(
                args, v_colors, v_dirs, v_coeffs);
    });
    check_launch("sh_backward_kernel");
}

template void spherical_harmonics_forward<float>(const ShArgs<float>&, float*, cudaStream_t);
template void spherical_harmonics_forward<double>(const ShArgs<double>&, double*, cudaStream_t);
template void spherical_harmonics_backward<float>(const ShArgs<float>&, const float*, float*,
                                                  const ShCoeffs<float>&, cudaStream_t);
template void spherical_harmonics_backward<double>(const ShArgs<double>&, const double*, double*,
                                                   const ShCoeffs<double>&, cudaStream_t);

}  // namespace gsplat_py::cuda
