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
// The rows of each pass are compiled for every SIMD level (cpu_common.h) without fma contraction, so
// every level gives the bits the baseline build gives; AVX-512 blurs 16 floats per instruction.
// The plain-PyTorch `gsplat_py.training.metrics.ssim(padding="same")` is the oracle for both.
#pragma GCC optimize("fp-contract=off")

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"
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
__attribute__((always_inline)) inline void blur_row(const T* padded, int64_t W, const T* w, T* out) {
    for (int64_t c = 0; c < W; ++c) out[c] = T(0);
    for (int k = 0; k < kTaps; ++k) {
        const T wk = w[k];
        const T* in = padded + k;
        for (int64_t c = 0; c < W; ++c) out[c] += wk * in[c];
    }
}

// Row r of the vertical blur of an H x W plane (zero padded).
template <typename T>
__attribute__((always_inline)) inline void blur_column_row(const T* plane, int64_t H, int64_t W, int64_t r,
                                                           const T* w, T* out) {
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
__attribute__((always_inline)) inline SsimTerms ssim_terms(T mx, T my, T exx, T eyy, T exy) {
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

// What one call's rows read and write: the images, the blurred maps, and the horizontal passes.
template <typename T>
struct Job {
    const SsimArgs<T>* a;
    Layout L;
    const T* w;         // the window
    T* horizontal;      // [planes, maps, H, W]: the horizontal passes (kSsimMaps maps, or kGradientMaps)
    T* maps_out;        // [planes, kSsimMaps, H, W]: the blurred maps (forward)
    const T* maps;      // the same, read by the backward
    double* s;          // [planes, H, W]: S per pixel (forward)
    const T* v_result;  // [B] (backward)
    T* v_img1;          // [B, H, W, C] (backward)
};

enum class Pass { kForwardHorizontal, kForwardVertical, kBackwardHorizontal, kBackwardVertical };

// Row `row` (plane row / H, image row row % H) of one pass; `scratch` is the calling thread's
// (kSsimMaps (W + 2 kRadius) values, zero at both ends of each padded row).
template <typename T>
__attribute__((always_inline)) inline void run_row(const Job<T>& job, Pass pass, int64_t row, T* scratch) {
    const SsimArgs<T>& a = *job.a;
    const Layout& L = job.L;
    const int64_t H = L.H, W = L.W, n = L.n, padded_size = W + 2 * kRadius;
    const int64_t p = row / H, r = row % H;
    switch (pass) {
        case Pass::kForwardHorizontal: {
            for (int64_t c = 0; c < W; ++c) {
                const T x = a.img1[L.pixel(p, r * W + c)], y = a.img2[L.pixel(p, r * W + c)];
                const T sources[kSsimMaps] = {x, y, x * x, y * y, x * y};
                for (int m = 0; m < kSsimMaps; ++m) scratch[m * padded_size + kRadius + c] = sources[m];
            }
            for (int m = 0; m < kSsimMaps; ++m)
                blur_row(scratch + m * padded_size, W, job.w,
                         job.horizontal + (p * kSsimMaps + m) * n + r * W);
            return;
        }
        case Pass::kForwardVertical: {
            T* plane_maps = job.maps_out + p * kSsimMaps * n;
            for (int m = 0; m < kSsimMaps; ++m)
                blur_column_row(job.horizontal + (p * kSsimMaps + m) * n, H, W, r, job.w,
                                plane_maps + m * n + r * W);
            for (int64_t i = r * W; i < (r + 1) * W; ++i)
                job.s[p * n + i] = ssim_terms<T>(plane_maps[i], plane_maps[n + i], plane_maps[2 * n + i],
                                                 plane_maps[3 * n + i], plane_maps[4 * n + i])
                                       .s;
            return;
        }
        case Pass::kBackwardHorizontal: {
            const T* plane_maps = job.maps + p * kSsimMaps * n;
            const double g = double(job.v_result[p / L.C]) / double(n * L.C);
            for (int64_t c = 0; c < W; ++c) {
                const int64_t i = r * W + c;
                const SsimTerms t = ssim_terms<T>(plane_maps[i], plane_maps[n + i], plane_maps[2 * n + i],
                                                  plane_maps[3 * n + i], plane_maps[4 * n + i]);
                const T gradients[kGradientMaps] = {T(g * t.ds_dmx), T(g * t.ds_dexx), T(g * t.ds_dexy)};
                for (int m = 0; m < kGradientMaps; ++m) scratch[m * padded_size + kRadius + c] = gradients[m];
            }
            for (int m = 0; m < kGradientMaps; ++m)
                blur_row(scratch + m * padded_size, W, job.w,
                         job.horizontal + (p * kGradientMaps + m) * n + r * W);
            return;
        }
        case Pass::kBackwardVertical: {
            T* blurred = scratch;  // kGradientMaps rows of W
            for (int m = 0; m < kGradientMaps; ++m)
                blur_column_row(job.horizontal + (p * kGradientMaps + m) * n, H, W, r, job.w,
                                blurred + m * W);
            for (int64_t c = 0; c < W; ++c) {
                const int64_t pixel = L.pixel(p, r * W + c);
                job.v_img1[pixel] =
                    blurred[c] + T(2) * a.img1[pixel] * blurred[W + c] + a.img2[pixel] * blurred[2 * W + c];
            }
            return;
        }
    }
}

// Rows [begin, end) of one pass, for each SIMD level.
template <typename T>
using RunRows = void (*)(const Job<T>&, Pass, int64_t, int64_t, T*);

template <typename T>
__attribute__((always_inline)) inline void run_rows(const Job<T>& job, Pass pass, int64_t begin, int64_t end,
                                                    T* scratch) {
    for (int64_t row = begin; row < end; ++row) run_row(job, pass, row, scratch);
}

// The two passes of a call in one parallel region: every row of `first`, a barrier, every row of
// `second`, each thread with the same contiguous share of rows in both.
template <typename T>
void run_passes(const Job<T>& job, Pass first, Pass second) {
    static const RunRows<T> run_rows_at_level = PerLevel<RunRows<T>, run_rows<T>>::at_level();
    const int64_t rows = job.L.planes * job.L.H;
#pragma omp parallel num_threads(job.L.threads(rows, job.a->n_threads))
    {
        std::vector<T> scratch(kSsimMaps * (job.L.W + 2 * kRadius), T(0));
        const int threads = omp_get_num_threads(), thread = omp_get_thread_num();
        const int64_t per_thread = (rows + threads - 1) / threads;
        const int64_t begin = std::min(rows, thread * per_thread), end = std::min(rows, begin + per_thread);
        run_rows_at_level(job, first, begin, end, scratch.data());
#pragma omp barrier
        run_rows_at_level(job, second, begin, end, scratch.data());
    }
}

}  // namespace

template <typename T>
void ssim_forward(const SsimArgs<T>& a, T* result, T* maps) {
    const Layout L(a);
    const std::vector<T> window = gaussian_window<T>();
    std::vector<T> horizontal(L.planes * kSsimMaps * L.n);
    std::vector<double> s(L.planes * L.n);
    run_passes(Job<T>{&a, L, window.data(), horizontal.data(), maps, nullptr, s.data(), nullptr, nullptr},
               Pass::kForwardHorizontal, Pass::kForwardVertical);
    // Sums in a fixed order: the same bits for any thread count.
    for (int64_t b = 0; b < L.B; ++b) {
        double total = 0.0;
        for (int64_t c = 0; c < L.C; ++c) {
            double sum = 0.0;
            for (int64_t i = 0; i < L.n; ++i) sum += s[(b * L.C + c) * L.n + i];
            total += sum;
        }
        result[b] = T(total / double(L.n * L.C));
    }
}

template <typename T>
void ssim_backward(const SsimArgs<T>& a, const T* maps, const T* v_result, T* v_img1) {
    const Layout L(a);
    const std::vector<T> window = gaussian_window<T>();
    std::vector<T> horizontal(L.planes * kGradientMaps * L.n);
    run_passes(Job<T>{&a, L, window.data(), horizontal.data(), nullptr, maps, nullptr, v_result, v_img1},
               Pass::kBackwardHorizontal, Pass::kBackwardVertical);
}

template void ssim_forward<float>(const SsimArgs<float>&, float*, float*);
template void ssim_forward<double>(const SsimArgs<double>&, double*, double*);
template void ssim_backward<float>(const SsimArgs<float>&, const float*, const float*, float*);
template void ssim_backward<double>(const SsimArgs<double>&, const double*, const double*, double*);

}  // namespace gsplat_py::cpu
