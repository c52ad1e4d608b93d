// SSIM with an 11x11 Gaussian window (sigma 1.5) and zero "same" padding (the Inria 3DGS training loss).
//
// Per channel, with G the separable Gaussian blur (zero padded, output the size of the input):
//   mx = G x, my = G y, sxx = G(x^2) - mx^2, syy = G(y^2) - my^2, sxy = G(xy) - mx my
//   S = (2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)(sxx + syy + C2)),  result = mean(S) per image.
// Backward: with g the gradient of each S value (v / (H W C)), the gradients of S with respect to the
// blurred maps are blurred back (G is symmetric with zero padding, so it is its own adjoint):
//   dx = G(g dS/dmx) + 2 x G(g dS/dE[x^2]) + y G(g dS/dE[xy]).
// The forward keeps its five blurred maps per channel for the backward, which then only blurs the three
// gradient maps. Each call is one OpenMP region (a training step used to open 78, one per blur pass and
// plane): the horizontal passes of every row of every map, then, after one barrier, the vertical passes,
// each row combined at once (S in the forward, the image gradient in the backward). The arithmetic is
// the same, operation for operation, as when every pass was its own loop, so are the results.
// The plain-PyTorch `gsplat_py.training.metrics.ssim(padding="same")` is the oracle for both.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

