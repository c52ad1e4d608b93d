// Spherical harmonics colours (forward and backward) for a flat batch of directions.
#include <algorithm>
#include "cpu_common.h"
#include "gsplat_math.h"
#include "ops.h"

namespace gsplat_py::cpu {

namespace {

constexpr int kMaxBases = 16;

template <typename T> struct UnitDir {
    T x, y, z, inv_norm;
};

template <typename T> UnitDir<T> normalise(const T* d) {
    T inv = T(1) / std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    return {d[0] * inv, d[1] * inv, d[2] * inv, inv};
}

template <typename T>
void sh_forward_impl(int degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                     const c10::optional<at::Tensor>& masks, at::Tensor& colors) {
    const int64_t M = dirs.size(0), K = coeffs.size(1);
    const int bases = sh_num_bases(degree);
    const T* dir_p = dirs.data_ptr<T>();
    const T* coeff_p = coeffs.data_ptr<T>();
    const bool* mask_p = masks.has_value() ? masks->data_ptr<bool>() : nullptr;
    T* out = colors.data_ptr<T>();
    at::parallel_for(0, M, 2048, [&](int64_t begin, int64_t end) {
        T basis[kMaxBases];
        for (int64_t i = begin; i < end; ++i) {
            if (mask_p && !mask_p[i]) {
                out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = T(0);
                continue;
            }
            const UnitDir<T> u = normalise(dir_p + 3 * i);
            sh_basis(degree, u.x, u.y, u.z, basis);
            const T* c = coeff_p + i * K * 3;
            for (int ch = 0; ch < 3; ++ch) {
                T sum = T(0);
                for (int k = 0; k < bases; ++k) sum += basis[k] * c[3 * k + ch];
                out[3 * i + ch] = sum;
            }
        }
    });
}

template <typename T>
void sh_backward_impl(int degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                      const c10::optional<at::Tensor>& masks, const at::Tensor& v_colors,
                      at::Tensor& v_dirs, at::Tensor& v_coeffs) {
    const int64_t M = dirs.size(0), K = coeffs.size(1);
    const int bases = sh_num_bases(degree);
    const T* dir_p = dirs.data_ptr<T>();
    const T* coeff_p = coeffs.data_ptr<T>();
    const bool* mask_p = masks.has_value() ? masks->data_ptr<bool>() : nullptr;
    const T* vc_p = v_colors.data_ptr<T>();
    T* vd_p = v_dirs.data_ptr<T>();
    T* vcoef_p = v_coeffs.data_ptr<T>();
    at::parallel_for(0, M, 2048, [&](int64_t begin, int64_t end) {
        T basis[kMaxBases], w[kMaxBases];
        for (int64_t i = begin; i < end; ++i) {
            // Every output element is written exactly once (the outputs are not pre-zeroed): one pass
            // over the [M, K, 3] gradient instead of a memset followed by the writes.
            T* vcoef = vcoef_p + i * K * 3;
            if (mask_p && !mask_p[i]) {
                std::fill(vcoef, vcoef + K * 3, T(0));
                vd_p[3 * i] = vd_p[3 * i + 1] = vd_p[3 * i + 2] = T(0);
                continue;
            }
            const UnitDir<T> u = normalise(dir_p + 3 * i);
            sh_basis(degree, u.x, u.y, u.z, basis);
            const T* vc = vc_p + 3 * i;
            const T* c = coeff_p + i * K * 3;
            for (int k = 0; k < bases; ++k) {
                w[k] = c[3 * k] * vc[0] + c[3 * k + 1] * vc[1] + c[3 * k + 2] * vc[2];
                for (int ch = 0; ch < 3; ++ch) vcoef[3 * k + ch] = basis[k] * vc[ch];
            }
            std::fill(vcoef + 3 * bases, vcoef + K * 3, T(0));  // bases above the degree
            // through the normalisation: (I - u u^T) g / |d|
            const Vec3<T> g = sh_basis_vjp(degree, u.x, u.y, u.z, w);
            const T dot = g.x * u.x + g.y * u.y + g.z * u.z;
            vd_p[3 * i] = (g.x - dot * u.x) * u.inv_norm;
            vd_p[3 * i + 1] = (g.y - dot * u.y) * u.inv_norm;
            vd_p[3 * i + 2] = (g.z - dot * u.z) * u.inv_norm;
        }
    });
}

}  // namespace

at::Tensor spherical_harmonics_forward(int64_t degree, const at::Tensor& dirs, const at::Tensor& coeffs,
                                       const c10::optional<at::Tensor>& masks) {
    check_sh_inputs(degree, dirs, coeffs, masks);
    at::Tensor colors = at::empty({dirs.size(0), 3}, coeffs.options());
    AT_DISPATCH_FLOATING_TYPES(coeffs.scalar_type(), "spherical_harmonics_forward", [&] {
        sh_forward_impl<scalar_t>(int(degree), dirs, coeffs, masks, colors);
    });
    return colors;
}

std::vector<at::Tensor> spherical_harmonics_backward(int64_t degree, const at::Tensor& dirs,
                                                     const at::Tensor& coeffs,
                                                     const c10::optional<at::Tensor>& masks,
                                                     const at::Tensor& v_colors) {
    check_sh_inputs(degree, dirs, coeffs, masks);
    at::Tensor v_dirs = at::empty(dirs.sizes(), dirs.options());
    at::Tensor v_coeffs = at::empty(coeffs.sizes(), coeffs.options());
    const at::Tensor v_colors_c = v_colors.contiguous();
    AT_DISPATCH_FLOATING_TYPES(coeffs.scalar_type(), "spherical_harmonics_backward", [&] {
        sh_backward_impl<scalar_t>(int(degree), dirs, coeffs, masks, v_colors_c, v_dirs, v_coeffs);
    });
    return {v_dirs, v_coeffs};
}

}  // namespace gsplat_py::cpu
