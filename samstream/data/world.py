"""A procedural video world with exact ground truth: shapes of several kinds, colours, sizes and textures,
moving over varied backgrounds (still, linear, bouncing, accelerating, entering and leaving the frame),
occluding one another. Seeded and deterministic at any resolution and length.

Everything is described in a resolution-free `Scene` (positions and sizes as fractions of the frame), so one
scene renders the same at 112 px for training and 1280x720 for a demo. `render(scene, t, width, height)`
gives the RGB frame and the visible (occlusion-cut) mask of every object; with a `View` it shows a zoomed-in part
of the scene instead (training's object-centred views: train/world_batches.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
    "purple": (140, 50, 180), "orange": (245, 130, 30), "white": (245, 245, 245), "black": (20, 20, 20),
}
SIZES = {"small": (0.05, 0.08), "medium": (0.09, 0.13), "large": (0.14, 0.19)}  # radius / frame short side
TEXTURES = ("solid", "striped", "dotted")
MOTIONS = ("still", "linear", "bouncing", "accelerating", "crossing")  # crossing: enters and leaves the frame
BACKGROUNDS = ("plain", "gradient", "noise", "checker")


@dataclass(frozen=True)
class WorldObject:
    """One object: its attributes and its trajectory, in frame fractions (x of width, y of height)."""

    id: int  # 1-based, unique in its scene
    shape: str
    colour: str
    size: str
    texture: str
    motion: str
    radius: float  # fraction of the frame's short side
    x0: float
    y0: float
    vx: float = 0.0  # per frame, fractions
    vy: float = 0.0
    ax: float = 0.0
    ay: float = 0.0
    z: int = 0  # higher draws on top
    angle0: float = 0.0
    spin: float = 0.0  # degrees per frame

    def position(self, t: int) -> tuple[float, float]:
        x = self.x0 + self.vx * t + 0.5 * self.ax * t * t
        y = self.y0 + self.vy * t + 0.5 * self.ay * t * t
        if self.motion == "bouncing":
            x, y = _reflect(x, self.radius), _reflect(y, self.radius)
        return x, y


@dataclass(frozen=True)
class Background:
    kind: str
    colour_a: tuple[int, int, int]
    colour_b: tuple[int, int, int]
    seed: int


@dataclass(frozen=True)
class View:
    """A zoomed-in window on a scene: centred on (cx, cy) (frame fractions), `zoom` times magnified. Objects and
    their masks are magnified; the background, and the period of stripes and dots, are drawn as in the whole frame
    (pixel-scale detail)."""

    cx: float = 0.5
    cy: float = 0.5
    zoom: float = 1.0

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        """A scene position (fractions) -> its position in the view (fractions)."""
        return (x - self.cx) * self.zoom + 0.5, (y - self.cy) * self.zoom + 0.5


WHOLE_FRAME = View()


def size_class(radius: float) -> str:
    """The `SIZES` name an object of this apparent radius (fraction of the short side) looks like."""
    return next((name for name, (_, hi) in SIZES.items() if radius <= hi), "large")


@dataclass(frozen=True)
class Scene:
    id: int
    frames: int
    background: Background
    objects: tuple[WorldObject, ...] = field(default_factory=tuple)


def _reflect(v: float, margin: float) -> float:
    """Fold a coordinate into [margin, 1 - margin] (an elastic bounce off the frame's edges)."""
    lo, hi = margin, 1.0 - margin
    span = hi - lo
    if span <= 0:
        return 0.5
    u = (v - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


def make_scene(seed: int, frames: int, min_objects: int = 2, max_objects: int = 6, scene_id: int | None = None,
               palette: int | None = None) -> Scene:
    """A random scene, the same for the same arguments (`scene_id` only names it; default: the seed). `palette`
    draws every object's colour from that many colours (chosen per scene): in a one- or two-colour scene a colour
    word rarely picks one object, so only the shape word explains the targets."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    a, b = rng.choice(len(names), size=2, replace=False)
    # backgrounds are dimmed so objects of every colour stand out a little
    dim = lambda c: tuple(int(v * 0.45 + 40) for v in COLOURS[names[c]])  # noqa: E731
    background = Background(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], dim(a), dim(b), int(rng.integers(1 << 31)))
    count = int(rng.integers(min_objects, max_objects + 1))
    if palette is None:
        objects = [random_object(rng, i + 1, frames) for i in range(count)]
    else:
        if not 1 <= palette <= len(names):
            raise ValueError(f"palette must be 1..{len(names)} colours (got {palette})")
        colours = [names[c] for c in rng.choice(len(names), size=palette, replace=False)]
        objects = [random_object(rng, i + 1, frames, colour=colours[int(rng.integers(palette))]) for i in range(count)]
    return Scene(seed if scene_id is None else scene_id, frames, background, tuple(objects))


def random_object(rng: np.random.Generator, obj_id: int, frames: int, **fixed) -> WorldObject:
    """A random object; keyword arguments fix attributes (shape=, colour=, size=, texture=, motion=)."""
    shape = fixed.get("shape") or SHAPES[rng.integers(len(SHAPES))]
    colour = fixed.get("colour") or list(COLOURS)[rng.integers(len(COLOURS))]
    size = fixed.get("size") or list(SIZES)[rng.integers(len(SIZES))]
    texture = fixed.get("texture") or TEXTURES[rng.choice(len(TEXTURES), p=[0.6, 0.2, 0.2])]
    motion = fixed.get("motion") or MOTIONS[rng.integers(len(MOTIONS))]
    radius = float(rng.uniform(*SIZES[size]))
    x0, y0 = (float(v) for v in rng.uniform(0.15, 0.85, size=2))
    speed = float(rng.uniform(0.004, 0.015))
    heading = float(rng.uniform(0, 2 * np.pi))
    vx, vy = speed * np.cos(heading), speed * np.sin(heading)
    ax = ay = 0.0
    if motion == "still":
        vx = vy = 0.0
    elif motion == "accelerating":
        vx, vy = vx * 0.3, vy * 0.3
        ax, ay = 0.6 * vx / max(frames, 1), 0.6 * vy / max(frames, 1)
    elif motion == "crossing":  # from outside one edge to outside the opposite one over the video
        side = int(rng.integers(4))
        start = -radius - 0.02
        travel = (1.0 + 2 * radius + 0.1) / max(frames * float(rng.uniform(0.5, 0.9)), 1)
        along = float(rng.uniform(0.2, 0.8))
        x0, y0, vx, vy = [(start, along, travel, 0.0), (1 - start, along, -travel, 0.0),
                          (along, start, 0.0, travel), (along, 1 - start, 0.0, -travel)][side]
    return WorldObject(obj_id, shape, colour, size, texture, motion, radius, x0, y0, float(vx), float(vy),
                       float(ax), float(ay), int(rng.integers(0, 10)), float(rng.uniform(0, 360)),
                       float(rng.uniform(-3, 3)) if shape != "circle" else 0.0)


# -- rendering ---------------------------------------------------------------------------------------------
def render(scene: Scene, t: int, width: int, height: int, view: View = WHOLE_FRAME,
           silhouettes: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(RGB frame (H, W, 3) uint8, {object id: visible mask (H, W) bool}) at frame t. Objects wholly hidden or
    outside the frame (or the view) have an all-false mask. `silhouettes`: the objects' `object_mask`s at t in
    this view, when the caller already has them."""
    frame = render_background(scene.background, width, height)
    visible: dict[int, np.ndarray] = {}
    taken = np.zeros((height, width), bool)
    order = sorted(scene.objects, key=lambda o: (-o.z, -o.id))  # front to back
    if silhouettes is None:
        silhouettes = {obj.id: object_mask(obj, t, width, height, view) for obj in order}
    for obj in order:
        visible[obj.id] = silhouettes[obj.id] & ~taken
        taken |= silhouettes[obj.id]
    for obj in reversed(order):  # paint back to front
        if silhouettes[obj.id].any():
            paint(frame, silhouettes[obj.id], obj)
    return frame, {obj.id: visible[obj.id] for obj in scene.objects}


def render_background(bg: Background, width: int, height: int) -> np.ndarray:
    a, b = np.array(bg.colour_a, np.float32), np.array(bg.colour_b, np.float32)
    if bg.kind == "plain":
        img = np.broadcast_to(a, (height, width, 3)).copy()
    elif bg.kind == "gradient":
        ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        img = np.broadcast_to(a * (1 - ramp) + b * ramp, (height, width, 3)).copy()
    elif bg.kind == "checker":
        cell = max(4, min(width, height) // 8)
        yy, xx = np.mgrid[0:height, 0:width]
        img = np.where((((yy // cell) + (xx // cell)) % 2 == 0)[..., None], a, a * 0.7 + b * 0.3)
    else:  # noise: smooth blobs, the same at every resolution
        rng = np.random.default_rng(bg.seed)
        coarse = rng.uniform(0, 1, (6, 8)).astype(np.float32)
        field_ = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)[..., None]
        img = a * (1 - field_) + b * field_
    return img.clip(0, 255).astype(np.uint8)


def object_mask(obj: WorldObject, t: int, width: int, height: int, view: View = WHOLE_FRAME) -> np.ndarray:
    """The object's full silhouette (before occlusion) at frame t."""
    x, y = view.to_frame(*obj.position(t))
    cx, cy = x * width, y * height
    r = obj.radius * view.zoom * min(width, height)
    mask = np.zeros((height, width), np.uint8)
    angle = np.deg2rad(obj.angle0 + obj.spin * t)
    if obj.shape == "circle":
        cv2.circle(mask, (round(cx * 16), round(cy * 16)), round(r * 16), 1, -1, cv2.LINE_8, shift=4)
    else:
        points = _polygon(obj.shape, cx, cy, r, angle)
        cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if shape == "star":
        k = np.arange(10)
        radii = np.where(k % 2 == 0, r, r * 0.45)
        theta = angle + k * np.pi / 5
    else:
        sides = {"square": 4, "triangle": 3, "hexagon": 6, "diamond": 4}[shape]
        k = np.arange(sides)
        theta = angle + k * 2 * np.pi / sides + (np.pi / 4 if shape == "square" else 0.0)
        radii = np.full(sides, r if shape != "diamond" else r)
        if shape == "diamond":  # a rhombus: tall and narrow
            radii = np.where(k % 2 == 0, r, r * 0.6)
    return np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], axis=1)


def paint(frame: np.ndarray, mask: np.ndarray, obj: WorldObject) -> None:
    colour = np.array(COLOURS[obj.colour], np.float32)
    if obj.texture == "solid":
        frame[mask] = colour.astype(np.uint8)
        return
    h, w = mask.shape
    yy, xx = np.nonzero(mask)
    period = max(3, int(min(h, w) * 0.025))
    if obj.texture == "striped":
        on = ((xx + yy) // period) % 2 == 0
    else:  # dotted
        on = ((xx // period) % 2 == 0) & ((yy // period) % 2 == 0)
    shade = np.where(on[:, None], colour, colour * 0.45)
    frame[yy, xx] = shade.astype(np.uint8)
