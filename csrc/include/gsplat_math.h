// The math of Gaussian splatting, shared by the CPU and CUDA backends: quaternion to rotation, 3D
// covariance, EWA projection (pinhole and orthographic) with eps2d dilation and antialiasing
// compensation, spherical harmonics up to degree 3, the alpha-blending step, and the hand-written
// vector-Jacobian product (VJP) of each. Everything is a header-only inline template so the CPU kernels
// run it in float and double (gradcheck on the real code) and nvcc compiles the same source.
//
// Conventions (those of Inria 3DGS and gsplat, so their models render the same here):
// quaternions are (w, x, y, z) and normalised here; matrices are row-major; a symmetric 2x2 matrix is
// stored by its unique entries (a, b, c) = ([0][0], [0][1], [1][1]) and its gradient likewise, i.e.
// the gradient of b counts both off-diagonal entries.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GS_HD __host__ __device__ __forceinline__
#else
#define GS_HD inline
#endif

namespace gsplat_py {

// ---------------------------------------------------------------------------------------------
// Constants of the field (Inria 3DGS and gsplat agree on them).
// Doubles, cast to the kernel's type where used, so the float64 kernels use the exact values.
constexpr double kAlphaThreshold = 1.0 / 255.0;  // contributions below this are skipped
constexpr double kMaxAlpha = 0.99;               // alpha is clamped here (keeps 1/(1-alpha) finite)
constexpr double kTransmittanceMin = 1e-4;       // a pixel stops when T would fall to this
constexpr double kMaxExtent = 3.33;              // bounding box half-size in standard deviations
constexpr double kClipMargin = 0.3;              // how far outside the view (in tan fov) J is evaluated

constexpr double kShC0 = 0.28209479177387814;
constexpr double kShC1 = 0.4886025119029199;
// Scalars rather than arrays: constexpr arrays are not usable in CUDA device code.
constexpr double kShC20 = 1.0925484305920792, kShC21 = -1.0925484305920792, kShC22 = 0.31539156525252005,
                 kShC23 = -1.0925484305920792, kShC24 = 0.5462742152960396;
constexpr double kShC30 = -0.5900435899266435, kShC31 = 2.890611442640554, kShC32 = -0.4570457994644658,
                 kShC33 = 0.3731763325901154, kShC34 = -0.4570457994644658, kShC35 = 1.445305721320277,
                 kShC36 = -0.5900435899266435;

enum CameraModel : int { kPinhole = 0, kOrtho = 1 };

// Camera intrinsics: K is row-major 3x3 with fx, fy, cx, cy at these entries; their gradients (v_K
// below) are in the order fx, fy, cx, cy, intrinsic i of which sits at K_index_of_intrinsic(i).
constexpr int kKFx = 0, kKFy = 4, kKCx = 2, kKCy = 5;
constexpr int kIntrinsics = 4;
GS_HD constexpr int K_index_of_intrinsic(int i) {
    return i == 0 ? kKFx : i == 1 ? kKFy : i == 2 ? kKCx : kKCy;
}

// ---------------------------------------------------------------------------------------------
// Small fixed-size linear algebra.
template <typename T> struct Vec3 {
    T x, y, z;
};
template <typename T> struct Mat3 {
    T m[3][3];
};
template <typename T> struct Sym2 {  // [[a, b], [b, c]]
    T a, b, c;
};

template <typename T> GS_HD Mat3<T> mat3_zero() {
    Mat3<T> r;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) r.m[i][j] = T(0);
    return r;
}

template <typename T> GS_HD Mat3<T> matmul(const Mat3<T>& A, const Mat3<T>& B) {
    Mat3<T> r;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            r.m[i][j] = A.m[i][0] * B.m[0][j] + A.m[i][1] * B.m[1][j] + A.m[i][2] * B.m[2][j];
    return r;
}

template <typename T> GS_HD Mat3<T> transpose(const Mat3<T>& A) {
    Mat3<T> r;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) r.m[i][j] = A.m[j][i];
    return r;
}

template <typename T> GS_HD Vec3<T> matvec(const Mat3<T>& A, const Vec3<T>& v) {
    return {A.m[0][0] * v.x + A.m[0][1] * v.y + A.m[0][2] * v.z,
            A.m[1][0] * v.x + A.m[1][1] * v.y + A.m[1][2] * v.z,
            A.m[2][0] * v.x + A.m[2][1] * v.y + A.m[2][2] * v.z};
}

