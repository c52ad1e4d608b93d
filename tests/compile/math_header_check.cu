// Compile-only check (run by .ci/run with nvcc): the shared math header builds as CUDA device code,
// so the CUDA backend can include the very functions the CPU backend is tested with.
#include "gsplat_math.h"

using namespace gsplat_py;

__global__ void project_and_blend(const float* means, const float* quats, const float* scales,
                                  const float* opacities, const float* viewmat, const float* K,
                                  float* out, float* grads, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    ProjectedGaussian<float> g = project_gaussian<float>(means + 3 * i, quats + 4 * i, scales + 3 * i,
                                                         opacities + i, viewmat, K, 64, 48, 0.3f, 0.01f,
                                                         1e10f, 0.0f, true, kPinhole);
    const float sigma = splat_sigma(g.conic, 0.5f, -0.25f);
    const float vis = splat_exp(-sigma);
    const float alpha = splat_alpha(opacities[i], vis);
    out[i] = splat_contributes<float>(sigma, alpha) ? alpha : 0.0f;
    SplatGrad<float> sg = splat_alpha_vjp(g.conic, opacities[i], 0.5f, -0.25f, vis, 1.0f);
    float v_K[4] = {0, 0, 0, 0};
    float v_view[16] = {0};
    project_gaussian_vjp<float>(means + 3 * i, quats + 4 * i, scales + 3 * i, viewmat, K, 64, 48, 0.3f,
                                kPinhole, sg.v_mean_x, sg.v_mean_y, 0.0f,
                                Sym2<float>{sg.v_conic_a, sg.v_conic_b, sg.v_conic_c}, 0.0f,
                                grads + 16 * i, grads + 16 * i + 3, grads + 16 * i + 7, v_view, v_K);
    float basis[16];
    sh_basis(3, 0.0f, 0.0f, 1.0f, basis);
    float w[16] = {1};
    Vec3<float> d = sh_basis_vjp(3, 0.0f, 0.0f, 1.0f, w);
    grads[16 * i + 10] = basis[6] + d.z + v_K[0] + v_view[0];
}
