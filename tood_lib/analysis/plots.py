"""Every drawing the commands and notebooks use. Each returns a matplotlib Figure (or a PIL image)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image, ImageDraw

PALETTE = plt.get_cmap("tab10").colors


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a run's metrics.jsonl (or of the run folder)."""
    path = Path(path)
    path = path / "metrics.jsonl" if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curves(records: list[dict], title: str = "training losses", smooth: int = 10):
    """Loss terms and LR against the optimiser step; the ATSS warm-up → TAL switch is marked."""
    steps = [r for r in records if r.get("kind") == "step" and r.get("rank", 0) == 0]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw=dict(height_ratios=(3, 1)))
    x = np.array([r["step"] for r in steps])
    for i, key in enumerate(k for k in ("loss", "loss_cls", "loss_bbox", "loss_centerness") if steps and k in steps[0]):
        y = np.array([r[key] for r in steps], dtype=float)
        ax.plot(x, y, color=PALETTE[i], alpha=0.25, lw=0.8)
        if len(y) >= smooth:
            ys = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            ax.plot(x[smooth - 1:], ys, color=PALETTE[i], lw=1.8, label=f"{key} (mean of {smooth})")
        else:
            ax.plot(x, y, color=PALETTE[i], lw=1.8, label=key)
    switch = next((r["step"] for r in steps if r.get("phase") == "tal"), None)
    for a in (ax, ax_lr):
        if switch is not None:
            a.axvline(switch, color="k", ls="--", lw=1)
    if switch is not None:
        ax.text(switch, ax.get_ylim()[1] * 0.95, "  ATSS warm-up → TAL", va="top", fontsize=9)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    ax_lr.plot(x, [r["lr"] for r in steps], color="k")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimiser step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    return fig


OUTCOMES = ("correct", "wrong class", "poor box", "background")


def detection_outcomes(boxes, labels, gt_boxes, gt_labels, iou_thr: float = 0.5) -> list[str]:
    """What each detection is, against the ground truth of its image: "correct" (IoU >= ``iou_thr`` with an
    object of its class), "wrong class" (that overlap only with an object of another class), "poor box"
    (an object of its class, but IoU below the threshold) or "background". boxes (N, 4), gt_boxes (G, 4)
    xyxy in the same pixels; -> N outcomes."""
    from tood_lib.boxes import box_iou

    boxes, gt_boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32), torch.as_tensor(np.asarray(gt_boxes), dtype=torch.float32)
    labels, gt_labels = np.asarray(labels).astype(int), np.asarray(gt_labels).astype(int)
    if len(boxes) == 0:
        return []
    if len(gt_boxes) == 0:
        return ["background"] * len(boxes)
    iou = box_iou(boxes.reshape(-1, 4), gt_boxes.reshape(-1, 4)).numpy()
    out = []
    for i, label in enumerate(labels):
        same = iou[i, gt_labels == label]
        if same.size and same.max() >= iou_thr:
            out.append("correct")
        elif iou[i].max() >= iou_thr:
            out.append("wrong class")
        elif same.size and same.max() >= 0.1:
            out.append("poor box")
        else:
            out.append("background")
    return out


def _place_label(size, box, taken, image_size):
    """Where a label of ``size`` (w, h) goes: above the box's top-left corner, else inside it, else below it,
    else above its right end; the first spot that overlaps no label already ``taken`` and lies in the
    image (else the least-overlapping one). -> (x, y) of its top-left corner."""
    w, h = size
    x1, y1, x2, y2 = box
    W, H = image_size
    spots = [(x1, y1 - h), (x1, y1), (x1, y2), (x2 - w, y1 - h), (x2 - w, y2 - h)]
    spots = [(min(max(0, x), W - w), min(max(0, y), H - h)) for x, y in spots]

    def overlap(spot):
        sx, sy = spot
        return sum(max(0, min(sx + w, tx2) - max(sx, tx1)) * max(0, min(sy + h, ty2) - max(sy, ty1))
                   for tx1, ty1, tx2, ty2 in taken)

    return min(spots, key=lambda spot: (overlap(spot) > 0, overlap(spot), spots.index(spot)))