template <typename T> GS_HD Vec3<T> matTvec(const Mat3<T>& A, const Vec3<T>& v) {
    return {A.m[0][0] * v.x + A.m[1][0] * v.y + A.m[2][0] * v.z,
            A.m[0][1] * v.x + A.m[1][1] * v.y + A.m[2][1] * v.z,
            A.m[0][2] * v.x + A.m[1][2] * v.y + A.m[2][2] * v.z};
}

// ---------------------------------------------------------------------------------------------
// Quaternion -> rotation matrix, and its VJP (through the normalisation).
template <typename T> GS_HD Mat3<T> quat_to_rotmat(const T* q) {
    T inv_norm = T(1) / std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    T w = q[0] * inv_norm, x = q[1] * inv_norm, y = q[2] * inv_norm, z = q[3] * inv_norm;
    Mat3<T> R;
    R.m[0][0] = T(1) - T(2) * (y * y + z * z);
    R.m[0][1] = T(2) * (x * y - w * z);
    R.m[0][2] = T(2) * (x * z + w * y);
    R.m[1][0] = T(2) * (x * y + w * z);
    R.m[1][1] = T(1) - T(2) * (x * x + z * z);
    R.m[1][2] = T(2) * (y * z - w * x);
    R.m[2][0] = T(2) * (x * z - w * y);
    R.m[2][1] = T(2) * (y * z + w * x);
    R.m[2][2] = T(1) - T(2) * (x * x + y * y);
    return R;
}

template <typename T> GS_HD void quat_to_rotmat_vjp(const T* q, const Mat3<T>& vR, T* v_q) {
    T norm = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    T w = q[0] / norm, x = q[1] / norm, y = q[2] / norm, z = q[3] / norm;
    const T(*V)[3] = vR.m;
    // sum over entries of vR times dR/d(component) of the normalised quaternion
    T vw = T(2) * (-z * V[0][1] + y * V[0][2] + z * V[1][0] - x * V[1][2] - y * V[2][0] + x * V[2][1]);
    T vx = T(2) * (y * V[0][1] + z * V[0][2] + y * V[1][0] - T(2) * x * V[1][1] - w * V[1][2] + z * V[2][0] +
                   w * V[2][1] - T(2) * x * V[2][2]);
    T vy = T(2) * (-T(2) * y * V[0][0] + x * V[0][1] + w * V[0][2] + x * V[1][0] + z * V[1][2] - w * V[2][0] +
                   z * V[2][1] - T(2) * y * V[2][2]);
    T vz = T(2) * (-T(2) * z * V[0][0] - w * V[0][1] + x * V[0][2] + w * V[1][0] - T(2) * z * V[1][1] +
                   y * V[1][2] + x * V[2][0] + y * V[2][1]);
    T dot = vw * w + vx * x + vy * y + vz * z;
    v_q[0] = (vw - dot * w) / norm;
    v_q[1] = (vx - dot * x) / norm;
    v_q[2] = (vy - dot * y) / norm;
    v_q[3] = (vz - dot * z) / norm;
}

// Sigma = R S S^T R^T with M = R S.
template <typename T> GS_HD Mat3<T> covariance_from(const Mat3<T>& R, const T* s, Mat3<T>* M_out) {
    Mat3<T> M;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) M.m[i][j] = R.m[i][j] * s[j];
    if (M_out) *M_out = M;
    return matmul(M, transpose(M));
}

// VJP of covariance_from (which gave M = R S) given the symmetric gradient of Sigma: accumulates into
// v_q and v_s.
template <typename T>
GS_HD void covariance_vjp(const T* q, const T* s, const Mat3<T>& R, const Mat3<T>& M, const Mat3<T>& v_sigma,
                          T* v_q, T* v_s) {
    Mat3<T> vM = matmul(v_sigma, M);  // d/dM of M M^T with symmetric v_sigma is 2 v_sigma M
    Mat3<T> vR;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
            vM.m[i][j] *= T(2);
            vR.m[i][j] = vM.m[i][j] * s[j];
        }
    for (int j = 0; j < 3; ++j)
        v_s[j] += R.m[0][j] * vM.m[0][j] + R.m[1][j] * vM.m[1][j] + R.m[2][j] * vM.m[2][j];
    T vq[4];
    quat_to_rotmat_vjp(q, vR, vq);
    for (int k = 0; k < 4; ++k) v_q[k] += vq[k];
}

