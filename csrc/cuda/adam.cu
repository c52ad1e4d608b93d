// Adam over several parameter tensors (adam_math.h has the update): one launch per tensor, one thread per
// value, with the coefficients worked out on the host in double as the CPU kernel does, so both
// backends give the same bits.
#include "adam_math.h"
#include "cuda_common.cuh"
#include "kernels.h"

namespace gsplat_py::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void adam_kernel(AdamCoefficients<T> c, T* __restrict__ param, const T* __restrict__ grad,
                            T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq, int64_t count,
                            int64_t row_size, const bool* __restrict__ visible) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= count || (visible != nullptr && !visible[i / row_size])) return;
    T p = param[i], m = exp_avg[i], v = exp_avg_sq[i];
    adam_update(c, p, grad[i], m, v);
    param[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
}

}  // namespace

template <typename T>
void adam_step(const AdamArgs<T>& a, cudaStream_t stream) {
    for (int i = 0; i < a.count; ++i) {
        const AdamTensor<T>& t = a.tensors[i];
        const int64_t count = t.rows * t.row_size;
        if (count == 0) continue;
        adam_kernel<T><<<blocks_for(count, kThreads), kThreads, 0, stream>>>(
            adam_coefficients<T>(t.lr, t.beta1, t.beta2, t.eps, t.step), t.param, t.grad, t.exp_avg,
            t.exp_avg_sq, count, t.row_size, a.visible);
        check_launch("adam_step");
    }
}

template void adam_step<float>(const AdamArgs<float>&, cudaStream_t);
template void adam_step<double>(const AdamArgs<double>&, cudaStream_t);

}  // namespace gsplat_py::cuda
