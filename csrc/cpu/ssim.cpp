// SSIM with an 11x11 Gaussian window (sigma 1.5) and zero "same" padding (the Inria 3DGS training loss),
// forward and backward in one pass each over planar copies of the images.
//
// Per channel, with G the separable Gaussian blur (zero padded, output the size of the input):
//   mx = G x, my = G y, sxx = G(x^2) - mx^2, syy = G(y^2) - my^2, sxy = G(xy) - mx my
//   S = (2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)(sxx + syy + C2)),  result = mean(S) per image.
// Backward: with g the gradient of each S value (v / (H W C)), the gradients of S with respect to the
// blurred maps are blurred back (G is symmetric with zero padding, so it is its own adjoint):
//   dx = G(g dS/dmx) + 2 x G(g dS/dE[x^2]) + y G(g dS/dE[xy]).
// The plain-PyTorch `gsplat_py.training.metrics.ssim(padding="same")` is the oracle for both.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "kernels.h"

namespace gsplat_py::cpu {
namespace {

constexpr int kRadius = 5;  // window 11
constexpr double kSigma = 1.5;
constexpr double kC1 = 0.01 * 0.01;
constexpr double kC2 = 0.03 * 0.03;
constexpr int64_t kBlurRowGrain = 16;  // rows per thread at least

template <typename T>
std::vector<T> gaussian_window() {
    std::vector<T> w(2 * kRadius + 1);
    double sum = 0.0;
    for (int k = -kRadius; k <= kRadius; ++k) sum += std::exp(-double(k * k) / (2.0 * kSigma * kSigma));
    for (int k = -kRadius; k <= kRadius; ++k)
        w[k + kRadius] = T(std::exp(-double(k * k) / (2.0 * kSigma * kSigma)) / sum);
    return w;
}

// Blur `count` planes of H x W in place (zero padding), using `scratch` (H x W). Rows are split over
// the threads; the horizontal pass goes through a zero-padded copy of the row so that its 11-tap loop
// has fixed bounds and vectorises.
template <typename T>
void blur_planes(T* planes, int count, int64_t H, int64_t W, const T* w, T* scratch, int n_threads) {
    for (int p = 0; p < count; ++p) {
        T* plane = planes + p * H * W;
        parallel_for(H, kBlurRowGrain, n_threads, [&](int64_t begin, int64_t end) {
            std::vector<T> padded(W + 2 * kRadius, T(0));
            for (int64_t r = begin; r < end; ++r) {
                std::copy(plane + r * W, plane + (r + 1) * W, padded.begin() + kRadius);
                T* out = scratch + r * W;
                for (int64_t c = 0; c < W; ++c) out[c] = T(0);
                for (int k = 0; k <= 2 * kRadius; ++k) {
                    const T wk = w[k];
                    const T* in = padded.data() + k;
                    for (int64_t c = 0; c < W; ++c) out[c] += wk * in[c];
                }
            }
        });
        parallel_for(H, kBlurRowGrain, n_threads, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
                T* out = plane + r * W;
                const int64_t k0 = std::max<int64_t>(-kRadius, -r),
                              k1 = std::min<int64_t>(kRadius, H - 1 - r);
                for (int64_t c = 0; c < W; ++c) out[c] = T(0);
                for (int64_t k = k0; k <= k1; ++k) {
                    const T wk = w[k + kRadius];
                    const T* in = scratch + (r + k) * W;
                    for (int64_t c = 0; c < W; ++c) out[c] += wk * in[c];
                }
            }
        });
    }
}

struct SsimTerms {
    double s, ds_dmx, ds_dexx, ds_dexy;
};

// S and its partial derivatives with respect to mx, E[x^2] and E[xy] (my, E[y^2] are constants).
template <typename T>
inline SsimTerms ssim_terms(T mx, T my, T exx, T eyy, T exy) {
    const double mxd = mx, myd = my;
    const double sxx = exx - mxd * mxd, syy = eyy - myd * myd, sxy = exy - mxd * myd;
    const double a1 = 2.0 * mxd * myd + kC1, a2 = 2.0 * sxy + kC2;
    const double b1 = mxd * mxd + myd * myd + kC1, b2 = sxx + syy + kC2;
    const double inv_b = 1.0 / (b1 * b2);
    const double s = a1 * a2 * inv_b;
    const double ds_dsxy = 2.0 * a1 * inv_b;
    const double ds_dsxx = -s / b2;
    const double ds_dmx = 2.0 * myd * a2 * inv_b - s * 2.0 * mxd / b1 - ds_dsxy * myd - 2.0 * mxd * ds_dsxx;
    return {s, ds_dmx, ds_dsxx, ds_dsxy};
}

