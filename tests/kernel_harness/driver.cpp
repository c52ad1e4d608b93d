// Standalone driver of the torch-free CPU kernels: reads a case written by kernel_case.py (raw
// little-endian arrays and a meta.txt), runs one kernel (--kernel) and writes the results:
//   raster (the default): the rasterizer kernels (csrc/cpu/raster_kernels.cpp): the forward kernel, then
//     the backward kernel on the forward's transmittance and last ids, each Gaussian's gradient records
//     summed in intersection order (as csrc/cpu/rasterize.cpp does); or times the kernels (--repeat);
//   adam: one fused Adam step (csrc/cpu/adam.cpp) of every tensor of the case, once on every row and
//     once on the visible rows only, each from the case's state;
//   ssim: the SSIM forward (csrc/cpu/ssim.cpp), then its backward on the forward's maps;
//   projection: the projection forward (csrc/cpu/projection.cpp), then its backward (camera gradients
//     included) for the case's cotangents.
//
// Built together with those kernels, all with -DGS_ISA=<level> and that level's flags, for any target:
// natively for each x86-64 level, or with a cross compiler for aarch64 and run under qemu. adam.cpp,
// ssim.cpp and projection.cpp run the build of the level simd_level() names, which here is the driver's own.
//
//     driver CASE_DIR [--kernel raster|adam|ssim|projection] [--out DIR] [--double] [--threads N]
//            [--repeat R]
//
// Prints one line: the level, and for raster its lanes, the pixel-Gaussian pairs (each intersection
// counted with all of its tile's pixels in the image), and the median forward and backward kernel times
// in ms, wall-clock and CPU time of the process (all threads; less disturbed by other work on a shared
// machine).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels.h"
#include "raster_kernels.h"

#define GS_STRINGIFY2(x) #x
#define GS_STRINGIFY(x) GS_STRINGIFY2(x)

namespace {

using namespace gsplat_py;
using namespace gsplat_py::cpu;

[[noreturn]] void fail(const std::string& message) {
    std::fprintf(stderr, "driver: %s\n", message.c_str());
    std::exit(2);
}

std::map<std::string, int64_t> read_meta(const std::string& dir) {
    std::map<std::string, int64_t> meta;
    FILE* f = std::fopen((dir + "/meta.txt").c_str(), "r");
    if (!f) fail("cannot open " + dir + "/meta.txt");
    char key[128];
    long long value;
    while (std::fscanf(f, "%127s %lld", key, &value) == 2) meta[key] = value;
    std::fclose(f);
    return meta;
}

int64_t meta_value(const std::map<std::string, int64_t>& meta, const std::string& key) {
    const auto it = meta.find(key);
    if (it == meta.end()) fail("meta.txt lacks " + key);
    return it->second;
}

template <typename S> std::vector<S> read_array(const std::string& path, size_t count) {
    std::vector<S> data(count);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) fail("cannot open " + path);
    if (std::fread(data.data(), sizeof(S), count, f) != count) fail("short file " + path);
    std::fclose(f);
    return data;
}

template <typename S> void write_array(const std::string& path, const std::vector<S>& data) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) fail("cannot write " + path);
    if (std::fwrite(data.data(), sizeof(S), data.size(), f) != data.size()) fail("short write " + path);
    std::fclose(f);
}

// The float32 inputs of a case in the precision T.
template <typename T> std::vector<T> read_values(const std::string& path, size_t count) {
    const std::vector<float> raw = read_array<float>(path, count);
    return std::vector<T>(raw.begin(), raw.end());
}

