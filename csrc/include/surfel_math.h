// The math of 2D Gaussian splatting (surfels), shared by the CPU and CUDA backends beside gsplat_math.h:
// the projection of a surfel to its ray transform, screen rectangle and normal; the evaluation of its
// kernel at a pixel (the exact ray-plane intersection, with the screen-space low-pass filter); and the
// VJP of each. gsplat_py/rendering/reference_2dgs.py writes the same formulas in PyTorch (the oracle).
//
// A surfel has a centre, a rotation R(q) and two scales: its plane is spanned by s0 R[:, 0] and
// s1 R[:, 1], its normal is R[:, 2]. In a camera (rotation W, translation t, pinhole fx, fy, cx, cy) its
// ray transform is the 3x3 matrix T = K [s0 W R[:, 0], s1 W R[:, 1], W mean + t] (row-major, rows
// Tu, Tv, Tw), which maps a point (a, b, 1) of the plane to homogeneous pixel coordinates.
#pragma once

#include "gsplat_math.h"

namespace gsplat_py {

constexpr double kSurfelFilterInvSquare = 2.0;  // low-pass filter: exp(-2 |d|^2 / 2), d in pixels (gsplat's)
constexpr double kSurfelMinHalfExtent2 = 1e-4;  // floor of the squared half extent, in pixels^2 (gsplat's)
// exp(-5.55) = 0.99 / 255: a sigma above this leaves any opacity <= 1 below kAlphaThreshold.
constexpr double kSurfelSkipSigma = 5.55;

template <typename T> struct ProjectedSurfel {
    bool visible;
    int32_t radius_x, radius_y;
    T mean_x, mean_y, depth;
    T transform[9];  // row-major T
    T normal[3];     // camera space, towards the camera
};

// The camera-space frame of a surfel: W R(q), the centre, and the columns of K^-1 T.
template <typename T> struct SurfelFrame {
    Mat3<T> W;     // camera rotation
    Mat3<T> Rq;    // the surfel's rotation
    Mat3<T> Rc;    // W Rq
    Vec3<T> p;     // camera-space centre
    Mat3<T> cols;  // [s0 Rc[:, 0], s1 Rc[:, 1], p]
};

template <typename T>
GS_HD SurfelFrame<T> surfel_frame(const T* mean, const T* quat, const T* scale, const T* viewmat) {
    SurfelFrame<T> f;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) f.W.m[i][j] = viewmat[i * 4 + j];
    const Vec3<T> m = {mean[0], mean[1], mean[2]};
    f.p = matvec(f.W, m);
    f.p.x += viewmat[3];
    f.p.y += viewmat[7];
    f.p.z += viewmat[11];
    f.Rq = quat_to_rotmat(quat);
    f.Rc = matmul(f.W, f.Rq);
    const T pv[3] = {f.p.x, f.p.y, f.p.z};
    for (int i = 0; i < 3; ++i) {
        f.cols.m[i][0] = f.Rc.m[i][0] * scale[0];
        f.cols.m[i][1] = f.Rc.m[i][1] * scale[1];
        f.cols.m[i][2] = pv[i];
    }
    return f;
}

// T = K cols with K's four intrinsics.
template <typename T> GS_HD void surfel_transform(const Mat3<T>& cols, const T* K, T* out) {
    for (int j = 0; j < 3; ++j) {
        out[j] = K[kKFx] * cols.m[0][j] + K[kKCx] * cols.m[2][j];
        out[3 + j] = K[kKFy] * cols.m[1][j] + K[kKCy] * cols.m[2][j];
        out[6 + j] = cols.m[2][j];
    }
}

// The screen centre of the surfel's ellipse from T (the AABB of its projected conic):
// with s = (1, 1, -1) and D = sum s_k Tw_k^2, mean_x = sum s_k Tu_k Tw_k / D, likewise y with Tv.
template <typename T> GS_HD T surfel_distance(const T* tr) {
    return tr[6] * tr[6] + tr[7] * tr[7] - tr[8] * tr[8];
}
template <typename T> GS_HD T surfel_row_dot(const T* a, const T* b) {
    return a[0] * b[0] + a[1] * b[1] - a[2] * b[2];
}

