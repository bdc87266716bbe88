"""The CPU bench as a miniature of COCO's scale structure: what was scaled, by how much, and the check.

On COCO at the official 1333x800 resize, ATSS (8-stride anchors, k = 9) puts its positives on
P3 / P4 / P5 / P6 / P7 as 42 / 26-29 / 18-21 / 9-10 / 2 % (``results/levels_bench.csv``). The first
CPU bench (128 px, objects of 0.08-0.45 of the image, 8-stride anchors) put 100 % on P3: a
five-level detector whose P4-P7 never saw a positive, so nothing TOOD does per level or across
levels was exercised. The bench keeps the network's strides (8-128: they are ResNet's) and scales
the two things that decide the level of an object instead:

* **the anchor**: its side is ``ANCHOR_SCALE`` = 2 strides instead of 8 — the 4x shrink from a
  512-px image to our 128 px (8 x 128 / 512), so that an object meets the anchor of the level it
  would meet at COCO's proportions. The P3 anchor is 16/128 = 0.125 of the image, COCO's 64/800
  = 0.08. FCOS's regression ranges are divided by the same 4 (``grid.CPU_RANGE_SCALE``);
* **the objects**: sides log-uniform over 0.08-0.9 of the image (``synthetic.SIZE_LAWS
  ["multi_level"]``; the misaligned scenes 0.13-0.9), as many per octave as the canvas allows, so
  that they cover every level's octave as COCO's objects do.

What the miniature gives up (``level_summary``): an object spans about 2 anchor points per side
on the level that learns it, against about 7 on COCO, so ATSS gives it about 4 positives instead
of 9, and TAL's top-13 chooses among a median 17 anchor points inside the object instead of about
200. P6 holds 2.5 % of the positives instead of 9 % (larger objects do not fit a 128-px image) and
P7 none (a 128-px image has one P7 cell).

Declared before any run on the bench (``LEVEL_TARGET``): on both bench data sets, ATSS's
positives on the ground truth put at least 10 % on each of P3, P4 and P5, something on P6, and at
most 60 % on P3. ``tests/test_bench_levels.py`` checks the committed table against it.

Candidates measured before choosing (``CANDIDATES``: the same proportions at four canvases; the
shares barely move, the step cost does; ``benchmarks/bench_ablation_protocol.py --candidates``):
128 px is the cheapest that meets the target, so it is the bench.

Each bench has its own schedule (:data:`SCHEDULES`): the multi-level bench's objects take longer to
learn (a constant-LR probe, ``results/bench_schedule_probe.json``, had parallel + ATSS settling near
epoch 20), so it trains 32 epochs, not the first bench's 12.

Two benches are defined (:data:`BENCHES`): "single_level", the first one, which produced the
first grid (kept in ``results/v1_single_level/``), and "multi_level", this one. :data:`ACTIVE_BENCH`
is the grid's: "multi_level" since issue 19 (``results/``; results/README.md says how far its grid has
run). Each bench keeps its runs in its own folder (``runs.bench_runs_dir``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

BENCH_CANVAS = 128  # px, square
ANCHOR_SCALE = 2.0  # anchor side in strides (COCO: 8)
# bench -> (canvas, anchor scale, the data sets' size law: builtin.build_builtin_dataset(sizes=...))
BENCHES = {"single_level": (128, 8.0, "single_level"), "multi_level": (BENCH_CANVAS, ANCHOR_SCALE, "multi_level")}
ACTIVE_BENCH = "multi_level"  # the grid's bench (the first bench's grid: results/v1_single_level/)
# canvas -> anchor scale: the same proportions (anchor side / image = 2 x 8 / 128) at other canvases
CANDIDATES = {128: 2.0, 160: 2.5, 192: 3.0, 256: 4.0}


@dataclass(frozen=True)
class Schedule:
    """A bench's training schedule, when its runs are evaluated, and when a run counts as settled.

    The plateau rule at the end: the final AP within 1 AP point of the AP at ``settled_from``. Before
    the first LR drop (``pre_drop_from`` not None): the AP at ``lr_steps[0]`` within 1 AP point of
    the AP at ``pre_drop_from``, so that the drop is not what makes the end look settled."""
    epochs: int
    lr_steps: tuple[int, ...]
    eval_epochs: tuple[int, ...]
    settled_from: int
    pre_drop_from: int | None = None


# The first bench's recipe (grid.CPU_RECIPE: LR x0.1 after 7 and 9 of 12, the rule from epoch 9, 75 %).
# The multi-level bench's, declared in results/README.md before the design check or any grid run used
# it: its constant-LR probe (results/bench_schedule_probe.json) has parallel + ATSS settling near epoch
# 20 and TOOD near 24, where the 12-epoch recipe stopped both on the rise; so 24 epochs at constant LR,
# then x0.1 after 24 and 28, judged from 18 before the drop and from 28 at the end.
SCHEDULES = {
    "single_level": Schedule(12, (7, 9), (3, 6, 9, 10, 11, 12), settled_from=9),
    "multi_level": Schedule(32, (24, 28), (4, 8, 12, 16, 18, 20, 24, 26, 28, 30, 32), settled_from=28, pre_drop_from=18),
}
LEVEL_TARGET = dict(min_share={"P3": 10.0, "P4": 10.0, "P5": 10.0}, positive=("P6",), max_share={"P3": 60.0})
COCO_SCALE = (1333, 800)
# The core grid's budget on this bench (issue 19): its fp32 wall time on 2 cores, summed over the
# invocations that ran it (``results/ablations_cpu_timing.json``: ``core_wall_seconds``).
CORE_GRID_BUDGET_MINUTES = 240


def _bench(bench: str | None) -> tuple[int, float, str]:
    bench = ACTIVE_BENCH if bench is None else bench
    if bench not in BENCHES:
        raise ValueError(f"bench: expected one of {tuple(BENCHES)}, got {bench!r}")
    return BENCHES[bench]


def bench_schedule(bench: str | None = None) -> Schedule:
    """The training schedule of ``bench`` (default: the active bench)."""
    _bench(bench)
    return SCHEDULES[ACTIVE_BENCH if bench is None else bench]


def scaled_schedule(schedule: Schedule, factor: int) -> Schedule:
    """``schedule`` ``factor`` times as long: every epoch number in it multiplied by ``factor`` (the
    schedule check, issue 19: the multi-level bench's 32 epochs become 64, LR drops after 48 and 56,
    the plateau rule judged from 56 at the end and from 36 before the first drop). The warm-ups (LR,
    iterations; ATSS before TAL, epochs) are not scaled: they are the start of training, not its length."""
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"schedule factor: expected a whole number >= 1, got {factor!r}")
    f = int(factor)
    return Schedule(schedule.epochs * f, tuple(s * f for s in schedule.lr_steps), tuple(e * f for e in schedule.eval_epochs),
                    schedule.settled_from * f, None if schedule.pre_drop_from is None else schedule.pre_drop_from * f)


def schedule_overrides(bench: str | None = None, factor: int = 1) -> list[str]:
    """The config overrides of a bench's schedule (epochs and LR steps), ``factor`` times as long."""
    schedule = scaled_schedule(bench_schedule(bench), factor)
    return [f"train.epochs={schedule.epochs}", "train.lr_steps=" + ",".join(map(str, schedule.lr_steps))]


