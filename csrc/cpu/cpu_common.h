// Helpers shared by the CPU ops: input checks at the C++ boundary and the thread pool size.
#pragma once

// Only the ATen headers the ops use (not torch/types.h): it halves the compile time of each file.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

namespace gsplat_py::cpu {

// The Python layer validates user input with friendly messages; these checks guard direct calls to
// the registered ops.
inline void check_input(const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

inline int num_threads() { return at::get_num_threads(); }

}  // namespace gsplat_py::cpu