double cpu_ms() {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

template <typename T> int run_raster(const std::string& dir, const std::string& out_dir, int threads,
                                     int repeat) {
    const auto meta = read_meta(dir);
    auto get = [&](const char* key) { return meta_value(meta, key); };
    const int64_t C = get("cameras"), N = get("gaussians"), M = get("isects"), D = get("channels");
    const int64_t W = get("width"), H = get("height"), TW = get("tile_width"), TH = get("tile_height");
    const int64_t G = C * N, P = C * H * W, n_tiles = C * TH * TW;
    const std::vector<T> means2d = read_values<T>(dir + "/means2d.bin", G * 2);
    const std::vector<T> conics = read_values<T>(dir + "/conics.bin", G * 3);
    const std::vector<T> colors = read_values<T>(dir + "/colors.bin", G * D);
    const std::vector<T> opacities = read_values<T>(dir + "/opacities.bin", G);
    const std::vector<T> backgrounds =
        get("backgrounds") ? read_values<T>(dir + "/backgrounds.bin", C * D) : std::vector<T>();
    const std::vector<int32_t> offsets = read_array<int32_t>(dir + "/isect_offsets.bin", n_tiles);
    const std::vector<int32_t> ids = read_array<int32_t>(dir + "/flatten_ids.bin", M);
    const std::vector<T> v_colors_in = read_values<T>(dir + "/v_colors.bin", P * D);
    const std::vector<T> v_alphas_in = read_values<T>(dir + "/v_alphas.bin", P);

    RasterArgs<T> a;
    a.means2d = means2d.data();
    a.conics = conics.data();
    a.colors = colors.data();
    a.opacities = opacities.data();
    a.backgrounds = backgrounds.empty() ? nullptr : backgrounds.data();
    a.isect_offsets = offsets.data();
    a.flatten_ids = ids.data();
    a.n_gaussians = G;
    a.n_isects = M;
    a.n_tiles = n_tiles;
    a.width = int(W);
    a.height = int(H);
    a.tile_size = int(get("tile_size"));
    a.tile_width = int(TW);
    a.tile_height = int(TH);
    a.channels = int(D);
    a.n_threads = threads;

    std::vector<T> out_colors(P * D), out_alphas(P), trans(P);
    std::vector<int32_t> last_ids(P);
    const RasterForwardOutputs<T> fwd = {out_colors.data(), out_alphas.data(), trans.data(), last_ids.data()};
    const int64_t R = kRecordFixed + D;
    // NaN where the kernel must write: a record or tile it skips would poison the sums below.
    std::vector<T> records(M * R, std::numeric_limits<T>::quiet_NaN());
    std::vector<T> v_bg_tiles(n_tiles * D, std::numeric_limits<T>::quiet_NaN());
    const RasterBackwardInputs<T> bin = {trans.data(), last_ids.data(), v_colors_in.data(),
                                         v_alphas_in.data(), nullptr};
    const BackwardOut<T> bout = {records.data(), v_bg_tiles.data()};

    int64_t pairs = 0;
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
        const int64_t local = tile % (TH * TW), x0 = local % TW * a.tile_size, y0 = local / TW * a.tile_size;
        const int64_t end = tile + 1 < n_tiles ? offsets[tile + 1] : M;
        pairs += (end - offsets[tile]) * std::min<int64_t>(a.tile_size, W - x0) *
                 std::min<int64_t>(a.tile_size, H - y0);
    }

    using clock = std::chrono::steady_clock;
    std::vector<double> forward_ms, backward_ms, forward_cpu, backward_cpu;
    for (int r = 0; r < repeat; ++r) {
        const auto t0 = clock::now();
        const double c0 = cpu_ms();
        GS_ISA::rasterize_forward(a, fwd);
        const auto t1 = clock::now();
        const double c1 = cpu_ms();
        GS_ISA::rasterize_backward(a, bin, bout);
        const auto t2 = clock::now();
        const double c2 = cpu_ms();
        forward_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        backward_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
        forward_cpu.push_back(c1 - c0);
        backward_cpu.push_back(c2 - c1);
    }
    std::printf(
        "level %s lanes %d pairs %lld forward_ms %.3f backward_ms %.3f forward_cpu_ms %.3f "
        "backward_cpu_ms %.3f\n",
        GS_STRINGIFY(GS_ISA), GS_ISA::simd_lanes(), (long long)pairs, median(forward_ms), median(backward_ms),
        median(forward_cpu), median(backward_cpu));
    if (out_dir.empty()) return 0;

    // Each Gaussian's records summed in intersection order, fields as in rasterize.cpp.
    std::vector<T> v_means2d(G * 2), v_means2d_abs(G * 2), v_conics(G * 3), v_colors(G * D), v_opacities(G);
    std::vector<T> v_backgrounds(backgrounds.size());
    for (int64_t i = 0; i < M; ++i) {
        const int64_t g = ids[i];
        const T* rec = records.data() + i * R;
        for (int k = 0; k < 2; ++k) v_means2d[g * 2 + k] += rec[k];
        for (int k = 0; k < 2; ++k) v_means2d_abs[g * 2 + k] += rec[2 + k];
        for (int k = 0; k < 3; ++k) v_conics[g * 3 + k] += rec[4 + k];
        v_opacities[g] += rec[7];
        for (int64_t ch = 0; ch < D; ++ch) v_colors[g * D + ch] += rec[kRecordFixed + ch];
    }
    if (!v_backgrounds.empty())
        for (int64_t tile = 0; tile < n_tiles; ++tile)
            for (int64_t ch = 0; ch < D; ++ch)
                v_backgrounds[tile / (TH * TW) * D + ch] += v_bg_tiles[tile * D + ch];

    write_array(out_dir + "/render_colors.bin", out_colors);
    write_array(out_dir + "/render_alphas.bin", out_alphas);
    write_array(out_dir + "/transmittance.bin", trans);
    write_array(out_dir + "/last_ids.bin", last_ids);
    write_array(out_dir + "/v_means2d.bin", v_means2d);
    write_array(out_dir + "/v_means2d_abs.bin", v_means2d_abs);
    write_array(out_dir + "/v_conics.bin", v_conics);
    write_array(out_dir + "/v_colors.bin", v_colors);
    write_array(out_dir + "/v_opacities.bin", v_opacities);
    write_array(out_dir + "/v_backgrounds.bin", v_backgrounds);
    return 0;
}