def bench_overrides(bench: str | None = None) -> list[str]:
    """The config overrides that put a CPU-scale model on a bench's canvas and anchors (default: the active bench)."""
    canvas, anchor_scale, _ = _bench(bench)
    return [f"data.img_scale={canvas},{canvas}", f"model.anchor_scale={anchor_scale:g}"]


def bench_data_root(dataset: str, bench: str | None = None, progress: bool = False) -> Path:
    """Build (once) and return a bench's data set, "shapes" or "misaligned" (default: the active bench's)."""
    from tood_lib.data.builtin import build_builtin_dataset

    if dataset not in ("shapes", "misaligned"):
        raise ValueError(f"dataset: expected 'shapes' or 'misaligned', got {dataset!r}")
    return build_builtin_dataset(scenes=dataset, sizes=_bench(bench)[2], progress=progress)


def target_failures(summary: dict) -> list[str]:
    """What a level summary (``analysis.levels.level_summary``) misses of LEVEL_TARGET; [] when it meets it."""
    failures = [f"{lvl} holds {summary[f'share_{lvl}']:.1f} % < {low:g} %" for lvl, low in LEVEL_TARGET["min_share"].items()
                if summary[f"share_{lvl}"] < low]
    failures += [f"{lvl} holds no positive" for lvl in LEVEL_TARGET["positive"] if not summary[f"share_{lvl}"] > 0]
    failures += [f"{lvl} holds {summary[f'share_{lvl}']:.1f} % > {high:g} %" for lvl, high in LEVEL_TARGET["max_share"].items()
                 if summary[f"share_{lvl}"] > high]
    return failures