// One (image, channel) plane of both images, x and y (n = H x W each, planar), and its five blurred
// maps: G x, G y, G x^2, G y^2, G xy.
template <typename T>
struct PlaneStats {
    int64_t H, W, C, n;
    int n_threads;
    std::vector<T> window, x, y, maps, scratch;

    explicit PlaneStats(const SsimArgs<T>& a)
        : H(a.height),
          W(a.width),
          C(a.channels),
          n(a.height * a.width),
          n_threads(a.n_threads),
          window(gaussian_window<T>()),
          x(n),
          y(n),
          maps(5 * n),
          scratch(n) {}

    // Load channel c of image b from channels-last [B, H, W, C] data and blur.
    void load(const T* img1, const T* img2, int64_t b, int64_t c) {
        for (int64_t i = 0; i < n; ++i) {
            x[i] = img1[(b * n + i) * C + c];
            y[i] = img2[(b * n + i) * C + c];
            maps[i] = x[i];
            maps[n + i] = y[i];
            maps[2 * n + i] = x[i] * x[i];
            maps[3 * n + i] = y[i] * y[i];
            maps[4 * n + i] = x[i] * y[i];
        }
        blur_planes(maps.data(), 5, H, W, window.data(), scratch.data(), n_threads);
    }

    SsimTerms terms(int64_t i) const {
        return ssim_terms<T>(maps[i], maps[n + i], maps[2 * n + i], maps[3 * n + i], maps[4 * n + i]);
    }
};

}  // namespace

template <typename T>
void ssim_forward(const SsimArgs<T>& a, T* result) {
    const int64_t B = a.batch, C = a.channels, n = a.height * a.width;
    std::vector<double> sums(B * C, 0.0);
    PlaneStats<T> plane(a);
    for (int64_t bc = 0; bc < B * C; ++bc) {
        plane.load(a.img1, a.img2, bc / C, bc % C);
        double sum = 0.0;
        for (int64_t i = 0; i < n; ++i) sum += plane.terms(i).s;
        sums[bc] = sum;
    }
    for (int64_t b = 0; b < B; ++b) {  // fixed order: deterministic for any thread count
        double total = 0.0;
        for (int64_t c = 0; c < C; ++c) total += sums[b * C + c];
        result[b] = T(total / double(n * C));
    }
}

template <typename T>
void ssim_backward(const SsimArgs<T>& a, const T* v_result, T* v_img1) {
    const int64_t B = a.batch, C = a.channels, n = a.height * a.width;
    PlaneStats<T> plane(a);
    std::vector<T> grads(3 * n);
    for (int64_t bc = 0; bc < B * C; ++bc) {
        const int64_t b = bc / C, c = bc % C;
        plane.load(a.img1, a.img2, b, c);
        const double g = double(v_result[b]) / double(n * C);
        for (int64_t i = 0; i < n; ++i) {
            const SsimTerms t = plane.terms(i);
            grads[i] = T(g * t.ds_dmx);
            grads[n + i] = T(g * t.ds_dexx);
            grads[2 * n + i] = T(g * t.ds_dexy);
        }
        blur_planes(grads.data(), 3, plane.H, plane.W, plane.window.data(), plane.scratch.data(),
                    a.n_threads);
        for (int64_t i = 0; i < n; ++i)
            v_img1[(b * n + i) * C + c] =
                grads[i] + T(2) * plane.x[i] * grads[n + i] + plane.y[i] * grads[2 * n + i];
    }
}

template void ssim_forward<float>(const SsimArgs<float>&, float*);
template void ssim_forward<double>(const SsimArgs<double>&, double*);
template void ssim_backward<float>(const SsimArgs<float>&, const float*, float*);
template void ssim_backward<double>(const SsimArgs<double>&, const double*, double*);

}  // namespace gsplat_py::cpu