// ---------------------------------------------------------------------------------------------
// EWA projection of a camera-space Gaussian to the image plane.
// Where x/z is clamped so the Jacobian stays sane far outside the view: 0 inside, +1/-1 at the
// upper/lower bound.
template <typename T> struct ClampedRatio {
    T value;
    int side;
};

template <typename T> GS_HD ClampedRatio<T> clamp_view_ratio(T ratio, T f, T c, T size) {
    T tan_fov = T(0.5) * size / f;
    T upper = (size - c) / f + T(kClipMargin) * tan_fov;
    T lower = -(c / f + T(kClipMargin) * tan_fov);
    if (ratio > upper) return {upper, 1};
    if (ratio < lower) return {lower, -1};
    return {ratio, 0};
}

template <typename T> struct Projection2D {
    T mean_x, mean_y;
    T J[2][3];
    Sym2<T> cov;  // J Sigma_c J^T (before eps2d)
    ClampedRatio<T> ux, uy;
};

template <typename T>
GS_HD Projection2D<T> project_camera_space(const Vec3<T>& p, const Mat3<T>& cov_c, T fx, T fy, T cx, T cy,
                                           T width, T height, int camera_model) {
    Projection2D<T> out;
    if (camera_model == kOrtho) {
        out.mean_x = fx * p.x + cx;
        out.mean_y = fy * p.y + cy;
        // clang-format off: a row of J per line
        out.J[0][0] = fx; out.J[0][1] = T(0); out.J[0][2] = T(0);
        out.J[1][0] = T(0); out.J[1][1] = fy; out.J[1][2] = T(0);
        // clang-format on
        out.ux = {T(0), 0};
        out.uy = {T(0), 0};
    } else {
        T rz = T(1) / p.z;
        out.ux = clamp_view_ratio(p.x * rz, fx, cx, width);
        out.uy = clamp_view_ratio(p.y * rz, fy, cy, height);
        out.mean_x = fx * p.x * rz + cx;
        out.mean_y = fy * p.y * rz + cy;
        // clang-format off: a row of J per line
        out.J[0][0] = fx * rz; out.J[0][1] = T(0); out.J[0][2] = -fx * out.ux.value * rz;
        out.J[1][0] = T(0); out.J[1][1] = fy * rz; out.J[1][2] = -fy * out.uy.value * rz;
        // clang-format on
    }
    // cov2d = J cov_c J^T
    T JS[2][3];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            JS[i][j] =
                out.J[i][0] * cov_c.m[0][j] + out.J[i][1] * cov_c.m[1][j] + out.J[i][2] * cov_c.m[2][j];
    out.cov.a = JS[0][0] * out.J[0][0] + JS[0][1] * out.J[0][1] + JS[0][2] * out.J[0][2];
    out.cov.b = JS[0][0] * out.J[1][0] + JS[0][1] * out.J[1][1] + JS[0][2] * out.J[1][2];
    out.cov.c = JS[1][0] * out.J[1][0] + JS[1][1] * out.J[1][1] + JS[1][2] * out.J[1][2];
    return out;
}

