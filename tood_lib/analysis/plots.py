"""Every drawing the commands and notebooks use. Each returns a matplotlib Figure (or a PIL image)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
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


def draw_detections(image, boxes, labels, scores=None, class_names=None, gt_boxes=None, score_thr: float = 0.0,
                    width: int = 2) -> Image.Image:
    """An RGB image (PIL or HxWx3 array) with boxes drawn: ground truth in dashed white, detections
    coloured by class with 'name score' labels."""
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
    for box, label, score in zip(np.asarray(boxes), np.asarray(labels), scores):
        if score < score_thr:
            continue
        colour = tuple(int(255 * c) for c in PALETTE[int(label) % len(PALETTE)])
        x1, y1, x2, y2 = map(float, box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        name = class_names[int(label)] if class_names is not None else str(int(label))
        text = f"{name} {score:.2f}"
        tw = draw.textlength(text)
        draw.rectangle((x1, max(0, y1 - 12), x1 + tw + 4, max(12, y1)), fill=colour)
        draw.text((x1 + 2, max(0, y1 - 12)), text, fill="black")
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
