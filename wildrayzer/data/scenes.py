"""Random RealEstate10K-like scene descriptions: a textured room, static objects, a smooth camera path, transients.

Everything is drawn from one ``numpy.random.Generator`` so a scene is a pure function of its seed. Units are metres;
the world has y up and the floor at y = 0; cameras are OpenCV (x right, y down, z forward) ``c2w`` matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np

from .raycast import Box, Cylinder, Light, Material, Room, Sphere, Sprite
from .textures import ALL_NAMES, PROCEDURAL_NAMES, make_texture, texels_for_resolution

TRAJECTORIES = ("walk", "pan", "orbit")
TRANSIENT_TEXTURES = ("astronaut", "chelsea", "coffee", "rocket", "colorwheel", "immunohistochemistry", "stripes",
                      "dots", "checker", "hubble_deep_field")


SPRITE_SHAPES = ("horse", "figure")
# Default transient paths in metres (min, max): start ahead of the middle camera, and start-to-end length over the
# clip. Why these values: the fields of the same names in data/synthetic.py SynthParams.
TRANSIENT_DISTANCE = (0.6, 1.5)
TRANSIENT_TRAVEL = (1.5, 4.0)


@cache
def sprite_alpha(shape: str, size: int = 128) -> np.ndarray:
    """Cut-out mask (size, size) bool, row 0 = top: scikit-image's horse silhouette or a person-like figure."""
    if shape == "horse":
        import skimage.data

        sil = ~np.asarray(skimage.data.horse())
        return cv2.resize(sil.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    y, x = np.mgrid[0:size, 0:size] / size
    head = (x - 0.5) ** 2 + (y - 0.12) ** 2 < 0.1**2
    body = (np.abs(x - 0.5) < 0.22) & (y > 0.22) & (y < 0.62)
    legs = ((np.abs(x - 0.38) < 0.08) | (np.abs(x - 0.62) < 0.08)) & (y >= 0.62)
    return head | body | legs


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera at ``eye`` looking at ``target`` with the world's -y as image down -> c2w (4, 4) float64."""
    f = target - eye
    f = f / np.linalg.norm(f)
    down = np.array([0.0, -1.0, 0.0])
    r = np.cross(down, f)
    r = r / np.linalg.norm(r)
    dn = np.cross(f, r)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = r, dn, f, eye
    return c2w


@dataclass
class Transient:
    """A moving object: one primitive per frame (``None`` where it is absent)."""

    kind: str  # capsule | box | sprite
    size: tuple[float, float, float]  # capsule: (radius, height, 0); box: half extents; sprite: (half width, height, 0)
    path: np.ndarray  # (F, 2) xz position per frame
    yaw: np.ndarray  # (F,) heading per frame
    visible: np.ndarray  # (F,) bool
    material: Material
    alpha: np.ndarray | None = None  # sprite only: (Hs, Ws) bool cut-out mask

    def primitive(self, frame: int):
        if not self.visible[frame]:
            return None
        x, z = self.path[frame]
        if self.kind == "capsule":
            r, h, _ = self.size
            return Cylinder(float(x), float(z), r, h - r, r, capsule=True, materials=[self.material])
        if self.kind == "sprite":
            hw, h, _ = self.size
            return Sprite(np.array([x, 0.0, z], dtype=np.float32), hw, h, float(self.yaw[frame]), self.alpha,
                          [self.material])
        half = np.asarray(self.size, dtype=np.float32)
        return Box(np.array([x, half[1], z], dtype=np.float32), half, float(self.yaw[frame]), [self.material])


@dataclass
class SceneSpec:
    room: Room
    statics: list
    light: Light
    c2w: np.ndarray  # (F, 4, 4) float64
    fxfycxcy: np.ndarray  # (4,) pixels
    height: int
    width: int
    trajectory: str
    transients: list[Transient] = field(default_factory=list)

    def static_prims(self) -> list:
        return [self.room, *self.statics]

    def transient_prims(self, frame: int) -> list:
        return [p for p in (tr.primitive(frame) for tr in self.transients) if p is not None]


def _material(rng: np.random.Generator, names: tuple[str, ...], width: int, tile_range=(0.8, 2.0)) -> Material:
    name = str(rng.choice(names))
    tile = float(rng.uniform(*tile_range))
    n = texels_for_resolution(tile, width)
    return Material(make_texture(name, n, int(rng.integers(1 << 31))), tile)


def _camera_path(rng: np.random.Generator, half: np.ndarray, height: float, frames: int) -> tuple[str, np.ndarray]:
    """-> trajectory name, c2w (F, 4, 4). ``half``: room half extents in x and z."""
    margin = 0.6
    lim = half - margin
    s = np.linspace(0.0, 1.0, frames)
    kind = str(rng.choice(TRAJECTORIES))
    eye_h = rng.uniform(1.3, 1.7)
    if kind == "orbit":
        radius = rng.uniform(1.4, 2.4)
        center = np.array([rng.uniform(-lim[0], lim[0]) * 0.4, rng.uniform(-lim[1], lim[1]) * 0.4])
        phi0, span = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(40, 90)) * rng.choice([-1, 1])
        phi = phi0 + span * s
        xz = center + radius * np.stack([np.cos(phi), np.sin(phi)], 1)
        if np.all(np.abs(xz) <= lim):
            target = np.array([center[0], rng.uniform(0.5, 1.1), center[1]])
            eyes = np.stack([xz[:, 0], eye_h + 0.05 * np.sin(np.pi * s), xz[:, 1]], 1)
            return kind, np.stack([look_at(e, target) for e in eyes])
        kind = "pan"  # the orbit does not fit in this room
    if kind == "walk":
        start = np.array([rng.uniform(-lim[0], lim[0]), rng.uniform(-lim[1], lim[1])])
        heading = np.arctan2(-start[1], -start[0]) + rng.uniform(-0.6, 0.6)  # roughly towards the room centre
        direction = np.array([np.cos(heading), np.sin(heading)])
        length = rng.uniform(1.0, 2.5)
        xz = np.clip(start + length * s[:, None] * direction, -lim, lim)
        sway = rng.uniform(-0.25, 0.25) * np.sin(np.pi * s)
        look_yaw = heading + sway
        pitch = rng.uniform(-0.15, 0.1)
        eyes = np.stack([xz[:, 0], eye_h + 0.03 * np.sin(4 * np.pi * s), xz[:, 1]], 1)
    else:  # pan: nearly fixed centre, sweeping yaw
        c = np.array([rng.uniform(-lim[0], lim[0]), rng.uniform(-lim[1], lim[1])]) * 0.6
        drift = rng.uniform(-0.3, 0.3, 2)
        xz = np.clip(c + s[:, None] * drift, -lim, lim)
        yaw0 = np.arctan2(-c[1], -c[0]) + rng.uniform(-0.5, 0.5)
        look_yaw = yaw0 + np.deg2rad(rng.uniform(30, 70)) * rng.choice([-1, 1]) * (s - 0.5)
        pitch = rng.uniform(-0.15, 0.1)
        eyes = np.stack([xz[:, 0], np.full_like(s, eye_h), xz[:, 1]], 1)
    cp = np.cos(pitch)
    fwd = np.stack([np.cos(look_yaw) * cp, np.full_like(s, np.sin(pitch)), np.sin(look_yaw) * cp], 1)
    return kind, np.stack([look_at(e, e + f) for e, f in zip(eyes, fwd)])


