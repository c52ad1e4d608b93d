// The Adam update, shared by the CPU and CUDA backends' adam_step kernels.
//
// It is the update of PyTorch's fused Adam (torch.optim.Adam(fused=True), its vectorised CPU path),
// operation for operation: the scalar coefficients are worked out in double from the step count and
// rounded to the parameters' type, then per element
//   m = fma(c, g - m, base)                      m.lerp_(g, 1 - beta1): c = 1 - beta1, base = m
//                                                (c = -beta1, base = g when 1 - beta1 >= 0.5)
//   v = fma((1 - beta2) g, g, beta2 v)
//   p = p + (-lr / (1 - beta1^step)) m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// Every operation is correctly rounded (fma included), so the result is the same bits on every CPU and
// GPU, and the same as torch's fused Adam on CPUs with FMA (AVX2, AVX-512), except that torch rounds the
// last (numel mod 16) elements of a tensor with a scalar loop whose contraction GCC chooses.
#pragma once

#include <cmath>

#include "gsplat_math.h"

namespace gsplat_py {

template <typename T>
struct AdamCoefficients {
    T lerp_weight;  // m = fma(lerp_weight, g - m, from_gradient ? g : m)
    bool from_gradient;
    T beta2, gradient_sq_weight;  // v = fma(gradient_sq_weight g, g, beta2 v)
    T bias_correction2_sqrt, eps, neg_step_size;
};

// The coefficients of step number `step` (counted from 1) of Adam with these hyperparameters.
template <typename T>
AdamCoefficients<T> adam_coefficients(double lr, double beta1, double beta2, double eps, double step) {
    const double bias_correction1 = 1 - std::pow(beta1, step);
    const double bias_correction2 = 1 - std::pow(beta2, step);
    const T weight = T(1 - beta1);
    const bool from_gradient = !(std::abs(weight) < T(0.5));
    AdamCoefficients<T> c;
    c.lerp_weight = from_gradient ? weight - T(1) : weight;
    c.from_gradient = from_gradient;
    c.beta2 = T(beta2);
    c.gradient_sq_weight = T(1 - beta2);
    c.bias_correction2_sqrt = T(std::sqrt(bias_correction2));
    c.eps = T(eps);
    c.neg_step_size = T(-(lr / bias_correction1));
    return c;
}

template <typename T>
GS_HD void adam_update(const AdamCoefficients<T>& c, T& param, T grad, T& exp_avg, T& exp_avg_sq) {
    const T m = std::fma(c.lerp_weight, grad - exp_avg, c.from_gradient ? grad : exp_avg);
    const T v = std::fma(c.gradient_sq_weight * grad, grad, exp_avg_sq * c.beta2);
    exp_avg = m;
    exp_avg_sq = v;
    param = param + (c.neg_step_size * m) / (std::sqrt(v) / c.bias_correction2_sqrt + c.eps);
}

}  // namespace gsplat_py
