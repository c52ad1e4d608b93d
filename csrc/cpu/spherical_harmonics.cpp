// Spherical harmonics colours (forward and backward) for a flat batch of directions, each with its row of
// coefficients.
#include <algorithm>
#include <cmath>

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

}  // namespace

template <typename T>
void spherical_harmonics_forward(const ShArgs<T>& a, T* out) {
    const int64_t M = a.count, K = a.bases;
    const int bases = sh_num_bases(a.degree);
    parallel_for(M, kShGrain, a.n_threads, [&](int64_t begin, int64_t end) {
        T basis[kMaxShBases];
        for (int64_t i = begin; i < end; ++i) {
            if (a.masks && !a.masks[i]) {
                out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = T(0);
                continue;
            }
            const UnitDir<T> u = normalise(a.dirs + 3 * i);
            sh_basis(a.degree, u.x, u.y, u.z, basis);
            // The row's two pointers taken once: choosing between them per basis (ShCoeffs::basis) in this
            // loop made the forward about 15% slower.
            const T* dc = a.coeffs.dc_row(a.row(i));
            const T* rest = a.coeffs.rest_row(a.row(i));
            for (int ch = 0; ch < 3; ++ch) {
                T sum = T(0);
                sum += basis[0] * dc[ch];
                for (int k = 1; k < bases; ++k) sum += basis[k] * rest[3 * (k - 1) + ch];
                out[3 * i + ch] = sum;
            }
        }
    });
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
