"""Deterministic synthetic scenes: coloured shapes on a cluttered background, with exact boxes.

A scene is drawn from a seed alone, so the same seed gives the same image and boxes on every
machine. This is the seed of the built-in data set (written as COCO JSON + images later).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "diamond", "cross", "ring", "bar", "star", "hexagon", "arrow")


def _polygon(kind: str, x1: float, y1: float, x2: float, y2: float) -> list[tuple[float, float]]:
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    if kind == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if kind == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    if kind == "hexagon":
        return [(x1 + w / 4, y1), (x2 - w / 4, y1), (x2, cy), (x2 - w / 4, y2), (x1 + w / 4, y2), (x1, cy)]
    if kind == "arrow":
        return [(x1, cy - h / 6), (cx, cy - h / 6), (cx, y1), (x2, cy), (cx, y2), (cx, cy + h / 6), (x1, cy + h / 6)]
    if kind == "star":
        # A five-pointed star does not reach the bottom and sides of the box it is drawn from;
        # stretch its points so that it touches all four sides and the box stays tight.
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.4)
        px, py = radii * np.cos(angles), radii * np.sin(angles)
        px = x1 + (px - px.min()) / (px.max() - px.min()) * w
        py = y1 + (py - py.min()) / (py.max() - py.min()) * h
        return list(zip(px.tolist(), py.tolist()))
    raise ValueError(kind)


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, box, color) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if kind == "circle":
        draw.ellipse(box, fill=color)
    elif kind == "square":
        draw.rectangle(box, fill=color)
    elif kind == "ring":
        draw.ellipse(box, outline=color, width=max(2, int(min(w, h) / 6)))
    elif kind == "bar":
        draw.rectangle(box, fill=color)
    elif kind == "cross":
        draw.rectangle((x1 + w / 3, y1, x2 - w / 3, y2), fill=color)
        draw.rectangle((x1, y1 + h / 3, x2, y2 - h / 3), fill=color)
    else:
        draw.polygon(_polygon(kind, x1, y1, x2, y2), fill=color)


def shape_mask(kind: str, box, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels that ``draw_shape`` paints for this shape and box."""
    height, width = size
    mask = Image.new("L", (width, height), 0)
    draw_shape(ImageDraw.Draw(mask), kind, box, 255)
    return np.asarray(mask) > 0


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray, min_diff: int = 60) -> tuple[int, ...]:
    """A random RGB colour that differs from the background by at least min_diff in some channel,
    so that no object is camouflaged (the clutter stays within ±40 of the background)."""
    while True:
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background).max() >= min_diff:
            return tuple(int(c) for c in colour)


# The object-size laws (side = √(w·h) as a fraction of the image's short side). "single_level": the
# main job's scenes, sides uniform in 0.08-0.45 (at 128-192 px every ATSS positive lands on P3).
# "multi_level": the CPU bench's (ablations/bench.py), sides log-uniform in 0.08-0.9, so that, like
# COCO's, the objects spread over every octave and the positives over P3-P6.
SIZE_LAWS = {"single_level": ((0.08, 0.45), False), "multi_level": ((0.08, 0.9), True)}  # (side range, log-uniform)


def draw_side(rng: np.random.Generator, side_range: tuple[float, float], log_uniform: bool) -> float:
    """One object side (fraction of the short side): uniform, or log-uniform (as many objects per octave)."""
    low, high = side_range
    if log_uniform:
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


def draw_scene(seed: int, size: tuple[int, int] = (320, 320), max_objects: int = 6,
               min_visible: float = 0.5, max_tries: int = 20, sizes: str = "single_level"):
    """-> (image (H, W, 3) uint8 RGB, boxes (N, 4) float32 x1y1x2y2, labels (N,) int64).

    Everything is drawn from ``np.random.default_rng(seed)``, so a seed gives the same scene on
    every machine. Objects are drawn one after another; a placement is rejected (and redrawn, up
    to ``max_tries`` times, after which that object is left out) when it would leave an earlier
    object with less than ``min_visible`` of its own pixels visible. The boxes are the full
    (amodal) shape boxes; with at least half of every shape showing, each label stays honest.
    ``sizes`` names an entry of :data:`SIZE_LAWS`.
    """
    if sizes not in SIZE_LAWS:
        raise ValueError(f"sizes: expected one of {tuple(SIZE_LAWS)}, got {sizes!r}")
    side_range, log_uniform = SIZE_LAWS[sizes]
    rng = np.random.default_rng(seed)
    height, width = size
    background = rng.integers(60, 200, size=3)
    image = Image.new("RGB", (width, height), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(10, 30))):  # clutter: thin lines and faint blobs
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        colour = tuple(int(c) for c in np.clip(background + rng.integers(-40, 40, size=3), 0, 255))
        if rng.random() < 0.5:
            draw.line((x, y, x + rng.uniform(-80, 80), y + rng.uniform(-80, 80)), fill=colour, width=int(rng.integers(1, 4)))
        else:
            r = rng.uniform(4, 20)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    owner = np.full((height, width), -1, dtype=np.int32)  # index of the object on top at each pixel
    full_area: list[int] = []  # pixels of each object when drawn
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _ in range(max_tries):
            label = int(rng.integers(len(CLASSES)))
            side = draw_side(rng, side_range, log_uniform) * min(height, width)
            aspect = rng.uniform(0.5, 2.0) if CLASSES[label] != "bar" else rng.choice([0.25, 4.0])
            w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
            w, h = min(w, width - 2), min(h, height - 2)
            x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            colour = _contrasting_colour(rng, background)
            box = (float(x1), float(y1), float(x1 + w), float(y1 + h))
            mask = shape_mask(CLASSES[label], box, size)
            if full_area:
                visible = np.bincount(owner[owner >= 0], minlength=len(full_area))
                hidden = owner[mask]
                lost = np.bincount(hidden[hidden >= 0], minlength=len(full_area))
                if ((visible - lost) < min_visible * np.asarray(full_area)).any():
                    continue
            owner[mask] = len(full_area)
            full_area.append(int(mask.sum()))
            draw_shape(draw, CLASSES[label], box, colour)
            boxes.append(box)
            labels.append(label)
            break
    return np.asarray(image), np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)