template <typename T>
GS_HD ProjectedSurfel<T> project_surfel(const T* mean, const T* quat, const T* scale, const T* viewmat,
                                        const T* K, int width, int height, T near_plane, T far_plane,
                                        T radius_clip) {
    ProjectedSurfel<T> out;
    out.visible = false;
    const SurfelFrame<T> f = surfel_frame(mean, quat, scale, viewmat);
    if (!(f.p.z > near_plane && f.p.z < far_plane)) return out;  // also rejects NaN depth
    surfel_transform(f.cols, K, out.transform);
    const T* tr = out.transform;
    const T distance = surfel_distance(tr);
    if (!(distance != T(0))) return out;
    out.mean_x = surfel_row_dot(tr, tr + 6) / distance;
    out.mean_y = surfel_row_dot(tr + 3, tr + 6) / distance;
    T half_x = out.mean_x * out.mean_x - surfel_row_dot(tr, tr) / distance;
    T half_y = out.mean_y * out.mean_y - surfel_row_dot(tr + 3, tr + 3) / distance;
    half_x = half_x > T(kSurfelMinHalfExtent2) ? half_x : T(kSurfelMinHalfExtent2);
    half_y = half_y > T(kSurfelMinHalfExtent2) ? half_y : T(kSurfelMinHalfExtent2);
    const T radius_x = std::ceil(T(kMaxExtent) * std::sqrt(half_x));
    const T radius_y = std::ceil(T(kMaxExtent) * std::sqrt(half_y));
    if (radius_x <= radius_clip && radius_y <= radius_clip) return out;
    if (out.mean_x + radius_x <= T(0) || out.mean_x - radius_x >= T(width) || out.mean_y + radius_y <= T(0) ||
        out.mean_y - radius_y >= T(height))
        return out;
    const Vec3<T> n = {f.Rc.m[0][2], f.Rc.m[1][2], f.Rc.m[2][2]};
    const T sign = -(n.x * f.p.x + n.y * f.p.y + n.z * f.p.z) > T(0) ? T(1) : T(-1);
    out.normal[0] = sign * n.x;
    out.normal[1] = sign * n.y;
    out.normal[2] = sign * n.z;
    out.visible = true;
    out.radius_x = static_cast<int32_t>(radius_x);
    out.radius_y = static_cast<int32_t>(radius_y);
    out.depth = f.p.z;
    return out;
}

// VJP of project_surfel's differentiable outputs (mean2d, depth, transform, normal) for a visible surfel:
// accumulates into v_mean, v_quat, v_scale (the first two scales), v_viewmat (4x4 row-major) and v_K
// (fx, fy, cx, cy, as project_gaussian_vjp).
template <typename T>
GS_HD void project_surfel_vjp(const T* mean, const T* quat, const T* scale, const T* viewmat, const T* K,
                              T v_mean_x, T v_mean_y, T v_depth, const T* v_transform, const T* v_normal,
                              T* v_mean, T* v_quat, T* v_scale, T* v_viewmat, T* v_K) {
    const SurfelFrame<T> f = surfel_frame(mean, quat, scale, viewmat);
    T tr[9];
    surfel_transform(f.cols, K, tr);
    T vt[9];
    for (int k = 0; k < 9; ++k) vt[k] = v_transform[k];
    // mean_x = A_x / D with A_x = sum s_k Tu_k Tw_k, D = sum s_k Tw_k^2 (s = 1, 1, -1); likewise y.
    const T distance = surfel_distance(tr);
    const T mean_x = surfel_row_dot(tr, tr + 6) / distance;
    const T mean_y = surfel_row_dot(tr + 3, tr + 6) / distance;
    for (int k = 0; k < 3; ++k) {
        const T s = k == 2 ? T(-1) : T(1);
        vt[k] += v_mean_x * s * tr[6 + k] / distance;
        vt[3 + k] += v_mean_y * s * tr[6 + k] / distance;
        vt[6 + k] += s *
                     (v_mean_x * (tr[k] - T(2) * mean_x * tr[6 + k]) +
                      v_mean_y * (tr[3 + k] - T(2) * mean_y * tr[6 + k])) /
                     distance;
    }
    // T = K cols
    Mat3<T> v_cols;
    for (int j = 0; j < 3; ++j) {
        v_cols.m[0][j] = K[kKFx] * vt[j];
        v_cols.m[1][j] = K[kKFy] * vt[3 + j];
        v_cols.m[2][j] = K[kKCx] * vt[j] + K[kKCy] * vt[3 + j] + vt[6 + j];
        v_K[0] += vt[j] * f.cols.m[0][j];
        v_K[1] += vt[3 + j] * f.cols.m[1][j];
        v_K[2] += vt[j] * f.cols.m[2][j];
        v_K[3] += vt[3 + j] * f.cols.m[2][j];
    }
    // cols = [s0 Rc[:, 0], s1 Rc[:, 1], p]; normal = sign Rc[:, 2]
    const T sign =
        -(f.Rc.m[0][2] * f.p.x + f.Rc.m[1][2] * f.p.y + f.Rc.m[2][2] * f.p.z) > T(0) ? T(1) : T(-1);
    Mat3<T> v_Rc;
    for (int i = 0; i < 3; ++i) {
        v_Rc.m[i][0] = v_cols.m[i][0] * scale[0];
        v_Rc.m[i][1] = v_cols.m[i][1] * scale[1];
        v_Rc.m[i][2] = sign * v_normal[i];
    }
    for (int j = 0; j < 2; ++j)
        v_scale[j] +=
            v_cols.m[0][j] * f.Rc.m[0][j] + v_cols.m[1][j] * f.Rc.m[1][j] + v_cols.m[2][j] * f.Rc.m[2][j];
    const Vec3<T> v_p = {v_cols.m[0][2], v_cols.m[1][2], v_cols.m[2][2] + v_depth};
    // Rc = W Rq: v_Rq = W^T v_Rc, v_W = v_Rc Rq^T; p = W mean + t
    T vq[4];
    quat_to_rotmat_vjp(quat, matmul(transpose(f.W), v_Rc), vq);
    for (int k = 0; k < 4; ++k) v_quat[k] += vq[k];
    const Mat3<T> v_W = matmul(v_Rc, transpose(f.Rq));
    const Vec3<T> v_world = matTvec(f.W, v_p);
    v_mean[0] += v_world.x;
    v_mean[1] += v_world.y;
    v_mean[2] += v_world.z;
    const T vp[3] = {v_p.x, v_p.y, v_p.z};
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) v_viewmat[i * 4 + j] += v_W.m[i][j] + vp[i] * mean[j];
        v_viewmat[i * 4 + 3] += vp[i];
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel of one surfel at the pixel centre (px, py). The ray meets the plane at (a, b), the cross
// product of the plane vectors h_u = px Tw - Tu and h_v = py Tw - Tv, dehomogenised; no hit when the
// ray is parallel to the plane. sigma = min(a^2 + b^2, 2 |mean2d - pixel|^2) / 2 (the smaller of the
// surface and the screen filter; `surface` says which).
template <typename T> struct SurfelHit {
    bool hit, surface;
    Vec3<T> h_u, h_v, cross;
    T a, b, dx, dy, sigma;
};

