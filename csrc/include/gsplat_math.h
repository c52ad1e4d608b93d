// The math of Gaussian splatting, shared by the CPU and CUDA backends: quaternion to rotation, 3D
// covariance, EWA projection (pinhole, orthographic and fisheye) with eps2d dilation and antialiasing
// compensation, spherical harmonics up to degree 4, the alpha-blending step, and the hand-written
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

// Always inlined, on the CPU as on the GPU: GCC left large helpers such as to_camera_space out of line,
// returning their 3x3 matrices through memory, which made the CPU projection 1.5x slower.
#if defined(__CUDACC__)
#define GS_HD __host__ __device__ __forceinline__
#else
#define GS_HD inline __attribute__((always_inline))
#endif

namespace gsplat_py {

// ---------------------------------------------------------------------------------------------
// Constants of the field (Inria 3DGS and gsplat agree on them).
// Doubles, cast to the kernel's type where used, so the float64 kernels use the exact values.
constexpr double kAlphaThreshold = 1.0 / 255.0;  // contributions below this are skipped
constexpr double kMaxAlpha =
    0.999;  // alpha is clamped here (keeps 1/(1-alpha) finite); gsplat's (Inria: 0.99)
constexpr double kTransmittanceMin = 1e-4;  // a pixel stops when T would fall to this
constexpr double kMaxExtent = 3.33;         // bounding box half-size in standard deviations
constexpr double kClipMargin = 0.3;         // how far outside the view (in tan fov) J is evaluated

constexpr double kShC0 = 0.28209479177387814;
constexpr double kShC1 = 0.4886025119029199;
// Scalars rather than arrays: constexpr arrays are not usable in CUDA device code.
constexpr double kShC20 = 1.0925484305920792, kShC21 = -1.0925484305920792, kShC22 = 0.31539156525252005,
                 kShC23 = -1.0925484305920792, kShC24 = 0.5462742152960396;
constexpr double kShC30 = -0.5900435899266435, kShC31 = 2.890611442640554, kShC32 = -0.4570457994644658,
                 kShC33 = 0.3731763325901154, kShC34 = -0.4570457994644658, kShC35 = 1.445305721320277,
                 kShC36 = -0.5900435899266435;
constexpr double kShC40 = 2.5033429417967046, kShC41 = -1.7701307697799304, kShC42 = 0.9461746957575601,
                 kShC43 = -0.6690465435572892, kShC44 = 0.10578554691520431, kShC45 = -0.6690465435572892,
                 kShC46 = 0.47308734787878004, kShC47 = -1.7701307697799304, kShC48 = 0.6258357354491761;

enum CameraModel : int { kPinhole = 0, kOrtho = 1, kFisheye = 2 };

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
// Fisheye lens (OpenCV's fisheye model, COLMAP's OPENCV_FISHEYE; equidistant when k = 0). On the
// normalised image plane (a, b) = (x, y) / z, with q = a^2 + b^2 and theta = atan(sqrt(q)) the angle off
// the axis, the point moves to (a, b) g(q), g = theta_d / sqrt(q),
// theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8).
// g and its first two derivatives in q are smooth at q = 0, where their closed forms cancel: below
// kFisheyeSeriesLimit A(q) = atan(sqrt(q)) / sqrt(q) comes from its series, sum_n (-q)^n / (2n + 1)
// (16 terms: below 1e-15 relative for the value and both derivatives there).
constexpr double kFisheyeSeriesLimit = 0.0625;
constexpr int kFisheyeSeriesTerms = 16;
constexpr int kFisheyeCoeffs = 4;  // k1..k4

template <typename T> struct RadialScale {
    T g, dg, d2g;  // g(q) and its derivatives in q
};

template <typename T> GS_HD RadialScale<T> fisheye_scale(T q, const T* k) {
    T A, dA, d2A;  // atan(sqrt(q)) / sqrt(q) and its derivatives
    if (q < T(kFisheyeSeriesLimit)) {
        A = dA = d2A = T(0);
        for (int n = kFisheyeSeriesTerms - 1; n >= 0; --n) {
            const T coeff = T(n % 2 ? -1 : 1) / T(2 * n + 1);
            A = A * q + coeff;
            if (n >= 1) dA = dA * q + T(n) * coeff;
            if (n >= 2) d2A = d2A * q + T(n * (n - 1)) * coeff;
        }
    } else {
        const T t = std::sqrt(q), inv_1q = T(1) / (T(1) + q);
        A = std::atan(t) / t;
        dA = (inv_1q - A) / (T(2) * q);
        d2A = (-inv_1q * inv_1q - T(3) * dA) / (T(2) * q);
    }
    // B = theta^2 = q A^2, and the polynomial P(B) = 1 + k1 B + k2 B^2 + k3 B^3 + k4 B^4: g = A P(B).
    const T B = q * A * A, dB = A * A + T(2) * q * A * dA,
            d2B = T(4) * A * dA + T(2) * q * (dA * dA + A * d2A);
    const T k1 = k ? k[0] : T(0), k2 = k ? k[1] : T(0), k3 = k ? k[2] : T(0), k4 = k ? k[3] : T(0);
    const T P = T(1) + B * (k1 + B * (k2 + B * (k3 + B * k4)));
    const T dP = k1 + B * (T(2) * k2 + B * (T(3) * k3 + T(4) * k4 * B));
    const T d2P = T(2) * k2 + B * (T(6) * k3 + T(12) * k4 * B);
    RadialScale<T> s;
    s.g = A * P;
    s.dg = dA * P + A * dP * dB;
    s.d2g = d2A * P + T(2) * dA * dP * dB + A * (d2P * dB * dB + dP * d2B);
    return s;
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

// A camera: world->camera matrix (row-major 4x4), K (row-major 3x3, kKFx... above), the lens model, and
// for the fisheye model its radial coefficients k1..k4 (null: equidistant).
template <typename T> struct CameraInput {
    const T* viewmat;
    const T* K;
    const T* radial;
    int model;
};

template <typename T> struct Projection2D {
    T mean_x, mean_y;
    T J[2][3];
    Sym2<T> cov;             // J Sigma_c J^T (before eps2d)
    ClampedRatio<T> ux, uy;  // pinhole
    T a, b;                  // fisheye: the normalised point
    RadialScale<T> radial;   // fisheye: g(a^2 + b^2)
};

template <typename T>
GS_HD Projection2D<T> project_camera_space(const Vec3<T>& p, const Mat3<T>& cov_c, const CameraInput<T>& cam,
                                           T width, T height) {
    const T fx = cam.K[kKFx], fy = cam.K[kKFy], cx = cam.K[kKCx], cy = cam.K[kKCy];
    Projection2D<T> out;
    out.ux = {T(0), 0};
    out.uy = {T(0), 0};
    out.a = out.b = T(0);
    out.radial = {T(1), T(0), T(0)};
    if (cam.model == kOrtho) {
        out.mean_x = fx * p.x + cx;
        out.mean_y = fy * p.y + cy;
        // clang-format off: a row of J per line
        out.J[0][0] = fx; out.J[0][1] = T(0); out.J[0][2] = T(0);
        out.J[1][0] = T(0); out.J[1][1] = fy; out.J[1][2] = T(0);
        // clang-format on
    } else if (cam.model == kFisheye) {
        const T rz = T(1) / p.z, a = p.x * rz, b = p.y * rz, q = a * a + b * b;
        const RadialScale<T> s = fisheye_scale(q, cam.radial);
        out.a = a;
        out.b = b;
        out.radial = s;
        out.mean_x = fx * a * s.g + cx;
        out.mean_y = fy * b * s.g + cy;
        // d(mean)/d(a, b) times d(a, b)/d(x, y, z) = [[1, 0, -a], [0, 1, -b]] / z
        const T cross = T(2) * a * b * s.dg, h = s.g + T(2) * q * s.dg;
        // clang-format off: a row of J per line
        out.J[0][0] = fx * (s.g + T(2) * a * a * s.dg) * rz; out.J[0][1] = fx * cross * rz;
        out.J[0][2] = -fx * a * h * rz;
        out.J[1][0] = fy * cross * rz; out.J[1][1] = fy * (s.g + T(2) * b * b * s.dg) * rz;
        out.J[1][2] = -fy * b * h * rz;
        // clang-format on
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

// The fisheye part of project_camera_space_vjp: the gradients of the mean and of J (vJ) into v_p and
// v_K. J = diag(fx, fy) E / z with E a function of the normalised point (a, b); the derivatives of E
// in a and b use g'' (fisheye_scale).
template <typename T>
GS_HD void fisheye_vjp(const Vec3<T>& p, T fx, T fy, const Projection2D<T>& proj, T v_mean_x, T v_mean_y,
                       const T (&vJ)[2][3], Vec3<T>& v_p, T* v_K) {
    const T rz = T(1) / p.z, a = proj.a, b = proj.b, q = a * a + b * b;
    const T g = proj.radial.g, dg = proj.radial.dg, d2g = proj.radial.d2g;
    const T h = g + T(2) * q * dg, hq = T(3) * dg + T(2) * q * d2g;  // hq = dh/dq
    const T E[2][3] = {{g + T(2) * a * a * dg, T(2) * a * b * dg, -a * h},
                       {T(2) * a * b * dg, g + T(2) * b * b * dg, -b * h}};
    // dE/da and dE/db
    const T Ea[2][3] = {
        {T(6) * a * dg + T(4) * a * a * a * d2g, T(2) * b * dg + T(4) * a * a * b * d2g,
         -(h + T(2) * a * a * hq)},
        {T(2) * b * dg + T(4) * a * a * b * d2g, T(2) * a * dg + T(4) * a * b * b * d2g, -T(2) * a * b * hq}};
    const T Eb[2][3] = {
        {T(2) * b * dg + T(4) * a * a * b * d2g, T(2) * a * dg + T(4) * a * b * b * d2g, -T(2) * a * b * hq},
        {T(2) * a * dg + T(4) * a * b * b * d2g, T(6) * b * dg + T(4) * b * b * b * d2g,
         -(h + T(2) * b * b * hq)}};
    const T f[2] = {fx, fy};
    // mean = (fx a g + cx, fy b g + cy): d/da = (fx E00, fy E10), d/db = (fx E01, fy E11)
    T v_a = fx * E[0][0] * v_mean_x + fy * E[1][0] * v_mean_y;
    T v_b = fx * E[0][1] * v_mean_x + fy * E[1][1] * v_mean_y;
    T v_z = T(0);
    v_K[0] += a * g * v_mean_x;
    v_K[1] += b * g * v_mean_y;
    v_K[2] += v_mean_x;
    v_K[3] += v_mean_y;
    for (int i = 0; i < 2; ++i) {
        T row_a = T(0), row_b = T(0), row_e = T(0);
        for (int j = 0; j < 3; ++j) {
            row_a += vJ[i][j] * Ea[i][j];
            row_b += vJ[i][j] * Eb[i][j];
            row_e += vJ[i][j] * E[i][j];
        }
        v_a += f[i] * rz * row_a;
        v_b += f[i] * rz * row_b;
        v_K[i] += rz * row_e;
        v_z -= f[i] * rz * rz * row_e;  // J is proportional to 1/z at fixed (a, b)
    }
    // (a, b) = (x, y) / z
    v_p.x += v_a * rz;
    v_p.y += v_b * rz;
    v_p.z += v_z - (a * v_a + b * v_b) * rz;
}

// VJP of project_camera_space. v_cov is the gradient of (a, b, c). Accumulates into v_p, v_cov_c
// (full symmetric 3x3 gradient) and v_K = (fx, fy, cx, cy).
template <typename T>
GS_HD void project_camera_space_vjp(const Vec3<T>& p, const Mat3<T>& cov_c, const CameraInput<T>& cam,
                                    const Projection2D<T>& proj, T v_mean_x, T v_mean_y, const Sym2<T>& v_cov,
                                    Vec3<T>& v_p, Mat3<T>& v_cov_c, T* v_K) {
    const T fx = cam.K[kKFx], fy = cam.K[kKFy];
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

    if (cam.model == kOrtho) {
        v_p.x += fx * v_mean_x;
        v_p.y += fy * v_mean_y;
        v_K[0] += p.x * v_mean_x + vJ[0][0];
        v_K[1] += p.y * v_mean_y + vJ[1][1];
        v_K[2] += v_mean_x;
        v_K[3] += v_mean_y;
        return;
    }
    if (cam.model == kFisheye) {
        fisheye_vjp(p, fx, fy, proj, v_mean_x, v_mean_y, vJ, v_p, v_K);
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
// A Gaussian: its mean, and its world covariance either from a quaternion and scales (covar null) or
// given as the upper triangle (xx, xy, xz, yy, yz, zz) of the symmetric matrix (quat and scale null).
template <typename T> struct GaussianInput {
    const T* mean;
    const T* quat;
    const T* scale;
    const T* covar;
};
constexpr int kCovarValues = 6;

template <typename T> struct ProjectedGaussian {
    bool visible;
    int32_t radius_x, radius_y;
    T mean_x, mean_y, depth;
    Sym2<T> conic;
    T compensation;
};

template <typename T> struct CameraSpaceGaussian {
    Mat3<T> R;      // camera rotation
    Mat3<T> Rq;     // the Gaussian's rotation (quat input)
    Mat3<T> M;      // Rq S, the covariance's factor (quat input)
    Mat3<T> cov;    // world covariance
    Mat3<T> cov_c;  // camera covariance
    Vec3<T> p;      // camera-space mean
};

template <typename T>
GS_HD CameraSpaceGaussian<T> to_camera_space(const GaussianInput<T>& gauss, const T* viewmat) {
    CameraSpaceGaussian<T> g;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g.R.m[i][j] = viewmat[i * 4 + j];
    Vec3<T> m = {gauss.mean[0], gauss.mean[1], gauss.mean[2]};
    g.p = matvec(g.R, m);
    g.p.x += viewmat[3];
    g.p.y += viewmat[7];
    g.p.z += viewmat[11];
    if (gauss.covar) {
        const T* c = gauss.covar;
        // clang-format off: a row per line
        g.cov.m[0][0] = c[0]; g.cov.m[0][1] = c[1]; g.cov.m[0][2] = c[2];
        g.cov.m[1][0] = c[1]; g.cov.m[1][1] = c[3]; g.cov.m[1][2] = c[4];
        g.cov.m[2][0] = c[2]; g.cov.m[2][1] = c[4]; g.cov.m[2][2] = c[5];
        // clang-format on
    } else {
        g.Rq = quat_to_rotmat(gauss.quat);
        g.cov = covariance_from(g.Rq, gauss.scale, &g.M);
    }
    g.cov_c = matmul(matmul(g.R, g.cov), transpose(g.R));
    return g;
}

// The camera must see the Gaussian's centre: within the depth range, and in front of a fisheye lens
// (whose model is defined on the normalised plane, z > 0).
template <typename T> GS_HD bool depth_visible(const Vec3<T>& p, int model, T near_plane, T far_plane) {
    if (!(p.z >= near_plane && p.z <= far_plane)) return false;  // also rejects NaN depth
    return model != kFisheye || p.z > T(0);
}

// A camera-space Gaussian on the image plane: what the tests after the depth test and the outputs need.
template <typename T> struct Footprint {
    T mean_x, mean_y;
    Sym2<T> cov;  // before eps2d
    Conic<T> con;
};

template <typename T>
GS_HD Footprint<T> footprint(const CameraSpaceGaussian<T>& g, const CameraInput<T>& cam, int width,
                             int height, T eps2d) {
    const Projection2D<T> proj = project_camera_space(g.p, g.cov_c, cam, T(width), T(height));
    return {proj.mean_x, proj.mean_y, proj.cov, dilate_and_invert(proj.cov, eps2d)};
}

// The outputs of a Gaussian at `depth` that passed the depth test: invisible when its footprint is
// degenerate, too faint, smaller than radius_clip or outside the image.
template <typename T>
GS_HD ProjectedGaussian<T> bound_footprint(const Footprint<T>& f, T depth, const T* opacity, int width,
                                           int height, T eps2d, T radius_clip, bool calc_compensation) {
    ProjectedGaussian<T> out;
    out.visible = false;
    if (!(f.con.det > T(0))) return out;
    T extend = T(kMaxExtent);
    if (opacity) {
        T op = *opacity * (calc_compensation ? f.con.compensation : T(1));
        if (op < T(kAlphaThreshold)) return out;
        T tight = std::sqrt(T(2) * std::log(op / T(kAlphaThreshold)));
        extend = tight < extend ? tight : extend;
    }
    T radius_x = std::ceil(extend * std::sqrt(f.cov.a + eps2d));
    T radius_y = std::ceil(extend * std::sqrt(f.cov.c + eps2d));
    if (radius_x <= radius_clip && radius_y <= radius_clip) return out;
    if (f.mean_x + radius_x <= T(0) || f.mean_x - radius_x >= T(width) || f.mean_y + radius_y <= T(0) ||
        f.mean_y - radius_y >= T(height))
        return out;
    out.visible = true;
    out.radius_x = static_cast<int32_t>(radius_x);
    out.radius_y = static_cast<int32_t>(radius_y);
    out.mean_x = f.mean_x;
    out.mean_y = f.mean_y;
    out.depth = depth;
    out.conic = f.con.conic;
    out.compensation = f.con.compensation;
    return out;
}

template <typename T>
GS_HD ProjectedGaussian<T> project_gaussian(const GaussianInput<T>& gauss, const T* opacity,
                                            const CameraInput<T>& cam, int width, int height, T eps2d,
                                            T near_plane, T far_plane, T radius_clip,
                                            bool calc_compensation) {
    const CameraSpaceGaussian<T> g = to_camera_space(gauss, cam.viewmat);
    if (!depth_visible(g.p, cam.model, near_plane, far_plane)) {
        ProjectedGaussian<T> out;
        out.visible = false;
        return out;
    }
    return bound_footprint(footprint(g, cam, width, height, eps2d), g.p.z, opacity, width, height, eps2d,
                           radius_clip, calc_compensation);
}

// The gradients of one projected Gaussian's outputs, and where its input gradients are accumulated:
// v_quat and v_scale (quat input) or v_covar (covariance input, upper triangle: an off-diagonal value
// gets both of its entries' gradients); v_viewmat (4x4, row-major) and v_K (fx, fy, cx, cy).
template <typename T> struct ProjectedGradient {
    T v_mean_x, v_mean_y, v_depth;
    Sym2<T> v_conic;
    T v_compensation;
};
template <typename T> struct GaussianGradient {
    T* v_mean;
    T* v_quat;
    T* v_scale;
    T* v_covar;
};

// Gradients of project_gaussian's differentiable outputs (mean2d, depth, conic, compensation) for a
// visible Gaussian, accumulated into `out`, v_viewmat and v_K.
template <typename T>
GS_HD void project_gaussian_vjp(const GaussianInput<T>& gauss, const CameraInput<T>& cam, int width,
                                int height, T eps2d, const ProjectedGradient<T>& grad,
                                const GaussianGradient<T>& out, T* v_viewmat, T* v_K) {
    CameraSpaceGaussian<T> g = to_camera_space(gauss, cam.viewmat);
    Projection2D<T> proj = project_camera_space(g.p, g.cov_c, cam, T(width), T(height));
    Conic<T> con = dilate_and_invert(proj.cov, eps2d);
    Sym2<T> v_cov2d = dilate_and_invert_vjp(proj.cov, eps2d, con, grad.v_conic, grad.v_compensation);

    Vec3<T> v_p = {T(0), T(0), grad.v_depth};
    Mat3<T> v_cov_c = mat3_zero<T>();
    project_camera_space_vjp(g.p, g.cov_c, cam, proj, grad.v_mean_x, grad.v_mean_y, v_cov2d, v_p, v_cov_c,
                             v_K);

    // cov_c = R cov R^T: v_cov = R^T v_cov_c R, v_R += 2 v_cov_c R cov
    Mat3<T> v_cov = matmul(matmul(transpose(g.R), v_cov_c), g.R);
    Mat3<T> v_R = matmul(matmul(v_cov_c, g.R), g.cov);
    // p = R mean + t
    Vec3<T> v_world = matTvec(g.R, v_p);
    const T vp[3] = {v_p.x, v_p.y, v_p.z};
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) v_viewmat[i * 4 + j] += T(2) * v_R.m[i][j] + vp[i] * gauss.mean[j];
        v_viewmat[i * 4 + 3] += vp[i];
    }
    out.v_mean[0] += v_world.x;
    out.v_mean[1] += v_world.y;
    out.v_mean[2] += v_world.z;
    if (gauss.covar) {
        out.v_covar[0] += v_cov.m[0][0];
        out.v_covar[1] += v_cov.m[0][1] + v_cov.m[1][0];
        out.v_covar[2] += v_cov.m[0][2] + v_cov.m[2][0];
        out.v_covar[3] += v_cov.m[1][1];
        out.v_covar[4] += v_cov.m[1][2] + v_cov.m[2][1];
        out.v_covar[5] += v_cov.m[2][2];
    } else {
        covariance_vjp(gauss.quat, gauss.scale, g.Rq, g.M, v_cov, out.v_quat, out.v_scale);
    }
}

// ---------------------------------------------------------------------------------------------
// Spherical harmonics (the real basis of Inria 3DGS and gsplat), degree 0..4, on a normalised
// direction. Each basis function is written as a homogeneous polynomial (equal to the usual form on the
// unit sphere); the callers project the gradient onto the sphere's tangent plane.
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
    if (degree < 4) return;
    const T rho = xx + yy;  // squared distance from the z axis
    b[16] = T(kShC40) * x * y * (xx - yy);
    b[17] = T(kShC41) * y * z * (T(3) * xx - yy);
    b[18] = T(kShC42) * x * y * (T(6) * zz - rho);
    b[19] = T(kShC43) * y * z * (T(4) * zz - T(3) * rho);
    b[20] = T(kShC44) * (T(3) * rho * rho - T(24) * zz * rho + T(8) * zz * zz);
    b[21] = T(kShC45) * x * z * (T(4) * zz - T(3) * rho);
    b[22] = T(kShC46) * (xx - yy) * (T(6) * zz - rho);
    b[23] = T(kShC47) * x * z * (xx - T(3) * yy);
    b[24] = T(kShC48) * (xx * xx - T(6) * xx * yy + yy * yy);
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
    if (degree < 4) return g;
    const T rho = xx + yy;
    const T w16 = T(kShC40) * w[16], w17 = T(kShC41) * w[17], w18 = T(kShC42) * w[18],
            w19 = T(kShC43) * w[19], w20 = T(kShC44) * w[20], w21 = T(kShC45) * w[21],
            w22 = T(kShC46) * w[22], w23 = T(kShC47) * w[23], w24 = T(kShC48) * w[24];
    g.x += w16 * y * (T(3) * xx - yy) + w17 * T(6) * x * y * z + w18 * y * (T(6) * zz - T(3) * xx - yy) -
           w19 * T(6) * x * y * z + w20 * x * (T(12) * rho - T(48) * zz) +
           w21 * z * (T(4) * zz - T(9) * xx - T(3) * yy) + w22 * x * (T(12) * zz - T(4) * xx) +
           w23 * z * (T(3) * xx - T(3) * yy) + w24 * x * (T(4) * xx - T(12) * yy);
    g.y += w16 * x * (xx - T(3) * yy) + w17 * T(3) * z * (xx - yy) + w18 * x * (T(6) * zz - xx - T(3) * yy) +
           w19 * z * (T(4) * zz - T(3) * xx - T(9) * yy) + w20 * y * (T(12) * rho - T(48) * zz) -
           w21 * T(6) * x * y * z + w22 * y * (T(4) * yy - T(12) * zz) - w23 * T(6) * x * y * z +
           w24 * y * (T(4) * yy - T(12) * xx);
    g.z += w17 * y * (T(3) * xx - yy) + w18 * T(12) * x * y * z + w19 * y * (T(12) * zz - T(3) * rho) +
           w20 * z * (T(32) * zz - T(48) * rho) + w21 * x * (T(12) * zz - T(3) * rho) +
           w22 * T(12) * z * (xx - yy) + w23 * x * (xx - T(3) * yy);
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
