// Standalone driver of the torch-free rasterizer kernels (csrc/cpu/raster_kernels.cpp): reads a case
// written by kernel_case.py (raw little-endian arrays and a meta.txt), runs the forward kernel, then the
// backward kernel on the forward's transmittance and last ids, sums each Gaussian's gradient records in
// intersection order (as csrc/cpu/rasterize.cpp does) and writes the results, or times the kernels.
//
// Built together with raster_kernels.cpp, both with -DGS_ISA=<level> and that level's flags, for any
// target: natively for each x86-64 level, or with a cross compiler for aarch64 and run under qemu.
//
//     driver CASE_DIR [--out DIR] [--double] [--threads N] [--repeat R]
//
// Prints one line: the level, its lanes, the pixel-Gaussian pairs (each intersection counted with all
// of its tile's pixels in the image), and the median forward and backward kernel times in ms, wall-clock
// and CPU time of the process (all threads; less disturbed by other work on a shared machine).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <string>
#include <vector>

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

template <typename T> int run(const std::string& dir, const std::string& out_dir, int threads, int repeat) {
    const auto meta = read_meta(dir);
    auto get = [&](const char* key) {
        const auto it = meta.find(key);
        if (it == meta.end()) fail(std::string("meta.txt lacks ") + key);
        return it->second;
    };
    const int64_t C = get("cameras"), N = get("gaussians"), M = get("isects"), D = get("channels");
    const int64_t W = get("width"), H = get("height"), TW = get("tile_width"), TH = get("tile_height");
    const int64_t G = C * N, P = C * H * W, n_tiles = C * TH * TW;
    const std::vector<T> means2d = read_values<T>(dir + "/means2d.bin", G * 2);
    const std::vector<T> conics = read_values<T>(dir + "/conics.bin", G * 3);
    const std::vector<T> colors = read_values<T>(dir + "/colors.bin", G * D);
    const std::vector<T> opacities = read_values<T>(dir + "/opacities.bin", G);
    const std::vector<T> backgrounds = get("backgrounds") ? read_values<T>(dir + "/backgrounds.bin", C * D)
                                                          : std::vector<T>();
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
    std::vector<T> records(M * R), v_bg_tiles(n_tiles * D);
    const RasterBackwardInputs<T> bin = {trans.data(), last_ids.data(), v_colors_in.data(), v_alphas_in.data(),
                                         nullptr};
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
    std::printf("level %s lanes %d pairs %lld forward_ms %.3f backward_ms %.3f forward_cpu_ms %.3f "
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
            for (int64_t ch = 0; ch < D; ++ch) v_backgrounds[tile / (TH * TW) * D + ch] += v_bg_tiles[tile * D + ch];

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

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) fail("usage: driver CASE_DIR [--out DIR] [--double] [--threads N] [--repeat R]");
    std::string out_dir;
    bool use_double = false;
    int threads = 1, repeat = 1;
    for (int i = 2; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--double") use_double = true;
        else if (arg == "--out" && i + 1 < argc) out_dir = argv[++i];
        else if (arg == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (arg == "--repeat" && i + 1 < argc) repeat = std::atoi(argv[++i]);
        else fail("unknown argument " + arg);
    }
    if (threads < 1 || repeat < 1) fail("--threads and --repeat must be >= 1");
    return use_double ? run<double>(argv[1], out_dir, threads, repeat) : run<float>(argv[1], out_dir, threads, repeat);
}