def _clear(xz: np.ndarray, radius: float, obstacles: list[tuple[np.ndarray, float]], gap: float) -> bool:
    """True when the circle(s) ``xz`` (N, 2) of ``radius`` keep ``gap`` from every obstacle circle."""
    return all(np.all(np.linalg.norm(xz - c, axis=-1) > radius + r + gap) for c, r in obstacles)


def _static_objects(rng, half, cams_xz, width, count) -> tuple[list, list[tuple[np.ndarray, float]]]:
    prims, footprints = [], []
    cam_obstacles = [(c, 0.0) for c in cams_xz]
    for _ in range(count):
        for _try in range(40):
            kind = str(rng.choice(["box", "cylinder", "sphere"]))
            size = rng.uniform(0.2, 0.55)
            lim = half - size - 0.05
            xz = np.array([rng.uniform(-lim[0], lim[0]), rng.uniform(-lim[1], lim[1])])
            if _clear(xz[None], size * 1.5, cam_obstacles, 0.35) and _clear(xz[None], size * 1.5, footprints, 0.05):
                break
        else:
            continue
        mat = _material(rng, ALL_NAMES, width, (0.4, 1.0))
        if kind == "box":
            h = rng.uniform(0.3, 1.1)
            half_ext = np.array([size, h / 2, size * rng.uniform(0.5, 1.0)], dtype=np.float32)
            prims.append(Box(np.array([xz[0], h / 2, xz[1]], dtype=np.float32), half_ext, float(rng.uniform(0, np.pi)),
                             [mat]))
        elif kind == "cylinder":
            prims.append(Cylinder(float(xz[0]), float(xz[1]), 0.0, float(rng.uniform(0.4, 1.2)), float(size * 0.8),
                                  materials=[mat]))
        else:
            prims.append(Sphere(np.array([xz[0], size, xz[1]], dtype=np.float32), float(size), [mat]))
        footprints.append((xz, size * 1.5))
    return prims, footprints