template <typename T> GS_HD Vec3<T> cross3(const Vec3<T>& u, const Vec3<T>& v) {
    return {u.y * v.z - u.z * v.y, u.z * v.x - u.x * v.z, u.x * v.y - u.y * v.x};
}

template <typename T> GS_HD SurfelHit<T> surfel_hit(const T* tr, T mean_x, T mean_y, T px, T py) {
    SurfelHit<T> h;
    h.h_u = {px * tr[6] - tr[0], px * tr[7] - tr[1], px * tr[8] - tr[2]};
    h.h_v = {py * tr[6] - tr[3], py * tr[7] - tr[4], py * tr[8] - tr[5]};
    h.cross = cross3(h.h_u, h.h_v);
    h.hit = h.cross.z != T(0);
    const T cz = h.hit ? h.cross.z : T(1);
    h.a = h.cross.x / cz;
    h.b = h.cross.y / cz;
    h.dx = mean_x - px;
    h.dy = mean_y - py;
    const T on_surface = h.a * h.a + h.b * h.b;
    const T on_screen = T(kSurfelFilterInvSquare) * (h.dx * h.dx + h.dy * h.dy);
    h.surface = on_surface <= on_screen;
    h.sigma = T(0.5) * (h.surface ? on_surface : on_screen);
    return h;
}

// Gradients of a surfel's kernel inputs from d loss / d sigma at one pixel: mean2d (screen filter) or
// the transform (surface), accumulated.
template <typename T>
GS_HD void surfel_sigma_vjp(const SurfelHit<T>& h, T px, T py, T v_sigma, T* v_mean2d, T* v_transform) {
    if (!h.surface) {
        const T scale = v_sigma * T(0.5) * T(2) * T(kSurfelFilterInvSquare);
        v_mean2d[0] += scale * h.dx;
        v_mean2d[1] += scale * h.dy;
        return;
    }
    const T v_a = v_sigma * h.a, v_b = v_sigma * h.b;
    const Vec3<T> v_cross = {v_a / h.cross.z, v_b / h.cross.z, -(v_a * h.a + v_b * h.b) / h.cross.z};
    const Vec3<T> v_hu = cross3(h.h_v, v_cross);
    const Vec3<T> v_hv = cross3(v_cross, h.h_u);
    v_transform[0] -= v_hu.x;
    v_transform[1] -= v_hu.y;
    v_transform[2] -= v_hu.z;
    v_transform[3] -= v_hv.x;
    v_transform[4] -= v_hv.y;
    v_transform[5] -= v_hv.z;
    v_transform[6] += px * v_hu.x + py * v_hv.x;
    v_transform[7] += px * v_hu.y + py * v_hv.y;
    v_transform[8] += px * v_hu.z + py * v_hv.z;
}

// d distortion / d w_k and d distortion / d d_k for distortion = 2 sum_i w_i (d_i A_i - B_i), A_i and B_i
// the sums of w_j and w_j d_j over j < i, given the sums in front of k (A, B) and behind it (W_after,
// D_after).
template <typename T> struct DistortionGrad {
    T v_weight, v_depth;
};
template <typename T>
GS_HD DistortionGrad<T> distortion_vjp(T weight, T depth, T A, T B, T W_after, T D_after) {
    return {T(2) * (depth * A - B + D_after - depth * W_after), T(2) * weight * (A - W_after)};
}

}  // namespace gsplat_py
