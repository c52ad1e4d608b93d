// Spherical harmonics colours (forward and backward) for a flat batch of directions, each with its row of
// coefficients. No fma contraction (GCC fuses a * b + c in C++ by default where the level has fma): every
// SIMD level below gives the baseline build's bits.
#pragma GCC optimize("fp-contract=off")

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cpu_common.h"
#include "gsplat_math.h"
#include "kernels.h"

namespace gsplat_py::cpu {

namespace {

// Directions per thread at least.
constexpr int64_t kShGrain = 2048;

template <typename T>
struct UnitDir {
    T x, y, z, inv_norm;
};

template <typename T>
UnitDir<T> normalise(const T* d) {
    T inv = T(1) / std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    return {d[0] * inv, d[1] * inv, d[2] * inv, inv};
}

// The forward goes through the rows in blocks of kShLanes, lane by lane in arrays that GCC's vectoriser
// keeps in vector registers (the degree is a template constant, so sh_basis has no branch): 1.6-1.8x
// faster on one thread than a row at a time, whose chains of dependent additions left the core waiting.
// Each lane does its row's operations in the row's order, so every level gives the bits of a row at a
// time. Masked-out rows are computed too (their results are not stored) rather than branched around. (The
// backward done the same way was slower than a row at a time: it stays so.)
constexpr int kShLanes = 16;

// Rows first .. first + lanes - 1 (lanes <= kShLanes); a short last block repeats its last row in the
// lanes past it, whose results are not stored.
template <typename T, int Degree>
__attribute__((always_inline)) inline void sh_forward_block(const ShArgs<T>& a, int64_t first, int lanes,
                                                            T* out) {
    constexpr int bases = sh_num_bases(Degree);
    T padded[3 * kShLanes];
    const T* d = a.dirs + 3 * first;
    if (lanes < kShLanes) {
        for (int l = 0; l < kShLanes; ++l)
            for (int c = 0; c < 3; ++c) padded[3 * l + c] = d[3 * std::min(l, lanes - 1) + c];
        d = padded;
    }
    T x[kShLanes], y[kShLanes], z[kShLanes];
    for (int l = 0; l < kShLanes; ++l) {
        const UnitDir<T> u = normalise(d + 3 * l);
        x[l] = u.x;
        y[l] = u.y;
        z[l] = u.z;
    }
    T basis[bases][kShLanes];
    for (int l = 0; l < kShLanes; ++l) {
        T b[kMaxShBases];
        sh_basis(Degree, x[l], y[l], z[l], b);
        for (int k = 0; k < bases; ++k) basis[k][l] = b[k];
    }
    const T *dc[kShLanes], *rest[kShLanes];
    for (int l = 0; l < kShLanes; ++l) {
        const int64_t r = a.row(first + std::min(l, lanes - 1));
        dc[l] = a.coeffs.dc_row(r);
        rest[l] = a.coeffs.rest_row(r);
    }
    T sum[3][kShLanes];
    for (int ch = 0; ch < 3; ++ch) {
        for (int l = 0; l < kShLanes; ++l) sum[ch][l] = T(0) + basis[0][l] * dc[l][ch];
        for (int k = 1; k < bases; ++k)
            for (int l = 0; l < kShLanes; ++l) sum[ch][l] += basis[k][l] * rest[l][3 * (k - 1) + ch];
    }
    for (int l = 0; l < lanes; ++l) {
        const int64_t i = first + l;
        const bool kept = !a.masks || a.masks[i];
        for (int ch = 0; ch < 3; ++ch) out[3 * i + ch] = kept ? sum[ch][l] : T(0);
    }
}

template <typename T, int Degree>
__attribute__((always_inline)) inline void sh_forward_range(const ShArgs<T>& a, int64_t begin, int64_t end,
                                                            T* out) {
    for (int64_t first = begin; first < end; first += kShLanes)
        sh_forward_block<T, Degree>(a, first, int(std::min<int64_t>(kShLanes, end - first)), out);
}

// Built for the instruction-set levels of the rasterizer kernels and run at the one they use (simd_level()).
template <typename T>
using ShForwardRange = void (*)(const ShArgs<T>&, int64_t, int64_t, T*);

// The forward of `degree` (0..kMaxShDegree) at the level in use.
template <typename T>
ShForwardRange<T> sh_forward_range_of(int degree) {
    const auto at_level = [](auto constant) {
        constexpr int d = decltype(constant)::value < kMaxShDegree ? decltype(constant)::value : kMaxShDegree;
        static const ShForwardRange<T> range =
            PerLevel<ShForwardRange<T>, sh_forward_range<T, d>>::at_level();
        return range;
    };
    switch (degree) {
        case 0: return at_level(std::integral_constant<int, 0>{});
        case 1: return at_level(std::integral_constant<int, 1>{});
        case 2: return at_level(std::integral_constant<int, 2>{});
        case 3: return at_level(std::integral_constant<int, 3>{});
        default: return at_level(std::integral_constant<int, 4>{});
    }
}

}  // namespace

template <typename T>
void spherical_harmonics_forward(const ShArgs<T>& a, T* out) {
    const ShForwardRange<T> range = sh_forward_range_of<T>(a.degree);
    parallel_for(a.count, kShGrain, a.n_threads,
                 [&](int64_t begin, int64_t end) { range(a, begin, end, out); });
}

template <typename T>
void spherical_harmonics_backward(const ShArgs<T>& a, const T* v_colors, T* v_dirs,
                                  const ShCoeffs<T>& v_coeffs) {
    const int64_t M = a.count, K = a.bases;
    const int bases = sh_num_bases(a.degree);
    parallel_for(M, kShGrain, a.n_threads, [&](int64_t begin, int64_t end) {
        T basis[kMaxShBases], w[kMaxShBases];
        for (int64_t i = begin; i < end; ++i) {
            // Every row of a direction is written exactly once (the outputs are not pre-zeroed, except the
            // rows no direction picks): one pass over the gradient instead of a memset and the writes.
            const int64_t r = a.row(i);
            T* v_dc = v_coeffs.dc_row(r);
            T* v_rest = v_coeffs.rest_row(r);
            if (a.masks && !a.masks[i]) {
                std::fill(v_dc, v_dc + 3, T(0));
                std::fill(v_rest, v_rest + (K - 1) * 3, T(0));
                v_dirs[3 * i] = v_dirs[3 * i + 1] = v_dirs[3 * i + 2] = T(0);
                continue;
            }
            const UnitDir<T> u = normalise(a.dirs + 3 * i);
            sh_basis(a.degree, u.x, u.y, u.z, basis);
            const T* vc = v_colors + 3 * i;
            for (int k = 0; k < bases; ++k) {
                const T* c = a.coeffs.basis(r, k);
                T* v_c = v_coeffs.basis(r, k);
                w[k] = c[0] * vc[0] + c[1] * vc[1] + c[2] * vc[2];
                for (int ch = 0; ch < 3; ++ch) v_c[ch] = basis[k] * vc[ch];
            }
            std::fill(v_rest + 3 * (bases - 1), v_rest + 3 * (K - 1), T(0));  // bases above the degree
            // through the normalisation: (I - u u^T) g / |d|
            const Vec3<T> g = sh_basis_vjp(a.degree, u.x, u.y, u.z, w);
            const T dot = g.x * u.x + g.y * u.y + g.z * u.z;
            v_dirs[3 * i] = (g.x - dot * u.x) * u.inv_norm;
            v_dirs[3 * i + 1] = (g.y - dot * u.y) * u.inv_norm;
            v_dirs[3 * i + 2] = (g.z - dot * u.z) * u.inv_norm;
        }
    });
}

template void spherical_harmonics_forward<float>(const ShArgs<float>&, float*);
template void spherical_harmonics_forward<double>(const ShArgs<double>&, double*);
template void spherical_harmonics_backward<float>(const ShArgs<float>&, const float*, float*,
                                                  const ShCoeffs<float>&);
template void spherical_harmonics_backward<double>(const ShArgs<double>&, const double*, double*,
                                                   const ShCoeffs<double>&);

}  // namespace gsplat_py::cpu