// Adam: each tensor's param, grad, exp_avg and exp_avg_sq (param<i>.bin, ...), the hyperparameters
// (hyperparameters.bin: float64 lr, beta1, beta2, eps, step per tensor) and the visible rows (visible.bin:
// one byte per row); writes <plain|visible>_<param|exp_avg|exp_avg_sq><i>.bin.
constexpr int kAdamHyperparameters = 5;

template <typename T>
int run_adam(const std::string& dir, const std::string& out_dir, int threads) {
    const auto meta = read_meta(dir);
    const int64_t count = meta_value(meta, "tensors"), rows = meta_value(meta, "rows");
    const std::vector<double> hyper =
        read_array<double>(dir + "/hyperparameters.bin", count * kAdamHyperparameters);
    const std::vector<unsigned char> visible_bytes = read_array<unsigned char>(dir + "/visible.bin", rows);
    const std::unique_ptr<bool[]> visible(new bool[rows]);
    for (int64_t row = 0; row < rows; ++row) visible[row] = visible_bytes[row] != 0;

    struct State {
        std::vector<T> param, grad, exp_avg, exp_avg_sq;
    };
    std::vector<State> initial;
    for (int64_t i = 0; i < count; ++i) {
        const size_t n = rows * meta_value(meta, "row_size" + std::to_string(i));
        const std::string suffix = std::to_string(i) + ".bin";
        initial.push_back(
            {read_values<T>(dir + "/param" + suffix, n), read_values<T>(dir + "/grad" + suffix, n),
             read_values<T>(dir + "/exp_avg" + suffix, n), read_values<T>(dir + "/exp_avg_sq" + suffix, n)});
    }
    for (const bool use_visible : {false, true}) {
        std::vector<State> state = initial;
        std::vector<AdamTensor<T>> tensors;
        for (int64_t i = 0; i < count; ++i) {
            const double* h = hyper.data() + i * kAdamHyperparameters;
            tensors.push_back({state[i].param.data(), state[i].grad.data(), state[i].exp_avg.data(),
                               state[i].exp_avg_sq.data(), rows,
                               meta_value(meta, "row_size" + std::to_string(i)), h[0], h[1], h[2], h[3],
                               h[4]});
        }
        adam_step(AdamArgs<T>{tensors.data(), int(count), use_visible ? visible.get() : nullptr, threads});
        if (out_dir.empty()) continue;
        const std::string prefix = out_dir + (use_visible ? "/visible_" : "/plain_");
        for (int64_t i = 0; i < count; ++i) {
            const std::string suffix = std::to_string(i) + ".bin";
            write_array(prefix + "param" + suffix, state[i].param);
            write_array(prefix + "exp_avg" + suffix, state[i].exp_avg);
            write_array(prefix + "exp_avg_sq" + suffix, state[i].exp_avg_sq);
        }
    }
    std::printf("level %s\n", GS_STRINGIFY(GS_ISA));
    return 0;
}

