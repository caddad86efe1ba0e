"""Vectorised ray casting of a few analytic primitives (numpy, no loops over pixels).

World frame: y up, floor at y = 0. Rays are ``origin + t * d`` with ``d`` the *unnormalised* world direction of
the camera-frame ray ``((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1)``, so the hit parameter ``t`` is the z-depth
in the OpenCV camera frame (x right, y down, z forward). Shading is Lambertian with a fixed directional light and a
point light, hence view-independent: a static surface point has the same colour in every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .textures import sample_padded, wrap_pad

EPS = 1e-4
INF = np.float32(np.inf)


@dataclass
class Material:
    texture: np.ndarray  # (N, N, 3) float32 in [0, 1]
    tile_m: float  # metres covered by one texture tile

    def __post_init__(self):
        self.padded = wrap_pad(self.texture)  # (N + 1, N + 1, 3)

    def sample(self, uv: np.ndarray) -> np.ndarray:
        """uv: (M, 2) surface coordinates in metres -> albedo (M, 3)."""
        scale = self.texture.shape[0] / self.tile_m
        return sample_padded(self.padded, uv[:, 0] * scale, uv[:, 1] * scale)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product. a, b: (M, 3) -> (M,)."""
    return np.einsum("ij,ij->i", a, b)


def _near_root(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smaller positive root of a t^2 + b t + c = 0 (inf when none). All (M,)."""
    disc = b * b - 4 * a * c
    ok = disc >= 0
    sq = np.sqrt(np.where(ok, disc, 0))
    t = (-b - sq) / (2 * a)
    return np.where(ok & (t > EPS), t, INF)


def _yaw(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)


@dataclass
class Room:
    """Inside of an axis-aligned box; faces 0..5 = x-, x+, floor, ceiling, z-, z+ each with its own material."""

    lo: np.ndarray  # (3,)
    hi: np.ndarray  # (3,)
    materials: list[Material] = field(default_factory=list)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """o: (3,), d: (M, 3) -> t (M,) of the exit point (the camera is inside)."""
        dd = np.where(np.abs(d) < 1e-12, np.float32(1e-12), d)
        t = (np.where(dd > 0, self.hi, self.lo) - o) / dd
        return np.minimum(np.minimum(t[:, 0], t[:, 1]), t[:, 2]).astype(np.float32)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """p: (K, 3) -> inward normals (K, 3), uv metres (K, 2), face (K,)."""
        dist = np.concatenate([np.abs(p - self.lo), np.abs(p - self.hi)], axis=1)[:, [0, 3, 1, 4, 2, 5]]
        face = np.argmin(dist, axis=1)
        axis, positive = face // 2, face % 2
        normal = np.zeros_like(p)
        normal[np.arange(len(p)), axis] = np.where(positive == 1, -1.0, 1.0)
        uv_axes = np.array([[2, 1], [0, 2], [0, 1]])[axis]
        uv = np.take_along_axis(p, uv_axes, axis=1)
        return normal, uv, face


@dataclass
class Box:
    center: np.ndarray  # (3,)
    half: np.ndarray  # (3,) half extents in the box frame
    yaw: float
    materials: list[Material] = field(default_factory=list)

    def __post_init__(self):
        self.rot = _yaw(self.yaw)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol = (o - self.center) @ self.rot
        dl = d @ self.rot
        dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        t1 = (-self.half - ol) / dl
        t2 = (self.half - ol) / dl
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near = np.maximum(np.maximum(lo[:, 0], lo[:, 1]), lo[:, 2])
        t_far = np.minimum(np.minimum(hi[:, 0], hi[:, 1]), hi[:, 2])
        return np.where((t_near <= t_far) & (t_near > EPS), t_near, INF).astype(np.float32)

    def surface(self, p: np.ndarray):
        pl = (p - self.center) @ self.rot
        axis = np.argmax(np.abs(pl) / self.half, axis=1)
        sign = np.sign(pl[np.arange(len(p)), axis])
        nl = np.zeros_like(pl)
        nl[np.arange(len(p)), axis] = sign
        uv_axes = np.array([[2, 1], [0, 2], [0, 1]])[axis]
        uv = np.take_along_axis(pl + self.half, uv_axes, axis=1)
        return nl @ self.rot.T, uv, np.zeros(len(p), dtype=np.int64)


@dataclass
class Cylinder:
    """Closed vertical cylinder; ``capsule=True`` replaces the flat caps by hemispheres centred at y0 and y1."""

    cx: float
    cz: float
    y0: float
    y1: float
    radius: float
    capsule: bool = False
    materials: list[Material] = field(default_factory=list)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ox, oz = o[0] - self.cx, o[2] - self.cz
        a = d[:, 0] ** 2 + d[:, 2] ** 2
        b = 2 * (ox * d[:, 0] + oz * d[:, 2])
        c = np.full_like(a, ox * ox + oz * oz - self.radius**2)
        t = _near_root(np.maximum(a, 1e-12), b, c)
        y = o[1] + t * d[:, 1]
        t = np.where((y >= self.y0) & (y <= self.y1), t, INF)
        if self.capsule:
            for yc in (self.y0, self.y1):
                oc = o - np.array([self.cx, yc, self.cz], dtype=np.float32)
                ts = _near_root(_dot(d, d), 2 * (d @ oc), np.full_like(a, oc @ oc - self.radius**2))
                t = np.minimum(t, ts)
            return t.astype(np.float32)
        for yc in (self.y0, self.y1):
            dy = np.where(np.abs(d[:, 1]) < 1e-12, 1e-12, d[:, 1])
            tc = (yc - o[1]) / dy
            px, pz = ox + tc * d[:, 0], oz + tc * d[:, 2]
            t = np.minimum(t, np.where((tc > EPS) & (px * px + pz * pz <= self.radius**2), tc, INF))
        return t.astype(np.float32)

    def surface(self, p: np.ndarray):
        q = p - np.array([self.cx, 0.0, self.cz], dtype=np.float32)
        rad = np.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2)
        side_n = np.stack([q[:, 0], np.zeros_like(rad), q[:, 2]], 1) / np.maximum(rad, 1e-9)[:, None]
        u = np.arctan2(q[:, 2], q[:, 0]) * self.radius
        uv = np.stack([u, p[:, 1]], 1)
        if self.capsule:
            yc = np.clip(p[:, 1], self.y0, self.y1)
            n = q - np.stack([np.zeros_like(yc), yc, np.zeros_like(yc)], 1)
            n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
            return n, uv, np.zeros(len(p), dtype=np.int64)
        d_side = np.abs(rad - self.radius)
        d_top, d_bot = np.abs(p[:, 1] - self.y1), np.abs(p[:, 1] - self.y0)
        cap = np.minimum(d_top, d_bot) < d_side
        cap_n = np.zeros_like(p)
        cap_n[:, 1] = np.where(d_top < d_bot, 1.0, -1.0)
        n = np.where(cap[:, None], cap_n, side_n)
        uv = np.where(cap[:, None], q[:, [0, 2]], uv)
        return n, uv, np.zeros(len(p), dtype=np.int64)


@dataclass
class Sphere:
    center: np.ndarray  # (3,)
    radius: float
    materials: list[Material] = field(default_factory=list)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - self.center
        return _near_root(_dot(d, d), 2 * (d @ oc), np.full(len(d), oc @ oc - self.radius**2, dtype=np.float32))

    def surface(self, p: np.ndarray):
        q = p - self.center
        n = q / self.radius
        uv = np.stack([np.arctan2(q[:, 2], q[:, 0]) * self.radius,
                       np.arcsin(np.clip(n[:, 1], -1.0, 1.0)) * self.radius], 1)
        return n, uv, np.zeros(len(p), dtype=np.int64)


@dataclass
class Sprite:
    """A vertical cut-out standing on the floor: a rectangle (width 2 * half_width, ``height``) turned by ``yaw``
    whose ``alpha`` mask (Hs, Ws) bool decides, nearest-texel, which points are solid. Seen from both sides."""

    base: np.ndarray  # (3,) centre of the bottom edge
    half_width: float
    height: float
    yaw: float
    alpha: np.ndarray  # (Hs, Ws) bool, row 0 = top
    materials: list[Material] = field(default_factory=list)

    def __post_init__(self):
        self.rot = _yaw(self.yaw)

    def _local(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local (x, y) of points on the plane -> alpha row/col indices (clipped)."""
        hs, ws = self.alpha.shape
        col = np.clip(((p[:, 0] + self.half_width) / (2 * self.half_width) * ws).astype(np.int64), 0, ws - 1)
        row = np.clip(((self.height - p[:, 1]) / self.height * hs).astype(np.int64), 0, hs - 1)
        return row, col

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol = (o - self.base) @ self.rot
        dl = d @ self.rot
        dz = np.where(np.abs(dl[:, 2]) < 1e-12, np.float32(1e-12), dl[:, 2])
        t = -ol[2] / dz
        pl = ol + t[:, None] * dl
        inside = (t > EPS) & (np.abs(pl[:, 0]) <= self.half_width) & (pl[:, 1] >= 0) & (pl[:, 1] <= self.height)
        row, col = self._local(pl)
        return np.where(inside & self.alpha[row, col], t, INF).astype(np.float32)

    def surface(self, p: np.ndarray):
        pl = (p - self.base) @ self.rot
        normal = np.broadcast_to(self.rot[:, 2], p.shape).copy()
        uv = np.stack([pl[:, 0] + self.half_width, self.height - pl[:, 1]], 1)
        return normal, uv, np.zeros(len(p), dtype=np.int64)


@dataclass
class Light:
    direction: np.ndarray  # (3,) unit vector towards the light
    point: np.ndarray  # (3,) point-light position
    ambient: float = 0.35
    directional: float = 0.35
    point_gain: float = 0.6

    def __post_init__(self):  # float32 keeps shading in single precision
        self.direction = np.asarray(self.direction, dtype=np.float32)
        self.point = np.asarray(self.point, dtype=np.float32)


def camera_rays(c2w: np.ndarray, fxfycxcy: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """c2w: (4, 4), fxfycxcy: (4,) -> origin (3,), world directions (H*W, 3) with camera-frame z = 1."""
    fx, fy, cx, cy = (float(x) for x in fxfycxcy)
    v, u = np.meshgrid(np.arange(height, dtype=np.float64) + 0.5, np.arange(width, dtype=np.float64) + 0.5,
                       indexing="ij")
    d_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1).reshape(-1, 3)
    d = d_cam @ np.asarray(c2w, dtype=np.float64)[:3, :3].T
    return np.asarray(c2w[:3, 3], dtype=np.float32), d.astype(np.float32)


def cast(prims: list, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit over ``prims``. o: (3,), d: (M, 3) -> t (M,) (inf = miss), index of the hit primitive (M,)."""
    t_best = np.full(len(d), INF, dtype=np.float32)
    idx = np.full(len(d), -1, dtype=np.int64)
    for k, prim in enumerate(prims):  # running minimum: ties go to the earlier primitive
        t = prim.intersect(o, d)
        closer = t < t_best
        t_best = np.where(closer, t, t_best)
        idx[closer] = k
    return t_best, idx


def shade(prims: list, light: Light, o: np.ndarray, d: np.ndarray, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Colour of every hit. o: (3,), d: (M, 3), t: (M,), idx: (M,) -> rgb (M, 3) in [0, 1] (black for misses)."""
    rgb = np.zeros((len(d), 3), dtype=np.float32)
    for k, prim in enumerate(prims):
        sel = np.nonzero(idx == k)[0]
        if sel.size == 0:
            continue
        p = o + np.take(t, sel)[:, None] * np.take(d, sel, axis=0)  # np.take: faster than fancy row indexing
        normal, uv, face = prim.surface(p)
        if len(prim.materials) == 1:
            albedo = prim.materials[0].sample(uv)
        else:
            albedo = np.empty((sel.size, 3), dtype=np.float32)
            order = np.argsort(face, kind="stable")
            bounds = np.searchsorted(face[order], np.arange(len(prim.materials) + 1))
            for f, mat in enumerate(prim.materials):
                m = order[bounds[f] : bounds[f + 1]]
                if m.size:
                    albedo[m] = mat.sample(np.take(uv, m, axis=0))
        to_light = light.point - p
        dist2 = _dot(to_light, to_light)
        lam_p = np.maximum(_dot(normal, to_light) / np.sqrt(np.maximum(dist2, 1e-9)), 0.0)
        lam_d = np.maximum(normal @ light.direction, 0.0)
        gain = light.ambient + light.directional * lam_d + light.point_gain * lam_p / (1.0 + 0.08 * dist2)
        rgb[sel] = albedo * gain[:, None]
    return np.clip(rgb, 0.0, 1.0)