def _portable(root) -> str:
    """A data root as the committed table names it: relative to the repository (or to its parent, for
    ``../shared``), never a path of one machine."""
    from tood_lib.data.coco import REPO_ROOT  # (not grid's: grid imports this module)

    root = Path(root).resolve()
    for base, prefix in ((REPO_ROOT, Path()), (REPO_ROOT.parent, Path(".."))):
        if root.is_relative_to(base):
            return str(prefix / root.relative_to(base))
    return root.name


def audit_row(label: str, root, split: str, canvas: tuple[int, int], anchor_scale: float, preset: str = "tood_small",
              images: int | None = None) -> dict:
    """ATSS on the ground truth of one split at one size -> a level-summary row (``data`` = label) with
    TAL's candidate pool per level (``pool_Pk``, ``analysis.levels.pool_shares``)."""
    from tood_lib.analysis.levels import assignment_audit, level_summary, pool_shares
    from tood_lib.config import apply_overrides, get_preset
    from tood_lib.data.coco import CocoDetection

    cfg = apply_overrides(get_preset(preset), [f"data.img_scale={canvas[0]},{canvas[1]}", f"model.anchor_scale={anchor_scale:g}"])
    dataset = CocoDetection(root, split, cfg.data, train=False, verbose=False)
    audit = assignment_audit(dataset, cfg, "atss", images=images)
    summary = level_summary(audit, cfg.model.strides)
    return dict(data=label, root=_portable(root), split=split, size=f"{canvas[0]}x{canvas[1]}", anchor_scale=anchor_scale,
                **summary, **pool_shares(audit, cfg.model.strides))


def bench_level_table(coco_root=None, candidates: bool = True) -> pd.DataFrame:
    """The committed level table: COCO (COCO Tiny or ``coco_root``) at the official resize beside the
    bench's two data sets (the bench and, with ``candidates``, the other canvases) and the first bench."""
    from tood_lib.data.coco import coco_tiny_root

    rows = []
    coco = Path(coco_root) if coco_root is not None else coco_tiny_root()
    if coco is not None:
        for split in ("val", "train"):
            rows.append(audit_row(f"COCO ({coco.name}, {split}), official resize", coco, split, COCO_SCALE, 8.0,
                                  preset="tood_r50_fpn_1x_coco"))
    roots = {name: bench_data_root(name, "multi_level") for name in ("shapes", "misaligned")}
    for canvas, scale in (CANDIDATES.items() if candidates else [(BENCH_CANVAS, ANCHOR_SCALE)]):
        for name, root in roots.items():
            role = "bench" if canvas == BENCH_CANVAS else "candidate"
            rows.append(dict(audit_row(f"{name} ({role}), {canvas} px, anchor {scale:g} strides", root, "val",
                                       (canvas, canvas), scale), role=role, dataset=name))
    for name in ("shapes", "misaligned"):
        rows.append(dict(audit_row(f"{name} (first bench), 128 px, anchor 8 strides", bench_data_root(name, "single_level"),
                                   "val", (128, 128), 8.0), role="first bench", dataset=name))
    table = pd.DataFrame(rows)
    table["role"] = table["role"].fillna("COCO")
    table["dataset"] = table["dataset"].fillna("coco")
    table["meets_target"] = [not target_failures(r) for r in table.to_dict("records")]
    return table
