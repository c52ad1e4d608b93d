// Helpers shared by the CPU ops: the ATen headers they use, the boundary checks (op_checks.h) and the
// thread pool size.
#pragma once

// Only the ATen headers the ops use (not torch/types.h): it halves the compile time of each file.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include "op_checks.h"

namespace gsplat_py::cpu {

inline int num_threads() { return at::get_num_threads(); }

}  // namespace gsplat_py::cpu
