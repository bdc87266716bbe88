"""Misaligned scenes: the class is a small off-centre mark, the box is the large body around it.

The paper's Fig. 1 shows why classification and localisation disagree: the anchor that best
tells *what* an object is often sits on a discriminative part, away from the anchor that best
tells *where* its edges are. These scenes make that the rule. Every object is

- a **body**: an ellipse or rounded rectangle in a colour that only just stands out from the
  background (its edges are what a box must find, so they are made hard on purpose: low contrast,
  clutter lines drawn across them); its extent *is* the box, and its kind and colour say nothing
  about the class;
- a **mark**: one of :data:`MARKS`, in a colour that contrasts strongly with the body, placed near
  a random corner of the body, as far from its centre as it fits. The mark alone decides the class. Its
  side is 0.4 of the body's short side, but never under :data:`MIN_MARK` of the image (a mark must stay
  readable at the bench's 128 px: two cells of P3) nor over 0.6 of the body.

Two kinds of distractors make the mark necessary *and* insufficient: **unmarked bodies** (the same
bodies without a mark: not objects, so a body alone is not enough) and **decoy marks** on the
background (not objects either, so a mark alone is not enough). Bodies never overlap each other.

The body sides follow the bench's size law (log-uniform, like ``synthetic.SIZE_LAWS["multi_level"]``,
from :data:`BODY_SIDES`), so the positives spread over P3-P6 as on the shapes (``analysis/levels.py``).

This is the multi-level bench's design (issue 19; ``builtin.py`` writes it to ``data/bench_misaligned``).
Design 3 had marks of 0.3 of the body (at least 0.10 of the image), 0.55-0.95 of the way to a corner
and up to 2 unmarked bodies; design 4 (this one) 0.4 (at least 0.12), 0.8-1.0 and up to 3. Each
attempt's check is in ``results/misalignment_check_attempts.json``.
The first bench's version (``misaligned_v1.py``: high-contrast bodies of 0.22-0.48 of the image,
marks 0.26-0.34 of the body, no unmarked bodies) measured as *better* aligned than the shapes and
capped AP near 29 with an unreadable mark.
Whether this version is misaligned is not assumed: ``analysis/misalignment_check.py`` measures it
on a trained model, against the declared rule, and ``results/misalignment_check.json`` holds the result.

Same conventions as ``synthetic.py``: a scene comes from ``draw_misaligned_scene(seed)`` alone,
so the same seed gives the same pixels and boxes on every machine. Each annotation written by
``builtin.py`` also carries ``mark_bbox`` (COCO xywh) so analyses can ask where the mark is.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tood_lib.data.synthetic import _contrasting_colour, draw_shape, draw_side

DESIGN = 4  # bump on every change of what a seed draws: builtin.py records it, so old builds are redone
MARKS = ("circle", "square", "triangle", "cross")  # the classes: the mark's shape
BODY_KINDS = ("ellipse", "rounded_rectangle")
BODY_SIDES = (0.13, 0.9)  # √(w·h) / image short side, log-uniform (the bench's law; the smallest still hold a readable mark)
BODY_ASPECT = (0.5, 2.0)
BODY_CONTRAST = (30, 60)  # the body differs from the background by this much in its most different channel
MARK_FRACTION = 0.4  # mark side / body short side ...
MIN_MARK = 0.12  # ... but at least this share of the image's short side ...
MAX_MARK_FRACTION = 0.6  # ... and at most this share of the body's short side
MARK_CONTRAST = 90
CORNER_REACH = (0.8, 1.0)  # how far towards a corner the mark's centre goes (0: centre, 1: as far as it fits)


def _draw_body(draw: ImageDraw.ImageDraw, kind: str, box, colour) -> None:
    if kind == "ellipse":
        draw.ellipse(box, fill=colour)
    else:
        x1, y1, x2, y2 = box
        draw.rounded_rectangle(box, radius=0.15 * min(x2 - x1, y2 - y1), fill=colour)


def _overlaps(box, others, gap: float) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 - gap < b[2] and b[0] < x2 + gap and y1 - gap < b[3] and b[1] < y2 + gap for b in others)


def _body_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, ...]:
    """A colour whose largest channel difference from the background lies in BODY_CONTRAST."""
    low, high = BODY_CONTRAST
    while True:
        colour = np.clip(background + rng.integers(-high, high + 1, size=3), 0, 255)
        if low <= np.abs(colour - background).max() <= high:
            return tuple(int(c) for c in colour)


def mark_side(body, image_short: float) -> float:
    """The mark's side for a body (x1, y1, x2, y2): MARK_FRACTION of its short side, within [MIN_MARK · image, 0.6 · body]."""
    short = min(body[2] - body[0], body[3] - body[1])
    return float(min(max(MARK_FRACTION * short, MIN_MARK * image_short), MAX_MARK_FRACTION * short))


