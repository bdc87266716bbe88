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
        pts = []
        for i in range(10):
            r = 0.5 if i % 2 == 0 else 0.2
            angle = -np.pi / 2 + i * np.pi / 5
            pts.append((cx + r * w * np.cos(angle), cy + r * h * np.sin(angle)))
        return pts
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


def draw_scene(seed: int, size: tuple[int, int] = (320, 320), max_objects: int = 6):
    """-> (image (H, W, 3) uint8 RGB, boxes (N, 4) float32 x1y1x2y2, labels (N,) int64)."""
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
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(CLASSES)))
        side = rng.uniform(0.08, 0.45) * min(height, width)
        aspect = rng.uniform(0.5, 2.0) if CLASSES[label] != "bar" else rng.choice([0.25, 4.0])
        w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
        w, h = min(w, width - 2), min(h, height - 2)
        x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw_shape(draw, CLASSES[label], (x1, y1, x1 + w, y1 + h), colour)
        boxes.append((x1, y1, x1 + w, y1 + h))
        labels.append(label)
    return np.asarray(image), np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)