// VJP of project_camera_space. v_cov is the gradient of (a, b, c). Accumulates into v_p, v_cov_c
// (full symmetric 3x3 gradient) and v_K = (fx, fy, cx, cy).
template <typename T>
GS_HD void project_camera_space_vjp(const Vec3<T>& p, const Mat3<T>& cov_c, T fx, T fy, T cx, T cy,
                                    int camera_model, const Projection2D<T>& proj, T v_mean_x, T v_mean_y,
                                    const Sym2<T>& v_cov, Vec3<T>& v_p, Mat3<T>& v_cov_c, T* v_K) {
    const T(*J)[3] = proj.J;
    T G[2][2] = {{v_cov.a, T(0.5) * v_cov.b}, {T(0.5) * v_cov.b, v_cov.c}};
    // v_cov_c += J^T G J
    T GJ[2][3];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) GJ[i][j] = G[i][0] * J[0][j] + G[i][1] * J[1][j];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) v_cov_c.m[i][j] += J[0][i] * GJ[0][j] + J[1][i] * GJ[1][j];
    // v_J = 2 G J cov_c
    T vJ[2][3];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            vJ[i][j] =
                T(2) * (GJ[i][0] * cov_c.m[0][j] + GJ[i][1] * cov_c.m[1][j] + GJ[i][2] * cov_c.m[2][j]);

    if (camera_model == kOrtho) {
        v_p.x += fx * v_mean_x;
        v_p.y += fy * v_mean_y;
        v_K[0] += p.x * v_mean_x + vJ[0][0];
        v_K[1] += p.y * v_mean_y + vJ[1][1];
        v_K[2] += v_mean_x;
        v_K[3] += v_mean_y;
        return;
    }
    T rz = T(1) / p.z, rz2 = rz * rz;
    // mean2d = (fx x/z + cx, fy y/z + cy)
    v_p.x += fx * rz * v_mean_x;
    v_p.y += fy * rz * v_mean_y;
    v_p.z -= (fx * p.x * v_mean_x + fy * p.y * v_mean_y) * rz2;
    v_K[0] += p.x * rz * v_mean_x;
    v_K[1] += p.y * rz * v_mean_y;
    v_K[2] += v_mean_x;
    v_K[3] += v_mean_y;
    // J00 = fx/z, J11 = fy/z
    v_K[0] += vJ[0][0] * rz;
    v_K[1] += vJ[1][1] * rz;
    v_p.z -= (fx * vJ[0][0] + fy * vJ[1][1]) * rz2;
    // J02 = -fx u/z with u = clamp(x/z) whose bounds depend on (f, c); same for J12.
    const T f[2] = {fx, fy};
    const T pxy[2] = {p.x, p.y};
    const ClampedRatio<T> u[2] = {proj.ux, proj.uy};
    for (int k = 0; k < 2; ++k) {
        T vJk = vJ[k][2];
        T v_u = -f[k] * rz * vJk;
        v_K[k] -= u[k].value * rz * vJk;
        v_p.z += f[k] * u[k].value * rz2 * vJk;
        if (u[k].side == 0) {
            if (k == 0)
                v_p.x += v_u * rz;
            else
                v_p.y += v_u * rz;
            v_p.z -= pxy[k] * rz2 * v_u;
        } else {  // u = (size*(1+margin/2) - c)/f or -(c + size*margin/2)/f
            v_K[2 + k] -= v_u / f[k];
            v_K[k] -= u[k].value / f[k] * v_u;
        }
    }
}

// eps2d dilation, the antialiasing compensation sqrt(det(cov)/det(cov + eps I)), and the conic.
template <typename T> struct Conic {
    Sym2<T> conic;
    T det;  // of the dilated covariance; <= 0 means degenerate
    T compensation;
};

template <typename T> GS_HD Conic<T> dilate_and_invert(const Sym2<T>& cov, T eps2d) {
    Conic<T> out;
    T a = cov.a + eps2d, c = cov.c + eps2d, b = cov.b;
    T det_orig = cov.a * cov.c - b * b;
    out.det = a * c - b * b;
    T ratio = det_orig / out.det;
    out.compensation = ratio > T(0) ? std::sqrt(ratio) : T(0);
    T inv_det = T(1) / out.det;
    out.conic = {c * inv_det, -b * inv_det, a * inv_det};
    return out;
}

// VJP of dilate_and_invert: gradient of the undilated covariance (a, b, c) from the gradients of
// the conic and of the compensation.
template <typename T>
GS_HD Sym2<T> dilate_and_invert_vjp(const Sym2<T>& cov, T eps2d, const Conic<T>& fwd, const Sym2<T>& v_conic,
                                    T v_compensation) {
    // inverse: V = -M G M with M the conic as a matrix and G its symmetric gradient
    const Sym2<T>& M = fwd.conic;
    T g00 = v_conic.a, g01 = T(0.5) * v_conic.b, g11 = v_conic.c;
    T GM00 = g00 * M.a + g01 * M.b, GM01 = g00 * M.b + g01 * M.c;
    T GM10 = g01 * M.a + g11 * M.b, GM11 = g01 * M.b + g11 * M.c;
    Sym2<T> v;
    v.a = -(M.a * GM00 + M.b * GM10);
    v.b = -T(2) * (M.a * GM01 + M.b * GM11);
    v.c = -(M.b * GM01 + M.c * GM11);
    if (fwd.compensation > T(0)) {
        T a = cov.a + eps2d, c = cov.c + eps2d, b = cov.b;
        T det_orig = cov.a * cov.c - b * b;
        T inv_det2 = T(1) / (fwd.det * fwd.det);
        T scale = T(0.5) / fwd.compensation * v_compensation;
        v.a += scale * (cov.c * fwd.det - det_orig * c) * inv_det2;
        v.c += scale * (cov.a * fwd.det - det_orig * a) * inv_det2;
        v.b += scale * (T(2) * b * (det_orig - fwd.det)) * inv_det2;
    }
    return v;
}