def draw_detections(image, boxes, labels, scores=None, class_names=None, gt_boxes=None, score_thr: float = 0.0,
                    width: int = 2, gt_labels=None) -> Image.Image:
    """An RGB image (PIL or HxWx3 array) with boxes drawn: ground truth in dashed white, detections
    coloured by class with 'name score' labels, placed so that no two labels overlap where the image leaves
    room. With ``gt_labels`` too, a detection that is not correct says what it is instead
    (``detection_outcomes``): "truth: <class>" for a wrong class, "poor box", "background"."""
    img = Image.fromarray(np.asarray(image)).convert("RGB") if not isinstance(image, Image.Image) else image.convert("RGB")
    draw = ImageDraw.Draw(img)
    for box in ([] if gt_boxes is None else np.asarray(gt_boxes)):
        x1, y1, x2, y2 = map(float, box)
        for i in range(0, int(x2 - x1), 6):  # dashed outline
            draw.line((x1 + i, y1, min(x1 + i + 3, x2), y1), fill="white", width=width)
            draw.line((x1 + i, y2, min(x1 + i + 3, x2), y2), fill="white", width=width)
        for i in range(0, int(y2 - y1), 6):
            draw.line((x1, y1 + i, x1, min(y1 + i + 3, y2)), fill="white", width=width)
            draw.line((x2, y1 + i, x2, min(y1 + i + 3, y2)), fill="white", width=width)
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores)
    keep = [i for i in range(len(scores)) if scores[i] >= score_thr]
    boxes, labels, scores = np.asarray(boxes)[keep], np.asarray(labels)[keep], scores[keep]
    outcomes = (detection_outcomes(boxes, labels, gt_boxes, gt_labels) if gt_labels is not None and gt_boxes is not None
                else [None] * len(boxes))
    gt_names = {}
    if gt_labels is not None and len(boxes) and len(np.asarray(gt_boxes)):
        from tood_lib.boxes import box_iou

        iou = box_iou(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                      torch.as_tensor(np.asarray(gt_boxes), dtype=torch.float32).reshape(-1, 4))
        gt_names = {i: int(np.asarray(gt_labels)[int(iou[i].argmax())]) for i in range(len(boxes))}
    labels_drawn = []
    for i, (box, label, score) in enumerate(zip(boxes, labels, scores)):
        colour = tuple(int(255 * c) for c in PALETTE[int(label) % len(PALETTE)])
        x1, y1, x2, y2 = map(float, box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        labels_drawn.append((i, colour, (x1, y1, x2, y2)))
    taken = []
    for i, colour, box in labels_drawn:  # labels after every box, so that no box is drawn over a label
        name = class_names[int(labels[i])] if class_names is not None else str(int(labels[i]))
        text = f"{name} {scores[i]:.2f}"
        outcome = outcomes[i]
        if outcome == "wrong class":
            truth = gt_names.get(i)
            text += f" (truth: {class_names[truth] if class_names is not None else truth})"
        elif outcome in ("poor box", "background"):
            text += f" ({outcome})"
        w, h = draw.textlength(text) + 4, 12
        x, y = _place_label((w, h), box, taken, img.size)
        taken.append((x, y, x + w, y + h))
        draw.rectangle((x, y, x + w, y + h), fill=colour if outcome in (None, "correct") else (255, 255, 255),
                       outline=colour)
        draw.text((x + 2, y), text, fill="black")
    return img


def detection_grid(images: list[Image.Image], titles: list[str] | None = None, columns: int = 3,
                   suptitle: str = "detections"):
    """Small multiples of drawn images."""
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(img)
        if titles:
            ax.set_title(titles[i], fontsize=9)
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_run_overview(records: list[dict], title: str = "training run"):
    """Any run's metrics log at a glance: loss terms (smoothed), learning rate, throughput and memory,
    and AP after each evaluation (x: optimiser step; the ATSS warm-up → TAL switch dashed)."""
    steps = [r for r in records if r.get("kind") == "step" and r.get("rank", 0) == 0]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    x = np.array([r["step"] for r in steps])
    smooth = max(1, min(20, len(steps) // 10))
    kernel = np.ones(smooth) / smooth
    for i, key in enumerate(k for k in ("loss", "loss_cls", "loss_bbox", "loss_centerness") if steps and k in steps[0]):
        y = np.array([r[key] for r in steps], dtype=float)
        axes[0, 0].plot(x[smooth - 1:], np.convolve(y, kernel, mode="valid"), color=PALETTE[i], label=key)
    axes[0, 0].set_title(f"losses (mean of {smooth} steps)", fontsize=10)
    axes[0, 0].legend(fontsize=8)
    axes[0, 1].plot(x, [r["lr"] for r in steps], color="k")
    axes[0, 1].set_title("learning rate", fontsize=10)
    axes[1, 0].plot(x, [r["images_per_s"] for r in steps], color=PALETTE[0], alpha=0.6)
    axes[1, 0].set_ylabel("images / s", color=PALETTE[0])
    twin = axes[1, 0].twinx()
    twin.plot(x, [r["memory_mb"] / 1024 for r in steps], color=PALETTE[3])
    twin.set_ylabel("peak memory (GiB)", color=PALETTE[3])
    axes[1, 0].set_title("throughput and memory", fontsize=10)
    if evals:
        axes[1, 1].plot([r["step"] for r in evals], [r["AP"] for r in evals], marker="o", label="AP")
        axes[1, 1].plot([r["step"] for r in evals], [r["AP50"] for r in evals], marker="s", label="AP50")
        axes[1, 1].legend(fontsize=8)
    else:
        axes[1, 1].text(0.5, 0.5, "no evaluation in this log\n(--eval-every N evaluates every N epochs)",
                        ha="center", va="center", transform=axes[1, 1].transAxes)
    axes[1, 1].set_title("box AP on val", fontsize=10)
    switch = next((r["step"] for r in steps if r.get("phase") == "tal"), None)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.set_xlabel("optimiser step")
        if switch is not None:
            ax.axvline(switch, color="k", ls="--", lw=1)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
