// Defines the ops with PyTorch's dispatcher (torch.ops.gsplat_py.*): one schema each. The backends
// register their kernels for these schemas, each for its dispatch key: cpu_ops.cpp (and simd_level),
// and cuda_ops.cpp when the CUDA backend is built.
#include <Python.h>
#include <torch/library.h>

// The projection's inputs: means [B, N, 3]; quats [B, N, 4] and scales [B, N, 3], or covars [B, N, 6];
// opacities [B, N]; viewmats [B, C, 4, 4]; Ks [B, C, 3, 3]; radial_coeffs [B, C, 4] (fisheye).
#define GS_PROJECTION_INPUTS                                                                            \
    "Tensor means, Tensor? quats, Tensor? scales, Tensor? covars, Tensor? opacities, Tensor viewmats, " \
    "Tensor Ks, Tensor? radial_coeffs, int width, int height, float eps2d, float near_plane, "          \
    "float far_plane, float radius_clip, bool calc_compensations, int camera_model"
#define GS_PROJECTION_BACKWARD_INPUTS                                                           \
    "Tensor means, Tensor? quats, Tensor? scales, Tensor? covars, Tensor viewmats, Tensor Ks, " \
    "Tensor? radial_coeffs, int width, int height, float eps2d, int camera_model"

TORCH_LIBRARY(gsplat_py, m) {
    m.def("project_gaussians_forward(" GS_PROJECTION_INPUTS ") -> Tensor[]");
    m.def("project_gaussians_packed_forward(" GS_PROJECTION_INPUTS ") -> Tensor[]");
    m.def("project_gaussians_backward(" GS_PROJECTION_BACKWARD_INPUTS
          ", Tensor radii, Tensor v_means2d, Tensor v_depths, Tensor v_conics, Tensor? v_compensations, "
          "bool camera_grads) -> Tensor[]");
    m.def("project_gaussians_packed_backward(" GS_PROJECTION_BACKWARD_INPUTS
          ", Tensor batch_ids, Tensor camera_ids, Tensor gaussian_ids, Tensor v_means2d, Tensor v_depths, "
          "Tensor v_conics, Tensor? v_compensations, bool camera_grads, bool per_entry) -> Tensor[]");
    m.def(
        "spherical_harmonics_forward(int degree, Tensor dirs, Tensor coeffs, Tensor? coeff_rows, "
        "Tensor? masks, Tensor? coeffs_rest=None) -> Tensor");
    m.def(
        "spherical_harmonics_backward(int degree, Tensor dirs, Tensor coeffs, Tensor? coeff_rows, "
        "Tensor? masks, Tensor v_colors, Tensor? coeffs_rest=None) -> Tensor[]");
    m.def(
        "bin_gaussians_to_tiles(Tensor means2d, Tensor radii, Tensor depths, Tensor? image_ids, "
        "int n_images, int tile_size, int tile_width, int tile_height) -> Tensor[]");
    m.def("simd_level() -> str");
    m.def(
        "adam_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "float[] lrs, float[] beta1s, float[] beta2s, float[] epss, float[] steps, Tensor? visible) -> ()");
    m.def("ssim_forward(Tensor img1, Tensor img2, bool keep_maps) -> Tensor[]");
    m.def("ssim_backward(Tensor img1, Tensor img2, Tensor maps, Tensor v_result) -> Tensor");
    m.def(
        "rasterize_forward(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities, "
        "Tensor? backgrounds, int width, int height, int tile_size, Tensor isect_offsets, "
        "Tensor flatten_ids) -> Tensor[]");
    m.def(
        "rasterize_backward(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities, "
        "Tensor? backgrounds, int width, int height, int tile_size, Tensor isect_offsets, "
        "Tensor flatten_ids, Tensor transmittance, Tensor last_ids, Tensor v_render_colors, "
        "Tensor v_render_alphas, bool absgrad) -> Tensor[]");
    // 2D Gaussian splatting (surfels): csrc/torch/surfel_wrappers.h
    m.def(
        "project_surfels_forward(Tensor means, Tensor quats, Tensor scales, Tensor viewmats, Tensor Ks, "
        "int width, int height, float near_plane, float far_plane, float radius_clip) -> Tensor[]");
    m.def(
        "project_surfels_backward(Tensor means, Tensor quats, Tensor scales, Tensor viewmats, Tensor Ks, "
        "Tensor radii, Tensor v_means2d, Tensor v_depths, Tensor v_transforms, Tensor v_normals, "
        "bool camera_grads) -> Tensor[]");
    m.def(
        "rasterize_surfels_forward(Tensor means2d, Tensor transforms, Tensor colors, Tensor opacities, "
        "Tensor normals, Tensor depths, int width, int height, int tile_size, Tensor isect_offsets, "
        "Tensor flatten_ids) -> Tensor[]");
    m.def(
        "rasterize_surfels_backward(Tensor means2d, Tensor transforms, Tensor colors, Tensor opacities, "
        "Tensor normals, Tensor depths, int width, int height, int tile_size, Tensor isect_offsets, "
        "Tensor flatten_ids, Tensor transmittance, Tensor depth_sums, Tensor last_ids, Tensor median_ids, "
        "Tensor v_colors, Tensor v_alphas, Tensor v_normals, Tensor v_distortions, Tensor v_medians, "
        "bool absgrad) -> Tensor[]");
}

// Importing gsplat_py._C loads the library, whose static initialisers run the registrations (these
// schemas and the backends' kernels); the module itself has no attributes (a bare module, without
// pybind11, keeps the build short).
PyMODINIT_FUNC PyInit__C(void) {
    static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
    return PyModule_Create(&module);
}