def mark_box(body, rng: np.random.Generator, side: float):
    """The mark's box inside ``body`` (x1, y1, x2, y2): near a random corner, fully inside the body
    (for an ellipse too: the mark's corner nearest the rim stays inside it)."""
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


def _place_body(rng, width: int, height: int, taken: list, max_tries: int):
    """A body box that overlaps none of ``taken`` (4 px apart), or None after max_tries."""
    short = min(height, width)
    for _ in range(max_tries):
        side = draw_side(rng, BODY_SIDES, True) * short
        aspect = rng.uniform(*BODY_ASPECT)
        w, h = min(side * np.sqrt(aspect), width - 2), min(side / np.sqrt(aspect), height - 2)
        x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        body = (float(x1), float(y1), float(x1 + w), float(y1 + h))
        if not _overlaps(body, taken, gap=4.0):
            return body
    return None


def draw_misaligned_scene(seed: int, size: tuple[int, int] = (320, 320), max_objects: int = 4,
                          max_unmarked: int = 3, max_decoys: int = 2, max_tries: int = 30):
    """-> (image (H, W, 3) uint8 RGB, boxes (N, 4) float32 x1y1x2y2 of the marked bodies, labels (N,)
    int64 indices into MARKS, mark boxes (N, 4) float32). Unmarked bodies and decoy marks are drawn
    but not annotated: they are background."""
    rng = np.random.default_rng(seed)
    height, width = size
    short = min(height, width)
    background = rng.integers(60, 200, size=3)
    image = Image.new("RGB", (width, height), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(image)

    def clutter(count: int) -> None:  # thin lines within ±40 of the background, as in the shapes scenes
        for _ in range(count):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            colour = tuple(int(c) for c in np.clip(background + rng.integers(-40, 40, size=3), 0, 255))
            draw.line((x, y, x + rng.uniform(-80, 80), y + rng.uniform(-80, 80)), fill=colour, width=int(rng.integers(1, 4)))

    clutter(int(rng.integers(8, 20)))
    bodies, marks, labels, taken = [], [], [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _ in range(max_tries):
            body = _place_body(rng, width, height, taken, max_tries=1)
            mark = None if body is None else mark_box(body, rng, mark_side(body, short))
            if mark is not None:
                break
        else:
            continue
        taken.append(body)
        bodies.append(body)
        marks.append(mark)
        labels.append(int(rng.integers(len(MARKS))))
    for _ in range(int(rng.integers(0, max_unmarked + 1))):  # bodies without a mark: not objects
        body = _place_body(rng, width, height, taken, max_tries)
        if body is not None:
            taken.append(body)
    colours = [_body_colour(rng, background) for _ in taken]
    for body, colour in zip(taken, colours):
        _draw_body(draw, BODY_KINDS[int(rng.integers(len(BODY_KINDS)))], body, colour)
    clutter(int(rng.integers(4, 10)))  # across the bodies' edges too: finding them takes the whole outline
    for mark, label, colour in zip(marks, labels, colours):  # last, so that nothing covers a mark
        draw_shape(draw, MARKS[label], mark, _contrasting_colour(rng, np.asarray(colour), min_diff=MARK_CONTRAST))
    for _ in range(int(rng.integers(0, max_decoys + 1))):  # marks on the background: not objects
        for _ in range(max_tries):
            side = rng.uniform(MIN_MARK, 1.6 * MIN_MARK) * short
            x1, y1 = rng.uniform(0, width - side), rng.uniform(0, height - side)
            decoy = (float(x1), float(y1), float(x1 + side), float(y1 + side))
            if _overlaps(decoy, taken, gap=6.0):
                continue
            draw_shape(draw, MARKS[int(rng.integers(len(MARKS)))], decoy, _contrasting_colour(rng, background, min_diff=MARK_CONTRAST))
            break
    as_array = lambda boxes: np.asarray(boxes, dtype=np.float32).reshape(-1, 4)  # noqa: E731
    return np.asarray(image), as_array(bodies), np.asarray(labels, dtype=np.int64), as_array(marks)