// ---------------------------------------------------------------------------------------------
// The whole projection of one Gaussian into one camera, and its VJP.
// viewmat: row-major 4x4 world->camera; K: row-major 3x3 (kKFx, kKFy, kKCx, kKCy above).
template <typename T> struct ProjectedGaussian {
    bool visible;
    int32_t radius_x, radius_y;
    T mean_x, mean_y, depth;
    Sym2<T> conic;
    T compensation;
};

template <typename T> struct CameraSpaceGaussian {
    Mat3<T> R;      // camera rotation
    Mat3<T> Rq;     // the Gaussian's rotation
    Mat3<T> M;      // Rq S, the covariance's factor
    Mat3<T> cov;    // world covariance
    Mat3<T> cov_c;  // camera covariance
    Vec3<T> p;      // camera-space mean
};

template <typename T>
GS_HD CameraSpaceGaussian<T> to_camera_space(const T* mean, const T* quat, const T* scale, const T* viewmat) {
    CameraSpaceGaussian<T> g;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g.R.m[i][j] = viewmat[i * 4 + j];
    Vec3<T> m = {mean[0], mean[1], mean[2]};
    g.p = matvec(g.R, m);
    g.p.x += viewmat[3];
    g.p.y += viewmat[7];
    g.p.z += viewmat[11];
    g.Rq = quat_to_rotmat(quat);
    g.cov = covariance_from(g.Rq, scale, &g.M);
    g.cov_c = matmul(matmul(g.R, g.cov), transpose(g.R));
    return g;
}

template <typename T>
GS_HD ProjectedGaussian<T> project_gaussian(const T* mean, const T* quat, const T* scale, const T* opacity,
                                            const T* viewmat, const T* K, int width, int height, T eps2d,
                                            T near_plane, T far_plane, T radius_clip, bool calc_compensation,
                                            int camera_model) {
    ProjectedGaussian<T> out;
    out.visible = false;
    CameraSpaceGaussian<T> g = to_camera_space(mean, quat, scale, viewmat);
    if (!(g.p.z >= near_plane && g.p.z <= far_plane)) return out;  // also rejects NaN depth
    Projection2D<T> proj = project_camera_space(g.p, g.cov_c, K[kKFx], K[kKFy], K[kKCx], K[kKCy], T(width),
                                                T(height), camera_model);
    Conic<T> con = dilate_and_invert(proj.cov, eps2d);
    if (!(con.det > T(0))) return out;
    T extend = T(kMaxExtent);
    if (opacity) {
        T op = *opacity * (calc_compensation ? con.compensation : T(1));
        if (op < T(kAlphaThreshold)) return out;
        T tight = std::sqrt(T(2) * std::log(op / T(kAlphaThreshold)));
        extend = tight < extend ? tight : extend;
    }
    T radius_x = std::ceil(extend * std::sqrt(proj.cov.a + eps2d));
    T radius_y = std::ceil(extend * std::sqrt(proj.cov.c + eps2d));
    if (radius_x <= radius_clip && radius_y <= radius_clip) return out;
    if (proj.mean_x + radius_x <= T(0) || proj.mean_x - radius_x >= T(width) ||
        proj.mean_y + radius_y <= T(0) || proj.mean_y - radius_y >= T(height))
        return out;
    out.visible = true;
    out.radius_x = static_cast<int32_t>(radius_x);
    out.radius_y = static_cast<int32_t>(radius_y);
    out.mean_x = proj.mean_x;
    out.mean_y = proj.mean_y;
    out.depth = g.p.z;
    out.conic = con.conic;
    out.compensation = con.compensation;
    return out;
}