// SSIM of img1.bin and img2.bin ([B, H, W, C]), and its backward for the cotangent v_result.bin ([B]);
// writes result.bin, maps.bin and v_img1.bin.
template <typename T>
int run_ssim(const std::string& dir, const std::string& out_dir, int threads) {
    const auto meta = read_meta(dir);
    const int64_t B = meta_value(meta, "batch"), H = meta_value(meta, "height"),
                  W = meta_value(meta, "width"), C = meta_value(meta, "channels");
    const std::vector<T> img1 = read_values<T>(dir + "/img1.bin", B * H * W * C);
    const std::vector<T> img2 = read_values<T>(dir + "/img2.bin", B * H * W * C);
    const std::vector<T> v_result = read_values<T>(dir + "/v_result.bin", B);
    const SsimArgs<T> a = {img1.data(), img2.data(), B, H, W, C, threads};
    std::vector<T> result(B), maps(B * C * kSsimMaps * H * W), v_img1(B * H * W * C);
    ssim_forward(a, result.data(), maps.data());
    ssim_backward(a, maps.data(), v_result.data(), v_img1.data());
    std::printf("level %s\n", GS_STRINGIFY(GS_ISA));
    if (out_dir.empty()) return 0;
    write_array(out_dir + "/result.bin", result);
    write_array(out_dir + "/maps.bin", maps);
    write_array(out_dir + "/v_img1.bin", v_img1);
    return 0;
}

// Projection of the Gaussians (means.bin, quats.bin, scales.bin, opacities.bin; [N, ...]) into the cameras
// (viewmats.bin, Ks.bin; [C, ...]) with camera_model and calc_compensations from meta.txt, eps2d 0.3 and
// the default depth range; then the backward for the cotangents v_means2d.bin, v_depths.bin, v_conics.bin
// and v_compensations.bin ([C, N, ...]). Writes radii.bin, means2d.bin, depths.bin, conics.bin,
// compensations.bin and the gradients v_means.bin, v_quats.bin, v_scales.bin, v_viewmats.bin, v_Ks.bin.
template <typename T>
int run_projection(const std::string& dir, const std::string& out_dir, int threads) {
    const auto meta = read_meta(dir);
    const int64_t C = meta_value(meta, "cameras"), N = meta_value(meta, "gaussians"), P = C * N;
    const std::vector<T> means = read_values<T>(dir + "/means.bin", N * 3);
    const std::vector<T> quats = read_values<T>(dir + "/quats.bin", N * 4);
    const std::vector<T> scales = read_values<T>(dir + "/scales.bin", N * 3);
    const std::vector<T> opacities = read_values<T>(dir + "/opacities.bin", N);
    const std::vector<T> viewmats = read_values<T>(dir + "/viewmats.bin", C * 16);
    const std::vector<T> Ks = read_values<T>(dir + "/Ks.bin", C * 9);
    const std::vector<T> v_means2d = read_values<T>(dir + "/v_means2d.bin", P * 2);
    const std::vector<T> v_depths = read_values<T>(dir + "/v_depths.bin", P);
    const std::vector<T> v_conics = read_values<T>(dir + "/v_conics.bin", P * 3);
    const std::vector<T> v_compensations = read_values<T>(dir + "/v_compensations.bin", P);

    ProjectionArgs<T> a;
    a.means = means.data();
    a.quats = quats.data();
    a.scales = scales.data();
    a.covars = nullptr;
    a.opacities = opacities.data();
    a.viewmats = viewmats.data();
    a.Ks = Ks.data();
    a.radial_coeffs = nullptr;
    a.n_batches = 1;
    a.n_cameras = C;
    a.n_gaussians = N;
    a.width = int(meta_value(meta, "width"));
    a.height = int(meta_value(meta, "height"));
    a.eps2d = T(0.3);
    a.near_plane = T(0.01);
    a.far_plane = T(1e10);
    a.radius_clip = T(0);
    a.calc_compensations = meta_value(meta, "calc_compensations") != 0;
    a.camera_model = int(meta_value(meta, "camera_model"));
    a.n_threads = threads;

    std::vector<int32_t> radii(P * 2, 0);  // the outputs of invisible pairs stay zero
    std::vector<T> means2d(P * 2, T(0)), depths(P, T(0)), conics(P * 3, T(0)), compensations(P, T(0));
    project_gaussians_forward(a,
                              ProjectionOutputs<T>{radii.data(), means2d.data(), depths.data(), conics.data(),
                                                   compensations.data(), nullptr, nullptr, nullptr});

    std::vector<T> v_means(N * 3, T(0)), v_quats(N * 4, T(0)), v_scales(N * 3, T(0));
    std::vector<T> v_viewmats(C * 16, T(0)), v_Ks(C * 9, T(0));
    const ProjectionGradients<T> g = {
        radii.data(),           v_means2d.data(),
        v_depths.data(),        v_conics.data(),
        v_compensations.data(), {v_means.data(), v_quats.data(), v_scales.data(), nullptr},
        v_viewmats.data(),      v_Ks.data()};
    project_gaussians_backward(a, g);
    std::printf("level %s\n", GS_STRINGIFY(GS_ISA));
    if (out_dir.empty()) return 0;
    write_array(out_dir + "/radii.bin", radii);
    write_array(out_dir + "/means2d.bin", means2d);
    write_array(out_dir + "/depths.bin", depths);
    write_array(out_dir + "/conics.bin", conics);
    write_array(out_dir + "/compensations.bin", compensations);
    write_array(out_dir + "/v_means.bin", v_means);
    write_array(out_dir + "/v_quats.bin", v_quats);
    write_array(out_dir + "/v_scales.bin", v_scales);
    write_array(out_dir + "/v_viewmats.bin", v_viewmats);
    write_array(out_dir + "/v_Ks.bin", v_Ks);
    return 0;
}