namespace gsplat_py::cpu {
namespace {

constexpr int kRadius = 5;  // window 11
constexpr int kTaps = 2 * kRadius + 1;
constexpr double kSigma = 1.5;
constexpr double kC1 = 0.01 * 0.01;
constexpr double kC2 = 0.03 * 0.03;
constexpr int kGradientMaps = 3;        // g dS/dmx, g dS/dE[x^2], g dS/dE[xy]
constexpr int64_t kRowsPerThread = 16;  // at least, or the region costs more than it saves

template <typename T>
std::vector<T> gaussian_window() {
    std::vector<T> w(kTaps);
    double sum = 0.0;
    for (int k = -kRadius; k <= kRadius; ++k) sum += std::exp(-double(k * k) / (2.0 * kSigma * kSigma));
    for (int k = -kRadius; k <= kRadius; ++k)
        w[k + kRadius] = T(std::exp(-double(k * k) / (2.0 * kSigma * kSigma)) / sum);
    return w;
}

// out[c] = sum_k w[k] in[c + k - kRadius] over a row of W values, zero outside the row; `padded` is the
// row's zero-padded copy (W + 2 kRadius, zero ends), so the 11-tap loop has fixed bounds and vectorises.
template <typename T>
void blur_row(const T* padded, int64_t W, const T* w, T* out) {
    for (int64_t c = 0; c < W; ++c) out[c] = T(0);
    for (int k = 0; k < kTaps; ++k) {
        const T wk = w[k];
        const T* in = padded + k;
        for (int64_t c = 0; c < W; ++c) out[c] += wk * in[c];
    }
}

// Row r of the vertical blur of an H x W plane (zero padded).
template <typename T>
void blur_column_row(const T* plane, int64_t H, int64_t W, int64_t r, const T* w, T* out) {
    const int64_t k0 = std::max<int64_t>(-kRadius, -r), k1 = std::min<int64_t>(kRadius, H - 1 - r);
    for (int64_t c = 0; c < W; ++c) out[c] = T(0);
    for (int64_t k = k0; k <= k1; ++k) {
        const T wk = w[k + kRadius];
        const T* in = plane + (r + k) * W;
        for (int64_t c = 0; c < W; ++c) out[c] += wk * in[c];
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

// The planes of [B, H, W, C] images: plane p = b * C + c, pixel i = row * W + column.
struct Layout {
    int64_t B, H, W, C, n, planes;
    template <typename T>
    explicit Layout(const SsimArgs<T>& a)
        : B(a.batch), H(a.height), W(a.width), C(a.channels), n(a.height * a.width), planes(B * C) {}
    int64_t pixel(int64_t p, int64_t i) const { return ((p / C) * n + i) * C + p % C; }
    // At most n_threads threads, each with kRowsPerThread rows of `rows` at least.
    int threads(int64_t rows, int n_threads) const {
        return int(
            std::clamp<int64_t>((rows + kRowsPerThread - 1) / kRowsPerThread, 1, std::max(n_threads, 1)));
    }
};

}  // namespace

template <typename T>
void ssim_forward(const SsimArgs<T>& a, T* result, T* maps) {
    const Layout L(a);
    const int64_t H = L.H, W = L.W, n = L.n;
    const std::vector<T> window = gaussian_window<T>();
    const T* w = window.data();
    std::vector<T> horizontal(L.planes * kSsimMaps * n);  // the horizontal passes, maps' layout
    std::vector<double> s(L.planes * n);                  // S per pixel
#pragma omp parallel num_threads(L.threads(L.planes* H, a.n_threads))
    {
        std::vector<T> padded(kSsimMaps * (W + 2 * kRadius), T(0));
#pragma omp for schedule(static)
        for (int64_t row = 0; row < L.planes * H; ++row) {
            const int64_t p = row / H, r = row % H;
            for (int64_t c = 0; c < W; ++c) {
                const T x = a.img1[L.pixel(p, r * W + c)], y = a.img2[L.pixel(p, r * W + c)];
                const T sources[kSsimMaps] = {x, y, x * x, y * y, x * y};
                for (int m = 0; m < kSsimMaps; ++m) padded[m * (W + 2 * kRadius) + kRadius + c] = sources[m];
            }
            for (int m = 0; m < kSsimMaps; ++m)
                blur_row(padded.data() + m * (W + 2 * kRadius), W, w,
                         horizontal.data() + (p * kSsimMaps + m) * n + r * W);
        }
#pragma omp for schedule(static)
        for (int64_t row = 0; row < L.planes * H; ++row) {
            const int64_t p = row / H, r = row % H;
            T* plane_maps = maps + p * kSsimMaps * n;
            for (int m = 0; m < kSsimMaps; ++m)
                blur_column_row(horizontal.data() + (p * kSsimMaps + m) * n, H, W, r, w,
                                plane_maps + m * n + r * W);
            for (int64_t i = r * W; i < (r + 1) * W; ++i)
                s[p * n + i] = ssim_terms<T>(plane_maps[i], plane_maps[n + i], plane_maps[2 * n + i],
                                             plane_maps[3 * n + i], plane_maps[4 * n + i])
                                   .s;
        }
    }
    // Sums in a fixed order: the same bits for any thread count.
    for (int64_t b = 0; b < L.B; ++b) {
        double total = 0.0;
        for (int64_t c = 0; c < L.C; ++c) {
            double sum = 0.0;
            for (int64_t i = 0; i < n; ++i) sum += s[(b * L.C + c) * n + i];
            total += sum;
        }
        result[b] = T(total / double(n * L.C));
    }
}

template <typename T>
void ssim_backward(const SsimArgs<T>& a, const T* maps, const T* v_result, T* v_img1) {
    const Layout L(a);
    const int64_t H = L.H, W = L.W, n = L.n;
    const std::vector<T> window = gaussian_window<T>();
    const T* w = window.data();
    std::vector<T> horizontal(L.planes * kGradientMaps * n);
#pragma omp parallel num_threads(L.threads(L.planes* H, a.n_threads))
    {
        std::vector<T> padded(kGradientMaps * (W + 2 * kRadius), T(0));
        std::vector<T> blurred(kGradientMaps * W);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < L.planes * H; ++row) {
            const int64_t p = row / H, r = row % H;
            const T* plane_maps = maps + p * kSsimMaps * n;
            const double g = double(v_result[p / L.C]) / double(n * L.C);
            for (int64_t c = 0; c < W; ++c) {
                const int64_t i = r * W + c;
                const SsimTerms t = ssim_terms<T>(plane_maps[i], plane_maps[n + i], plane_maps[2 * n + i],
                                                  plane_maps[3 * n + i], plane_maps[4 * n + i]);
                const T gradients[kGradientMaps] = {T(g * t.ds_dmx), T(g * t.ds_dexx), T(g * t.ds_dexy)};
                for (int m = 0; m < kGradientMaps; ++m)
                    padded[m * (W + 2 * kRadius) + kRadius + c] = gradients[m];
            }
            for (int m = 0; m < kGradientMaps; ++m)
                blur_row(padded.data() + m * (W + 2 * kRadius), W, w,
                         horizontal.data() + (p * kGradientMaps + m) * n + r * W);
        }
#pragma omp for schedule(static)
        for (int64_t row = 0; row < L.planes * H; ++row) {
            const int64_t p = row / H, r = row % H;
            for (int m = 0; m < kGradientMaps; ++m)
                blur_column_row(horizontal.data() + (p * kGradientMaps + m) * n, H, W, r, w,
                                blurred.data() + m * W);
            for (int64_t c = 0; c < W; ++c) {
                const int64_t pixel = L.pixel(p, r * W + c);
                v_img1[pixel] =
                    blurred[c] + T(2) * a.img1[pixel] * blurred[W + c] + a.img2[pixel] * blurred[2 * W + c];
            }
        }
    }
}

template void ssim_forward<float>(const SsimArgs<float>&, float*, float*);
template void ssim_forward<double>(const SsimArgs<double>&, double*, double*);
template void ssim_backward<float>(const SsimArgs<float>&, const float*, const float*, float*);
template void ssim_backward<double>(const SsimArgs<double>&, const double*, const double*, double*);

}  // namespace gsplat_py::cpu