def _in_view(c2w: np.ndarray, fxfycxcy: np.ndarray, height: int, width: int, points: np.ndarray) -> np.ndarray:
    """c2w: (F, 4, 4), points: (F, 3) world -> (F,) bool: point in front of camera f and inside its image."""
    rel = points - c2w[:, :3, 3]
    cam = np.einsum("fji,fj->fi", c2w[:, :3, :3], rel)  # R^T (p - c)
    z = np.maximum(cam[:, 2], 1e-6)
    u = fxfycxcy[0] * cam[:, 0] / z + fxfycxcy[2]
    v = fxfycxcy[1] * cam[:, 1] / z + fxfycxcy[3]
    return (cam[:, 2] > 0.5) & (u > 0.1 * width) & (u < 0.9 * width) & (v > 0) & (v < height)


def _transients(rng, half, c2w, fxfycxcy, height, width, count, footprints, distance: tuple[float, float],
                travel: tuple[float, float], scale: float = 1.0) -> list[Transient]:
    frames = len(c2w)
    cams_xz = c2w[:, [0, 2], 3]
    s = np.linspace(0.0, 1.0, frames)
    out = []
    for _ in range(count):
        for _try in range(100):
            kind = str(rng.choice(["capsule", "box", "sprite"], p=[0.4, 0.35, 0.25]))
            if kind == "capsule":
                size = (rng.uniform(0.18, 0.3), rng.uniform(1.2, 1.8), 0.0)
            elif kind == "box":
                size = (rng.uniform(0.15, 0.3), rng.uniform(0.5, 0.9), rng.uniform(0.12, 0.25))
            else:
                size = (rng.uniform(0.3, 0.6), rng.uniform(0.9, 1.6), 0.0)
            size = tuple(scale * x for x in size)
            radius = float(np.hypot(size[0], size[2])) if kind == "box" else size[0]
            mid = c2w[frames // 2]
            ahead = mid[:3, 3] + mid[:3, 2] * rng.uniform(*distance) + mid[:3, 0] * rng.uniform(-1.5, 1.5)
            start = ahead[[0, 2]]
            ang = rng.uniform(0, 2 * np.pi)
            end = start + rng.uniform(*travel) * np.array([np.cos(ang), np.sin(ang)])
            normal = np.array([-np.sin(ang), np.cos(ang)])
            path = start + s[:, None] * (end - start) + rng.uniform(-0.3, 0.3) * np.sin(2 * np.pi * s)[:, None] * normal
            lim = half - radius - 0.05
            if np.any(np.abs(path) > lim):
                continue
            if np.any(np.linalg.norm(path - cams_xz, axis=1) < radius + 0.45):
                continue
            if not _clear(path, radius, footprints, 0.05):
                continue
            centre = np.stack([path[:, 0], np.full(frames, 0.5 * (size[1] if kind == "capsule" else 2 * size[1])),
                               path[:, 1]], 1)
            if _in_view(c2w, fxfycxcy, height, width, centre).mean() < 0.6:  # mostly in the picture
                continue
            break
        else:
            continue
        visible = np.ones(frames, dtype=bool)
        if rng.random() < 0.3:  # appears late and/or leaves early
            a, b = int(rng.integers(0, frames // 3 + 1)), int(rng.integers(2 * frames // 3, frames + 1))
            visible[:] = False
            visible[a:b] = True
        yaw = ang + rng.uniform(-0.3, 0.3) * np.sin(2 * np.pi * s)
        if kind == "sprite":  # the cut-out's plane contains its direction of motion (walks in profile)
            yaw = -yaw
        mat = _material(rng, TRANSIENT_TEXTURES, width, (0.5, 1.2))
        alpha = None
        if kind == "sprite":  # the photo spans the cut-out once
            mat = Material(mat.texture, max(2 * size[0], size[1]))
            alpha = sprite_alpha(str(rng.choice(SPRITE_SHAPES)))
        out.append(Transient(kind, tuple(float(x) for x in size), path.astype(np.float32), yaw, visible, mat, alpha))
        footprints = footprints + [(p, radius) for p in path[:: max(1, frames // 8)]]
    return out


def random_scene(rng: np.random.Generator, frames: int, height: int, width: int, dynamic: bool,
                 transient_distance: tuple[float, float] = TRANSIENT_DISTANCE,
                 transient_travel: tuple[float, float] = TRANSIENT_TRAVEL, transient_scale: float = 1.0) -> SceneSpec:
    """Draw one scene: room, 2-5 static objects, camera path, intrinsics and (if ``dynamic``) up to 1-3 transients
    whose paths start ``transient_distance`` metres (min, max) ahead of the middle frame's camera and cover
    ``transient_travel`` metres (min, max; straight-line distance start to end) over the clip, their sizes multiplied
    by ``transient_scale`` (1: people-sized). A transient whose path
    leaves the room, passes the camera, crosses a static object or an earlier transient's path, or stays out of view
    is redrawn up to 100 times and then left out: with the default paths nearly every scene keeps one (46 of the 48
    dynamic test scenes, 167 of the first 192 training scenes; the others two; benchmarks/RESULTS.md v1.2)."""
    size = np.array([rng.uniform(4.0, 7.0), rng.uniform(2.6, 3.2), rng.uniform(5.0, 9.0)])
    half_xz = size[[0, 2]] / 2
    wall_names = tuple(n for n in ALL_NAMES if n not in ("text", "page"))
    wall = _material(rng, wall_names, width)
    mats = [wall if rng.random() < 0.5 else _material(rng, wall_names, width) for _ in range(4)]
    floor = _material(rng, ("brick", "gravel", "grass", "wood", "tiles", "checker", "plaster"), width)
    ceiling = _material(rng, PROCEDURAL_NAMES, width)
    room = Room(np.array([-half_xz[0], 0.0, -half_xz[1]], dtype=np.float32),
                np.array([half_xz[0], size[1], half_xz[1]], dtype=np.float32),
                [mats[0], mats[1], floor, ceiling, mats[2], mats[3]])
    kind, c2w = _camera_path(rng, half_xz, size[1], frames)
    f_norm = rng.uniform(0.7, 1.3)
    fxfycxcy = np.array([f_norm * width, f_norm * width,
                         width / 2 + rng.uniform(-0.02, 0.02) * width, height / 2 + rng.uniform(-0.02, 0.02) * height])
    statics, footprints = _static_objects(rng, half_xz, c2w[:, [0, 2], 3], width, int(rng.integers(2, 6)))
    light_dir = np.array([rng.uniform(-0.5, 0.5), 1.0, rng.uniform(-0.5, 0.5)])
    light = Light(light_dir / np.linalg.norm(light_dir),
                  np.array([rng.uniform(-0.5, 0.5) * half_xz[0], size[1] - 0.3, rng.uniform(-0.5, 0.5) * half_xz[1]]))
    transients = (_transients(rng, half_xz, c2w, fxfycxcy, height, width, int(rng.integers(1, 4)), footprints,
                              tuple(transient_distance), tuple(transient_travel), float(transient_scale))
                  if dynamic else [])
    return SceneSpec(room, statics, light, c2w, fxfycxcy, height, width, kind, transients)
