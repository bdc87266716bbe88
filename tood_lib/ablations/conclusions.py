"""What a learner can carry away from the CPU grid: the claims grouped into families, each family's
verdicts on both benches side by side, the diagnostics that explain them, whether the protocol checks
(a longer schedule, a fine-tuned backbone) keep their orders, what the bench cannot say, and the
COCO-scale runs that would settle it (issue 19).

Everything a sentence states about a result is computed here from the result files
(``verdicts_cpu.csv`` of each bench, the diagnostics, the checks); what is fixed text is only what a
miniature cannot measure, which does not depend on any result. Notebooks 05 and 06 render
:func:`family_markdown` for each of :data:`FAMILIES`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tood_lib.ablations.checks import (FINETUNE_PAIRS, FINETUNE_SEEDS, SCHEDULE_PAIRS, SCHEDULE_SEEDS,
                                      finetune_check_dir, finetune_comparison, schedule_check_dir, schedule_comparison)
from tood_lib.ablations.claims import CLAIMS_BY_NAME
from tood_lib.ablations.mechanisms import MODEL_NAMES

COCO_TRAIN_IMAGES = 118_287  # COCO train2017
COCO_EPOCHS = 12  # R-50 1x, the paper's ablation recipe
COCO_SEEDS = 3  # enough for the 2-SE rule on a paired difference; the paper reports one run
# Training images per second on one V100 for a one-stage R-50-FPN detector at 1333x800: detectron2's model
# zoo times RetinaNet R-50 1x at 0.200 s per iteration of 16 images on 8 V100s (MODEL_ZOO.md). Neither the
# paper nor MMDetection publishes TOOD's training speed, and no GPU has measured ours yet
# (benchmarks/gpu_check.sh does), so this is a proxy: TOOD's head has 6 shared convs against RetinaNet's 4 + 4.
PROXY_V100_IMAGES_PER_S = 16 / 0.200 / 8


@dataclass(frozen=True)
class Family:
    """A family of claims: their names (``claims.CLAIMS``), the diagnostics that test a cause when the
    family is not reproduced, and what no result of the miniature can decide for it."""
    title: str
    claims: tuple[str, ...]
    diagnostics: tuple[str, ...] = ()
    cannot_say: str = ""  # a template: the fields of :func:`scale_facts`


_T6 = tuple(f"t6_{m}_{v}" for m in ("PCC", "IoU", "redundant", "error") for v in ("t_head_atss", "tal_parallel", "tood"))
FAMILIES: tuple[Family, ...] = (
    Family("T-Head vs parallel head", ("t_head_atss_af", "t_head_atss_ab", "t_head_fcos", "t_head_fovea",
                                       "t_head_atss_vs_atss_AP"),
           ("centerness_helps_atss_parallel", "qfl_helps_atss_t_head"),
           "The bench's heads see an object through about {pts_side:.1f} anchor points per side on its level (COCO: "
           "{coco_pts_side:.1f}), "
           "so the T-Head's offsets O and probability map M have little room to move a box or to pick a "
           "location within an object; its tower reads frozen features of a backbone pretrained on the shapes."),
    Family("TAL vs ATSS", ("tal_vs_atss_parallel", "tal_vs_atss_qfl", "tal_t_head_vs_atss_t_head_AP"), (),
           "ATSS gives a bench object {pos_obj:.1f} positives on average (COCO: {coco_pos_obj:.1f}) and TAL's top-13 chooses "
           "among a median {inside:.0f} anchor points inside it (COCO: {coco_inside:.0f}), so both assigners work with "
           "smaller pools than on COCO."),
    Family("TOOD vs ATSS", ("tood_vs_atss_af", "tood_vs_atss_ab", "tap_vs_tal"), (),
           "The bench's objects are synthetic shapes on plain backgrounds at 128 px; the size of a gap on it says "
           "nothing about the size of the gap on COCO, only its direction under the same recipe."),
    Family("α and β", ("alpha1_beta6_near_best",), (),
           "The exponents weigh score against IoU inside TAL's pool, a median {inside:.0f} anchor points per object "
           "here against {coco_inside:.0f} on COCO: with so few candidates the settings choose among nearly the "
           "same points, so a tie here is weak evidence either way."),
    Family("M, O and layer attention", ("prob_map_helps", "offsets_help", "layer_attention_helps"), (),
           "With {pts_side:.1f} anchor points per object side, O moves a box edge within a small object, and P6 "
           "holds {p6:.1f} % of the positives (COCO {coco_p6:.1f} %) and P7 {p7:.1f} % (COCO {coco_p7:.1f} %), so the "
           "layer attention of the coarsest levels learns mostly from negatives."),
    Family("Table 6's alignment statistics", _T6, (),
           "PCC and top-10 IoU are computed over the anchor points inside an object: a median {inside:.0f} here, "
           "{coco_inside:.0f} on COCO, so each statistic rests on far fewer points per object."),
)


def scale_facts(levels_csv: str | Path) -> dict:
    """What the miniature gives up, from the level audit (``results/levels_bench.csv``): the bench shapes'
    points per object side on its level, positives per object, anchor points inside an object and P6/P7
    shares, beside COCO Tiny's val split at the official resize (``coco_*``)."""
    table = pd.read_csv(levels_csv)
    bench = table[table["root"] == "data/bench_shapes"].query("anchor_scale == 2").iloc[0]
    coco = table[table["data"].str.startswith("COCO") & (table["split"] == "val")].iloc[0]
    keys = dict(pts_side="points_per_side", pos_obj="positives_per_object", inside="inside_points", p6="share_P6",
                p7="share_P7")
    return {**{k: float(bench[c]) for k, c in keys.items()}, **{f"coco_{k}": float(coco[c]) for k, c in keys.items()}}