// Gradients of project_gaussian's differentiable outputs (mean2d, depth, conic, compensation) for a
// visible Gaussian. v_mean, v_quat, v_scale, v_viewmat (4x4, row-major) and v_K (fx, fy, cx, cy) are
// accumulated into.
template <typename T>
GS_HD void project_gaussian_vjp(const T* mean, const T* quat, const T* scale, const T* viewmat, const T* K,
                                int width, int height, T eps2d, int camera_model, T v_mean_x, T v_mean_y,
                                T v_depth, const Sym2<T>& v_conic, T v_compensation, T* v_mean, T* v_quat,
                                T* v_scale, T* v_viewmat, T* v_K) {
    CameraSpaceGaussian<T> g = to_camera_space(mean, quat, scale, viewmat);
    Projection2D<T> proj = project_camera_space(g.p, g.cov_c, K[kKFx], K[kKFy], K[kKCx], K[kKCy], T(width),
                                                T(height), camera_model);
    Conic<T> con = dilate_and_invert(proj.cov, eps2d);
    Sym2<T> v_cov2d = dilate_and_invert_vjp(proj.cov, eps2d, con, v_conic, v_compensation);

    Vec3<T> v_p = {T(0), T(0), v_depth};
    Mat3<T> v_cov_c = mat3_zero<T>();
    project_camera_space_vjp(g.p, g.cov_c, K[kKFx], K[kKFy], K[kKCx], K[kKCy], camera_model, proj, v_mean_x,
                             v_mean_y, v_cov2d, v_p, v_cov_c, v_K);

    // cov_c = R cov R^T: v_cov = R^T v_cov_c R, v_R += 2 v_cov_c R cov
    Mat3<T> v_cov = matmul(matmul(transpose(g.R), v_cov_c), g.R);
    Mat3<T> v_R = matmul(matmul(v_cov_c, g.R), g.cov);
    // p = R mean + t
    Vec3<T> v_world = matTvec(g.R, v_p);
    const T vp[3] = {v_p.x, v_p.y, v_p.z};
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) v_viewmat[i * 4 + j] += T(2) * v_R.m[i][j] + vp[i] * mean[j];
        v_viewmat[i * 4 + 3] += vp[i];
    }
    v_mean[0] += v_world.x;
    v_mean[1] += v_world.y;
    v_mean[2] += v_world.z;
    covariance_vjp(quat, scale, g.Rq, g.M, v_cov, v_quat, v_scale);
}

// ---------------------------------------------------------------------------------------------
// Spherical harmonics (real basis of Inria 3DGS), degree 0..3, on a normalised direction.
GS_HD constexpr int sh_num_bases(int degree) { return (degree + 1) * (degree + 1); }

template <typename T> GS_HD void sh_basis(int degree, T x, T y, T z, T* b) {
    b[0] = T(kShC0);
    if (degree < 1) return;
    b[1] = -T(kShC1) * y;
    b[2] = T(kShC1) * z;
    b[3] = -T(kShC1) * x;
    if (degree < 2) return;
    T xx = x * x, yy = y * y, zz = z * z;
    b[4] = T(kShC20) * x * y;
    b[5] = T(kShC21) * y * z;
    b[6] = T(kShC22) * (T(2) * zz - xx - yy);
    b[7] = T(kShC23) * x * z;
    b[8] = T(kShC24) * (xx - yy);
    if (degree < 3) return;
    b[9] = T(kShC30) * y * (T(3) * xx - yy);
    b[10] = T(kShC31) * x * y * z;
    b[11] = T(kShC32) * y * (T(4) * zz - xx - yy);
    b[12] = T(kShC33) * z * (T(2) * zz - T(3) * xx - T(3) * yy);
    b[13] = T(kShC34) * x * (T(4) * zz - xx - yy);
    b[14] = T(kShC35) * z * (xx - yy);
    b[15] = T(kShC36) * x * (xx - T(3) * yy);
}