template <typename T>
int run(const std::string& kernel, const std::string& dir, const std::string& out_dir, int threads,
        int repeat) {
    if (kernel == "raster") return run_raster<T>(dir, out_dir, threads, repeat);
    if (repeat != 1) fail("--repeat times the raster kernels only");
    if (kernel == "adam") return run_adam<T>(dir, out_dir, threads);
    if (kernel == "ssim") return run_ssim<T>(dir, out_dir, threads);
    if (kernel == "projection") return run_projection<T>(dir, out_dir, threads);
    fail("unknown kernel " + kernel + ": expected raster, adam, ssim or projection");
}

}  // namespace

// The level whose build adam.cpp, ssim.cpp and projection.cpp run (cpu_common.h's for_simd_level), named as
// rasterize.cpp names it: the driver's own.
const char* gsplat_py::cpu::simd_level() {
    static const std::string name = [] {
        std::string level = GS_STRINGIFY(GS_ISA);
        std::replace(level.begin(), level.end(), '_', '-');
        return level;
    }();
    return name.c_str();
}

int main(int argc, char** argv) {
    if (argc < 2)
        fail(
            "usage: driver CASE_DIR [--kernel raster|adam|ssim|projection] [--out DIR] [--double] [--threads "
            "N] "
            "[--repeat R]");
    std::string kernel = "raster", out_dir;
    bool use_double = false;
    int threads = 1, repeat = 1;
    for (int i = 2; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--double")
            use_double = true;
        else if (arg == "--kernel" && i + 1 < argc)
            kernel = argv[++i];
        else if (arg == "--out" && i + 1 < argc)
            out_dir = argv[++i];
        else if (arg == "--threads" && i + 1 < argc)
            threads = std::atoi(argv[++i]);
        else if (arg == "--repeat" && i + 1 < argc)
            repeat = std::atoi(argv[++i]);
        else
            fail("unknown argument " + arg);
    }
    if (threads < 1 || repeat < 1) fail("--threads and --repeat must be >= 1");
    return use_double ? run<double>(kernel, argv[1], out_dir, threads, repeat)
                      : run<float>(kernel, argv[1], out_dir, threads, repeat);
}