def _verdicts(results_dir: str | Path | None) -> pd.DataFrame:
    path = None if results_dir is None else Path(results_dir) / "verdicts_cpu.csv"
    if path is None or not path.is_file() or path.stat().st_size < 2:
        return pd.DataFrame(columns=["dataset", "claim", "delta", "se", "seeds", "verdict", "metric"])
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def family_table(family: Family, results_dir: str | Path, first_bench_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per (claim, data set) of ``family`` judged on that data set: the paper's Δ, this bench's
    mean paired Δ ± SE (AP in points; PCC and IoU as numbers; boxes as counts), seeds and verdict, and
    the first bench's verdict beside it (``first_bench_verdict``; "not run" where it has none)."""
    new, old = _verdicts(results_dir), _verdicts(first_bench_dir)
    rows = []
    for name in family.claims:
        claim = CLAIMS_BY_NAME[name]
        for dataset in claim.datasets:
            mine = new[(new["claim"] == name) & (new["dataset"] == dataset)]
            before = old[(old["claim"] == name) & (old["dataset"] == dataset)]
            r = mine.iloc[0] if len(mine) else None
            rows.append(dict(claim=name, dataset=dataset, statement=claim.statement, metric=claim.metric,
                             paper_delta=claim.paper_delta,
                             delta=float(r["delta"]) if r is not None else float("nan"),
                             se=float(r["se"]) if r is not None else float("nan"),
                             seeds=int(r["seeds"]) if r is not None else 0,
                             verdict=r["verdict"] if r is not None else "not run",
                             first_bench_verdict=before.iloc[0]["verdict"] if len(before) else "not run"))
    return pd.DataFrame(rows)


def _delta_text(row) -> str:
    if math.isnan(row["delta"]):
        return "no runs yet"
    digits = 0 if row["metric"] in ("redundant", "error") else 3 if row["metric"] in ("PCC", "IoU") else 2
    unit = " AP" if row["metric"].startswith("AP") else ""
    se = "" if math.isnan(row["se"]) else f" ± {row['se']:.{digits}f}"
    return f"Δ {row['delta']:+.{digits}f}{se}{unit}, {row['seeds']} seeds"


def family_markdown(family: Family, results_dir: str | Path, first_bench_dir: str | Path | None = None,
                    diagnosis: str = "", facts: dict | None = None) -> str:
    """The family's section of a notebook's conclusion, in Markdown, every number and direction rendered
    from the verdict files and ``facts`` (:func:`scale_facts`, default from ``results_dir/levels_bench.csv``):
    what this bench found (counts of verdicts and each claim's Δ ± SE beside the
    first bench's verdict), the diagnostics' verdicts (why), ``diagnosis`` (extra rendered text, e.g. the
    ranking numbers), what the bench cannot say, and the COCO-scale runs that would decide it."""
    table = family_table(family, results_dir, first_bench_dir)
    judged = table[~table["verdict"].isin(["not run", "one seed: no verdict"])]
    counts = judged["verdict"].value_counts()
    lines = [f"**{family.title}.** "]
    if judged.empty:
        lines[0] += "No claim of this family has finished on this bench yet."
    else:
        parts = [f"{int(counts.get(v, 0))} {v}" for v in ("reproduced", "reversed", "not distinguishable") if counts.get(v, 0)]
        lines[0] += f"Of {len(judged)} judged (claim, data set) pairs on this bench: " + ", ".join(parts) + "."
        missing = len(table) - len(judged)
        if missing:
            lines[0] += f" {missing} not yet run."
    for row in table.to_dict("records"):
        lines.append(f"- {row['statement']} ({row['dataset']}): **{row['verdict']}** ({_delta_text(row)}; "
                     f"paper {row['paper_delta']:+g}); first bench: {row['first_bench_verdict']}"
                     if not math.isnan(row["paper_delta"]) else
                     f"- {row['statement']} ({row['dataset']}): **{row['verdict']}** ({_delta_text(row)}); "
                     f"first bench: {row['first_bench_verdict']}")
    if family.diagnostics:
        diag = pd.concat([family_table(Family("", (d,)), results_dir) for d in family.diagnostics], ignore_index=True)
        lines.append("*Why (the declared diagnostics):* " + "; ".join(
            f"{r['statement'].removeprefix('diagnostic: ')} ({r['dataset']}): {r['verdict']} ({_delta_text(r)})"
            for r in diag.to_dict("records")) + ".")
    if diagnosis:
        lines.append(diagnosis)
    lines.append(checks_line(family, results_dir))
    facts = facts if facts is not None else scale_facts(Path(results_dir) / "levels_bench.csv")
    lines.append(f"*What this bench cannot say:* {family.cannot_say.format(**facts)}")
    configs = sorted({e for name in family.claims + family.diagnostics for e in _experiments(name)})
    lines.append(f"*Decisive at COCO scale:* {coco_cost_text(configs)}")
    return "\n".join(lines)


def family_pairs(family: Family) -> list[tuple[str, str, tuple[str, ...], str]]:
    """The (baseline, variant, data sets, statement) of the family's AP claims, each pair once (with its
    first claim's statement and every data set its claims are judged on), in declaration order."""
    pairs: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {}
    for name in family.claims:
        c = CLAIMS_BY_NAME[name]
        if c.metric == "AP" and c.kind == "greater":
            datasets, statement = pairs.get((c.baseline, c.variant), ((), c.statement))
            pairs[(c.baseline, c.variant)] = (tuple(dict.fromkeys(datasets + c.datasets)), statement)
    return [(b, v, d, st) for (b, v), (d, st) in pairs.items()]


def _check_text(row, name: str, declared_seeds: int) -> str:
    """One check's say on one pair (``row``: a row of ``checks.order_comparison``, or None before any run)."""
    if row is None or pd.isna(row.get("agreement")):
        seeds = 0 if row is None else int(row[f"{name}_seeds"])
        return f"not judged yet ({seeds} of {declared_seeds} paired seeds finished)"
    word = {"same": "the same order", "opposite": "**the opposite order**",
            "one not distinguishable": "a tie under one of the two"}[row["agreement"]]
    return f"{word} (Δ {row[f'{name}_delta']:+.2f} ± {row[f'{name}_se']:.2f} AP, {row[f'{name}_order']})"


def checks_line(family: Family, results_dir: str | Path) -> str:
    """Whether the family's AP verdicts survive the protocol checks (``checks``): for each of its pairs
    that a check covers, the order under twice the schedule (per data set) and with the backbone
    fine-tuned (shapes), against the grid's; both computed from the runs each check has committed, so
    they can be read while it runs. A pair whose order a check reverses is named as holding for the
    grid's protocol only; pairs no check covers are named."""
    results_dir = Path(results_dir)
    base_path, longer_path = results_dir / "ablation_runs_cpu.csv", schedule_check_dir(results_dir) / "ablation_runs_cpu.csv"
    schedule = (schedule_comparison(pd.read_csv(base_path), pd.read_csv(longer_path))
                if base_path.is_file() and longer_path.is_file() else pd.DataFrame())
    tuned_path = finetune_check_dir(results_dir) / "ablation_runs_cpu.csv"
    tuned = finetune_comparison(pd.read_csv(base_path), pd.read_csv(tuned_path)) \
        if base_path.is_file() and tuned_path.is_file() else None
    parts, uncovered, flipped = [], [], []
    pairs = family_pairs(family)
    for baseline, variant, datasets, statement in pairs:
        label = f"{MODEL_NAMES.get(variant, variant)} vs {MODEL_NAMES.get(baseline, baseline)}"
        said = []
        if (baseline, variant) in SCHEDULE_PAIRS:
            for dataset in datasets:
                hit = schedule[(schedule.dataset == dataset) & (schedule.baseline == baseline) & (schedule.variant == variant)] \
                    if len(schedule) else schedule
                row = hit.iloc[0].to_dict() if len(hit) else None
                said.append(f"twice the schedule, {dataset}: " + _check_text(row, "schedule_2x", len(SCHEDULE_SEEDS)))
                if row is not None and row.get("agreement") == "opposite":
                    flipped.append(f"{label} on the {dataset} (the grid's schedule)")
        if (baseline, variant) in FINETUNE_PAIRS:
            hit = None if tuned is None else tuned[(tuned.baseline == baseline) & (tuned.variant == variant)]
            said.append("fine-tuned backbone, shapes: " + ("not run on this bench yet" if hit is None or hit.empty
                                                           else _check_text(hit.iloc[0].to_dict(), "finetuned", len(FINETUNE_SEEDS))))
            if hit is not None and len(hit) and hit.iloc[0].get("agreement") == "opposite":
                flipped.append(f"{label} on the shapes (the frozen backbone)")
        if said:
            parts.append(f"{label}: " + "; ".join(said))
        else:
            uncovered.append(statement)
    if not pairs:
        return ("*Under the protocol checks:* the checks compare AP orders, and this family's claims are not "
                "pairs of AP, so no check covers them: its verdicts rest on the grid's schedule and frozen backbone alone.")
    if not parts:
        return ("*Under the protocol checks:* none of this family's pairs is in the schedule or the fine-tuning "
                "check, so its verdicts rest on the grid's schedule and frozen backbone alone.")
    text = "*Under the protocol checks* (each pair's AP order by the same 2-SE rule, against the grid's runs of the same seeds): " + \
        " · ".join(parts) + "."
    if flipped:
        text += (f" A check reverses the order of {'; '.join(flipped)}: there the grid's verdict belongs to its "
                 "protocol, not to the methods, and the longer or fine-tuned run is the better estimate.")
    if uncovered:
        text += f" Not covered by either check: {'; '.join(uncovered)}."
    return text


def _experiments(claim_name: str) -> list[str]:
    c = CLAIMS_BY_NAME[claim_name]
    return [c.baseline, c.variant, *c.others]


def coco_cost_text(experiments: list[str], seeds: int = COCO_SEEDS,
                   gpu_images_per_s: float | None = PROXY_V100_IMAGES_PER_S) -> str:
    """The COCO-scale runs that would settle a family: its configs under ``configs/ablations/``, and how
    much training they are (R-50 1x: 12 epochs of COCO train2017 per run, ``seeds`` each), in GPU-hours at
    ``gpu_images_per_s`` training images per second on one GPU (default :data:`PROXY_V100_IMAGES_PER_S`,
    a V100 proxy; pass a measured throughput instead, or None for no GPU-hours)."""
    runs = len(experiments) * seeds
    images = runs * COCO_EPOCHS * COCO_TRAIN_IMAGES
    text = (f"{', '.join(f'`configs/ablations/{e}.json`' for e in experiments)}, {seeds} seeds each: {runs} runs of "
            f"R-50 1x, {images / 1e6:.1f} M training images in all")
    if gpu_images_per_s:
        proxy = " (a V100 proxy: RetinaNet R-50's training speed in detectron2's model zoo)" \
            if gpu_images_per_s == PROXY_V100_IMAGES_PER_S else ""
        text += (f", about {images / gpu_images_per_s / 3600:,.0f} GPU-hours at {gpu_images_per_s:g} images/s per GPU{proxy}, "
                 f"{images / runs / gpu_images_per_s / 3600 / 8:.1f} h per run on 8 GPUs")
    return text + "."