// Gradient of sum_k w[k] * basis_k(x, y, z) with respect to (x, y, z).
template <typename T> GS_HD Vec3<T> sh_basis_vjp(int degree, T x, T y, T z, const T* w) {
    Vec3<T> g = {T(0), T(0), T(0)};
    if (degree < 1) return g;
    const T c1 = T(kShC1);
    g.x += -c1 * w[3];
    g.y += -c1 * w[1];
    g.z += c1 * w[2];
    if (degree < 2) return g;
    T xx = x * x, yy = y * y, zz = z * z;
    const T c20 = T(kShC20), c21 = T(kShC21), c22 = T(kShC22), c23 = T(kShC23), c24 = T(kShC24);
    g.x += c20 * y * w[4] - T(2) * c22 * x * w[6] + c23 * z * w[7] + T(2) * c24 * x * w[8];
    g.y += c20 * x * w[4] + c21 * z * w[5] - T(2) * c22 * y * w[6] - T(2) * c24 * y * w[8];
    g.z += c21 * y * w[5] + T(4) * c22 * z * w[6] + c23 * x * w[7];
    if (degree < 3) return g;
    const T c30 = T(kShC30), c31 = T(kShC31), c32 = T(kShC32), c33 = T(kShC33), c34 = T(kShC34),
            c35 = T(kShC35), c36 = T(kShC36);
    g.x += c30 * T(6) * x * y * w[9] + c31 * y * z * w[10] - c32 * T(2) * x * y * w[11] -
           c33 * T(6) * x * z * w[12] + c34 * (T(4) * zz - T(3) * xx - yy) * w[13] +
           c35 * T(2) * x * z * w[14] + c36 * (T(3) * xx - T(3) * yy) * w[15];
    g.y += c30 * (T(3) * xx - T(3) * yy) * w[9] + c31 * x * z * w[10] +
           c32 * (T(4) * zz - xx - T(3) * yy) * w[11] - c33 * T(6) * y * z * w[12] -
           c34 * T(2) * x * y * w[13] - c35 * T(2) * y * z * w[14] - c36 * T(6) * x * y * w[15];
    g.z += c31 * x * y * w[10] + c32 * T(8) * y * z * w[11] +
           c33 * (T(6) * zz - T(3) * xx - T(3) * yy) * w[12] + c34 * T(8) * x * z * w[13] +
           c35 * (xx - yy) * w[14];
    return g;
}

// ---------------------------------------------------------------------------------------------
// Alpha blending of one Gaussian at one pixel. d = mean2d - pixel centre. The Gaussian's parameters
// are scalars T; the per-pixel values V are T too, or SIMD vectors of T (GCC vector extensions) on the
// CPU, which evaluates a row of pixels at once: these functions use only arithmetic, comparisons and
// ?: so that the same source works for both.
template <typename T, typename V> GS_HD V splat_sigma(const Sym2<T>& conic, V dx, V dy) {
    return T(0.5) * (conic.a * dx * dx + conic.c * dy * dy) + conic.b * dx * dy;
}

// exp for the blending weights: the GPU's fast exp; the CPU kernels use their own SIMD polynomial.
GS_HD float splat_exp(float x) {
#if defined(__CUDA_ARCH__)
    return __expf(x);
#else
    return std::exp(x);
#endif
}
GS_HD double splat_exp(double x) { return std::exp(x); }

template <typename T, typename V> GS_HD V splat_alpha(T opacity, V vis) {
    V alpha = opacity * vis;
    return alpha < T(kMaxAlpha) ? alpha : V{} + T(kMaxAlpha);
}

// Whether the Gaussian takes part in blending at a pixel (a bool, or a lane mask for vectors).
template <typename T, typename V> GS_HD auto splat_contributes(V sigma, V alpha) {
    return (sigma >= T(0)) & (alpha >= T(kAlphaThreshold));  // `&`: no branches in pixel loops
}

// VJP of alpha = min(0.99, opacity * exp(-sigma)) into the conic, mean2d and opacity.
template <typename V> struct SplatGrad {
    V v_mean_x, v_mean_y, v_conic_a, v_conic_b, v_conic_c, v_opacity;
};

template <typename T, typename V>
GS_HD SplatGrad<V> splat_alpha_vjp(const Sym2<T>& conic, T opacity, V dx, V dy, V vis, V v_alpha) {
    const auto clamped = opacity * vis > T(kMaxAlpha);
    const V v_sigma = clamped ? V{} : -opacity * vis * v_alpha;
    SplatGrad<V> g;
    g.v_opacity = clamped ? V{} : vis * v_alpha;
    g.v_conic_a = T(0.5) * v_sigma * dx * dx;
    g.v_conic_b = v_sigma * dx * dy;
    g.v_conic_c = T(0.5) * v_sigma * dy * dy;
    g.v_mean_x = v_sigma * (conic.a * dx + conic.b * dy);
    g.v_mean_y = v_sigma * (conic.b * dx + conic.c * dy);
    return g;
}

}  // namespace gsplat_py
