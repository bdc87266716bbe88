"""The first bench's misaligned scenes (version 1), kept unchanged so that its archived results can be
re-derived: ``misaligned.py`` is the current design, and says why this one was replaced.

Misaligned scenes: the class is a small off-centre mark, the box is the large body around it.

The paper's Fig. 1 shows why classification and localisation disagree: the anchor that best
tells *what* an object is often sits on a discriminative part, away from the anchor that best
tells *where* its edges are. These scenes make that the rule. Every object is

- a **body**: a large ellipse or rounded rectangle in a random colour; its extent *is* the box,
  and its kind and colour say nothing about the class;
- a **mark**: one of :data:`MARKS`, in a colour that contrasts with the body, about 0.3 of the
  body's short side, placed near a random corner of the body, well away from its centre. The
  mark alone decides the class.

So the location best for classification (on the mark) and the one best for localisation (near
the body's centre, where all four sides are in view) differ by design, by about a third of the
box. Free-floating marks on the background (``decoys``) are not objects: a detector must see a
mark *inside* a body. Bodies never overlap, so every mark and every box edge stays visible.

Same conventions as ``synthetic.py``: a scene comes from ``draw_misaligned_scene(seed)`` alone,
so the same seed gives the same pixels and boxes on every machine. Each annotation written by
``builtin.py`` also carries ``mark_bbox`` (COCO xywh) so analyses can ask where the mark is.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tood_lib.data.misaligned import MARKS, _draw_body, _overlaps
from tood_lib.data.synthetic import _contrasting_colour, draw_shape

BODY_KINDS = ("ellipse", "rounded_rectangle")
MARK_FRACTION = (0.26, 0.34)  # mark side / body short side
# How far towards a corner the mark's centre goes (0: centre, 1: as far as it fits). Version 1's own
# value, kept here: the redesigns changed theirs, and a frozen generator must not follow them
# (tests/test_misaligned_data.py pins version 1's pixels).
CORNER_REACH = (0.55, 0.95)


def mark_box_v1(body, rng: np.random.Generator):
    """The mark's box inside ``body`` (x1, y1, x2, y2): its side 0.26-0.34 of the body's short side,
    near a random corner, fully inside the body (for an ellipse too)."""
    side = rng.uniform(*MARK_FRACTION) * min(body[2] - body[0], body[3] - body[1])
    x1, y1, x2, y2 = body
    w, h = x2 - x1, y2 - y1
    reach = rng.uniform(*CORNER_REACH)
    sx, sy = rng.choice([-1.0, 1.0], size=2)
    # the farthest the mark's centre may go from the body centre along each axis: for the ellipse,
    # the point at 45° on an ellipse shrunk by the mark's half-diagonal (a safe, simple bound)
    half_w, half_h = (w - side) / 2, (h - side) / 2
    if half_w <= 0 or half_h <= 0:
        return None
    limit_x, limit_y = half_w * 0.70, half_h * 0.70  # 0.70 ≈ cos 45°: inside the ellipse and the rounded corner
    cx = (x1 + x2) / 2 + sx * reach * limit_x
    cy = (y1 + y2) / 2 + sy * reach * limit_y
    return (float(cx - side / 2), float(cy - side / 2), float(cx + side / 2), float(cy + side / 2))


def draw_misaligned_scene_v1(seed: int, size: tuple[int, int] = (320, 320), max_objects: int = 4,
                          max_decoys: int = 2, max_tries: int = 30):
    """-> (image (H, W, 3) uint8 RGB, boxes (N, 4) float32 x1y1x2y2 of the bodies, labels (N,) int64
    indices into MARKS, mark boxes (N, 4) float32). Decoy marks are drawn but not annotated."""
    rng = np.random.default_rng(seed)
    height, width = size
    background = rng.integers(60, 200, size=3)
    image = Image.new("RGB", (width, height), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 20))):  # clutter, as in the shapes scenes
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        colour = tuple(int(c) for c in np.clip(background + rng.integers(-40, 40, size=3), 0, 255))
        draw.line((x, y, x + rng.uniform(-80, 80), y + rng.uniform(-80, 80)), fill=colour, width=int(rng.integers(1, 4)))
    bodies, marks, labels = [], [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _ in range(max_tries):
            side = rng.uniform(0.22, 0.48) * min(height, width)
            aspect = rng.uniform(0.6, 1.7)
            w, h = min(side * np.sqrt(aspect), width - 2), min(side / np.sqrt(aspect), height - 2)
            x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            body = (float(x1), float(y1), float(x1 + w), float(y1 + h))
            if _overlaps(body, bodies, gap=4.0):
                continue
            mark = mark_box_v1(body, rng)
            if mark is None:
                continue
            label = int(rng.integers(len(MARKS)))
            body_colour = _contrasting_colour(rng, background)
            mark_colour = _contrasting_colour(rng, np.asarray(body_colour), min_diff=90)
            _draw_body(draw, BODY_KINDS[int(rng.integers(len(BODY_KINDS)))], body, body_colour)
            draw_shape(draw, MARKS[label], mark, mark_colour)
            bodies.append(body)
            marks.append(mark)
            labels.append(label)
            break
    for _ in range(int(rng.integers(0, max_decoys + 1))):  # marks on the background: not objects
        for _ in range(max_tries):
            side = rng.uniform(0.06, 0.12) * min(height, width)
            x1, y1 = rng.uniform(0, width - side), rng.uniform(0, height - side)
            decoy = (float(x1), float(y1), float(x1 + side), float(y1 + side))
            if _overlaps(decoy, bodies, gap=6.0):
                continue
            draw_shape(draw, MARKS[int(rng.integers(len(MARKS)))], decoy, _contrasting_colour(rng, background, min_diff=90))
            break
    as_array = lambda boxes: np.asarray(boxes, dtype=np.float32).reshape(-1, 4)  # noqa: E731
    return np.asarray(image), as_array(bodies), np.asarray(labels, dtype=np.int64), as_array(marks)
