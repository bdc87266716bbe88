"""The mechanisms the multi-level grid revealed, rendered from its result files (issue 19).

All were found after the grid had run, so they are explanations, not declared tests; each rests on an
analysis the grid now records for every run (``diagnose.py``), and each function returns, beside its
Markdown, the numbers behind every direction it states, so that the notebook cell after it can assert them.

* :func:`layer_attention_mechanism` — why the trained layer attention is the same on every level: its
  two 1x1 convs stay at their 10^-3 init and only their biases learn, so w is a learned constant per task.
* :func:`tal_level_mechanism` — why TAL-trained models put most positives and detections on P3: TAL
  picks among the anchor points inside an object, ~3/4 of which lie on P3 on COCO as on the bench, and
  the trained predictions give t no reason to prefer another level.
* :func:`pcc_mechanism` — where the Table 6 PCC of the TAL-trained models (parallel + TAL, TOOD) falls below or
  ties with parallel + ATSS's: in which part of each object's top-50 pool, inside the object or outside it
  (``analysis.pcc_breakdown``).
* :func:`box_count_mechanism` — why Table 6's redundant and error counts reverse or tie: they are totals over
  the boxes a model keeps, and the models that reverse them keep more boxes, not worse ones.
* :func:`schedule_flip_mechanism` — what changes, box counts and AP, for a pair whose order the schedule check
  reverses.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

COCO_ITERATIONS = 118_287 // 16 * 12  # R-50 1x: 12 epochs of train2017 at batch 16 (the paper's recipe)
MODEL_NAMES = {"atss_parallel": "parallel + ATSS", "atss_t_head": "T-Head + ATSS", "tal_parallel": "parallel + TAL",
               "tood": "TOOD"}  # Table 6's four models, as the text names them


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()


def _steps(results_dir: Path) -> int | None:
    runs = _read(results_dir / "ablation_runs_cpu.csv")
    return int(runs["steps"].max()) if "steps" in runs.columns and len(runs) else None


def layer_attention_mechanism(results_dir: str | Path) -> tuple[str, dict]:
    """From ``layer_attention_parameters_cpu.csv`` and ``layer_attention_summary_cpu.csv`` ->
    (Markdown, facts). Facts: runs, w1_growth_max, w2_growth_max (trained mean |w| / init's),
    b2_spread_max, gap_to_bias_only_max, level_gap_max, task_gap_max, steps. ("", {}) without runs."""
    results_dir = Path(results_dir)
    params = _read(results_dir / "layer_attention_parameters_cpu.csv")
    summary = _read(results_dir / "layer_attention_summary_cpu.csv")
    if params.empty or summary.empty:
        return "", {}
    facts = dict(runs=len(params.groupby(["dataset", "experiment", "seed"])),
                 w1_growth_min=float(params["w1_growth"].min()), w1_growth_max=float(params["w1_growth"].max()),
                 w2_growth_min=float(params["w2_growth"].min()), w2_growth_max=float(params["w2_growth"].max()),
                 b2_spread_max=float(params["b2_spread"].max()),
                 gap_to_bias_only_max=float(params["max_gap_to_bias_only"].max()),
                 level_gap_max=float(summary["level_gap"].max()), task_gap_max=float(summary["task_gap_max"].max()),
                 steps=_steps(results_dir))
    steps = f"**{facts['steps']}** " if facts["steps"] else ""
    verdicts = _read(results_dir / "verdicts_cpu.csv")
    ablation = verdicts[verdicts["claim"] == "layer_attention_helps"] if "claim" in verdicts.columns else verdicts
    judged = ", ".join(f"{r.dataset}: **{r.verdict}** (Δ {r.delta:+.2f} ± {r.se:.2f} AP, {int(r.seeds)} seeds)"
                       for r in ablation.itertuples() if r.seeds > 1)
    facts["layer_attention_helps"] = {r.dataset: r.verdict for r in ablation.itertuples() if r.seeds > 1}
    text = (
        f"*Why the layer attention is the same on every level:* $w = \\sigma(W_2\\,\\mathrm{{relu}}(W_1 \\bar x + b_1) + b_2)$, "
        f"with $\\bar x$ the level's pooled features and both 1×1 convs initialised at $\\mathcal N(0, 0.001^2)$. Over the "
        f"**{facts['runs']}** trained T-Head runs, $W_1$ ends at **{facts['w1_growth_min']:.2f}–{facts['w1_growth_max']:.2f}×** "
        f"its init's mean |w| and $W_2$ at **{facts['w2_growth_min']:.2f}–{facts['w2_growth_max']:.2f}×**, while the biases "
        f"$b_2$ spread the layers' logits by up to **{facts['b2_spread_max']:.2f}**. The measured mean weights lie within "
        f"**{facts['gap_to_bias_only_max']:.1e}** of $\\sigma(W_2\\,\\mathrm{{relu}}(b_1) + b_2)$, the attention with "
        f"$\\bar x = 0$: on this bench the layer attention is nearly a learned constant per task (largest gap between "
        f"levels **{facts['level_gap_max']:.1e}**, **{facts['task_gap_max'] / max(facts['level_gap_max'], 1e-12):.0f}×** "
        f"smaller than the largest gap between the tasks, **{facts['task_gap_max']:.2f}**). The cause is the init: "
        "the gradient that reaches $W_1$ is multiplied by $W_2$, and the one that reaches $W_2$ by "
        "$\\mathrm{relu}(W_1\\bar x + b_1)$, both of size $10^{-3}$ at the start, so a two-layer map started that "
        f"close to zero grows slowly: after the bench's {steps}SGD steps $W_1$ is still within the range above. Whether COCO's {COCO_ITERATIONS:,} iterations "
        "(R-50 1x) take it out cannot be said here; the official checkpoint can say it without any training "
        "(`analysis.layer_attention.layer_attention_parameters` on `tood_r50_fpn_1x_coco`)."
        + ("" if not judged else
           " A constant $w_k$ only rescales the reduction conv's weights for layer $k$, which the model without layer "
           "attention ($w \\equiv 1$) can learn as well; the grid's verdict on *the layer attention helps*: "
           + judged + "."))
    return text, facts


def tal_level_mechanism(results_dir: str | Path) -> tuple[str, dict]:
    """From ``tal_level_course_cpu.csv``, ``levels_bench.csv`` (the pools, COCO's included) and
    ``levels_runs_cpu.csv`` -> (Markdown, facts). Facts per data set with a course (``{dataset}_…``):
    pool_P3 (% of the candidate pool on P3), warmup_P3 (TAL's P3 share on the model at the end of
    the ATSS warm-up), first_tal_P3 (after TAL's first epoch), last_P3 (the last epoch), atss_P3 (ATSS
    on the ground truth), final_P3_mean (TAL on the trained models, all seeds), detections_P3_mean;
    and coco_pool_P3. ("", {}) without a course."""
    results_dir = Path(results_dir)
    course = _read(results_dir / "tal_level_course_cpu.csv")
    bench = _read(results_dir / "levels_bench.csv")
    runs = _read(results_dir / "levels_runs_cpu.csv")
    if course.empty or "pool_P3" not in bench.columns:
        return "", {}
    coco = bench[bench["data"].str.startswith("COCO") & (bench["split"] == "val")]
    facts = dict(coco_pool_P3=float(coco["pool_P3"].iloc[0])) if len(coco) else {}
    pools = " / ".join(f"{coco[f'pool_P{k}'].iloc[0]:.0f}" for k in range(3, 8)) if len(coco) else "not measured"
    parts = []
    for dataset, rows in course.groupby("dataset", sort=False):
        tood = rows[rows["experiment"] == "tood"] if (rows["experiment"] == "tood").any() else rows[
            rows["experiment"] == rows["experiment"].iloc[0]]
        tood = tood.sort_values("epoch")
        warm, tal = tood[tood["trained_with"] == "atss"], tood[tood["trained_with"] != "atss"]
        if warm.empty or tal.empty:
            continue
        trained = runs[(runs["dataset"] == dataset) & runs["experiment"].isin(tood["experiment"].unique())]
        ground = runs[(runs["dataset"] == dataset) & (runs["kind"] == "atss_ground_truth")]
        f = dict(pool_P3=float(tal["pool_P3"].iloc[0]), warmup_P3=float(warm["share_P3"].iloc[-1]),
                 first_tal_P3=float(tal["share_P3"].iloc[0]), last_P3=float(tal["share_P3"].iloc[-1]),
                 atss_P3=float(ground["share_P3"].mean()),
                 final_P3_mean=float(trained.loc[trained["kind"] == "tal_predictions", "share_P3"].mean()),
                 detections_P3_mean=float(trained.loc[trained["kind"] == "detections", "share_P3"].mean()),
                 seeds=int(trained["seed"].nunique()))
        experiment = tood["experiment"].iloc[0]
        towards = abs(f["first_tal_P3"] - f["pool_P3"]) < abs(f["warmup_P3"] - f["pool_P3"])
        further = f["last_P3"] > f["first_tal_P3"]
        f.update(moves_towards_pool=towards, concentrates_further=further)
        facts.update({f"{dataset}_{k}": v for k, v in f.items()})
        parts.append(
            f"on the {dataset} ({experiment}, seed 0) the pool is **{f['pool_P3']:.0f} %** P3 and ATSS on the ground truth "
            f"puts **{f['atss_P3']:.0f} %** there; TAL on the model at the end of the ATSS warm-up (epoch "
            f"{int(warm['epoch'].iloc[-1])}) would put **{f['warmup_P3']:.0f} %** of its positives on P3, after TAL's first "
            f"epoch **{f['first_tal_P3']:.0f} %** ({'towards' if towards else 'not towards'} the pool), at epoch "
            f"{int(tal['epoch'].iloc[-1])} **{f['last_P3']:.0f} %** ({'more' if further else 'not more'} than after the "
            f"first TAL epoch); over {f['seeds']} seeds the trained models' TAL positives are **{f['final_P3_mean']:.0f} %** "
            f"P3 and their detections **{f['detections_P3_mean']:.0f} %**")
    if not parts:
        return "", {}
    held = all(facts[f"{d}_last_P3"] >= facts[f"{d}_pool_P3"] - 5 for d in course["dataset"].unique()
               if f"{d}_last_P3" in facts)
    facts["pool_held"] = held
    text = (
        "*Why TAL-trained models live on P3:* TAL picks each object's top 13 anchors by $t = s^\\alpha u^\\beta$ among the "
        "anchor points inside its box. Points are 4× denser on each finer level, so that candidate pool is about three "
        f"quarters P3 on any data set whose objects span a few strides: COCO Tiny at the official resize has "
        f"**{pools} %** of its pool on P3 / P4 / P5 / P6 / P7. ATSS does not draw from the pool in proportion (it takes "
        "its top 9 per level and keeps those whose anchor fits the box); TAL does, unless $t$ prefers a level. "
        + "; ".join(parts)[0].upper() + "; ".join(parts)[1:] + ". The level a TAL-trained model detects on is thus set by where TAL's positives went, "
        f"and on this bench $t$ {'does not pull them below' if held else 'pulls them below'} the pool's share of P3 "
        "(within 5 points at the last epoch). What this bench cannot say is whether on COCO, "
        "where a large object's box is better predicted from a coarse level, $t$ does; TAL's level audit of the "
        "official checkpoint on COCO val (`python -m tood_lib levels --checkpoint …`) would say it.")
    return text, facts


PCC_VARIANTS = ("tal_parallel", "tood")  # the TAL-trained models of Table 6
PCC_CLAIMS = {"tal_parallel": "t6_PCC_tal_parallel", "tood": "t6_PCC_tood"}


def pcc_mechanism(results_dir: str | Path, variants: tuple[str, ...] = PCC_VARIANTS,
                  baseline: str = "atss_parallel") -> tuple[str, dict]:
    """Where the Table 6 PCC of each of ``variants`` differs from ``baseline``'s, from ``pcc_breakdown_cpu.csv``
    (``analysis.pcc_breakdown``: each object's top-50 pool split into anchors inside and outside it), on
    each data set where the variant's PCC claim (``verdicts_cpu.csv``) is not reproduced (every data set
    when there are no verdicts) -> (Markdown, facts). Facts per variant and data set (``{variant}_{dataset}_…``):
    the means over settled seeds of both models' pcc_top50, pcc_inside, pcc_outside, pcc_all_inside, iou_inside,
    iou_outside, inside_share (``…_variant``, ``…_baseline``), their differences (``d_…``), ``gap_part``
    ("inside" or "outside": the part of the pool where the PCC differs more), ``seeds`` and ``verdict``.
    ("", {}) without such a pair."""
    results_dir = Path(results_dir)
    table = _read(results_dir / "pcc_breakdown_cpu.csv")
    if table.empty:
        return "", {}
    table = table[table["settled"].astype(bool)]
    verdicts = _read(results_dir / "verdicts_cpu.csv")
    names = MODEL_NAMES
    columns = ("pcc_top50", "pcc_inside", "pcc_outside", "pcc_all_inside", "iou_inside", "iou_outside", "inside_share")
    facts, parts = {}, []
    for variant in variants:
        for dataset, rows in table.groupby("dataset", sort=False):
            judged = verdicts[(verdicts["claim"] == PCC_CLAIMS.get(variant)) & (verdicts["dataset"] == dataset)] \
                if "claim" in verdicts.columns else verdicts
            verdict = judged["verdict"].iloc[0] if len(judged) else "not judged"
            means = rows.groupby("experiment")[list(columns)].mean()
            if verdict == "reproduced" or not {variant, baseline} <= set(means.index):
                continue
            v, b = means.loc[variant], means.loc[baseline]
            f = {f"{c}_variant": float(v[c]) for c in columns} | {f"{c}_baseline": float(b[c]) for c in columns}
            f |= {f"d_{c}": float(v[c] - b[c]) for c in columns}
            f["gap_part"] = "outside" if abs(f["d_pcc_outside"]) > abs(f["d_pcc_inside"]) else "inside"
            f["seeds"] = int(rows[rows["experiment"] == variant]["seed"].nunique())
            f["verdict"] = verdict
            facts.update({f"{variant}_{dataset}_{k}": x for k, x in f.items()})
            name = names.get(variant, variant)
            parts.append(
                f"{name} on the {dataset} (PCC claim **{verdict}**, {f['seeds']} seeds): PCC **{f['pcc_top50_variant']:.3f}** "
                f"against **{f['pcc_top50_baseline']:.3f}**. Among the pool's anchors inside the object it is "
                f"**{f['pcc_inside_variant']:.3f}** against **{f['pcc_inside_baseline']:.3f}** (Δ {f['d_pcc_inside']:+.3f}); "
                f"among those outside it, **{f['pcc_outside_variant']:.3f}** against **{f['pcc_outside_baseline']:.3f}** "
                f"(Δ {f['d_pcc_outside']:+.3f}), so the difference sits mostly **{f['gap_part']}** the object. The boxes of "
                f"those outside anchors are {'better' if f['d_iou_outside'] > 0 else 'worse'} placed for {name} (mean IoU "
                f"**{f['iou_outside_variant']:.3f}** against **{f['iou_outside_baseline']:.3f}**), and over *every* anchor "
                f"inside the object, pool or not, its scores follow the IoU {'better' if f['d_pcc_all_inside'] > 0 else 'no better'} "
                f"(**{f['pcc_all_inside_variant']:.3f}** against **{f['pcc_all_inside_baseline']:.3f}**)")
    if not parts:
        return "", {}
    text = (
        f"*Where the PCC of a TAL-trained model falls short against {names.get(baseline, baseline)} (its claim reversed "
        "or tied):* Table 6's PCC ranks, per "
        "object, the 50 best-scored predictions whose boxes overlap it most, and that pool mixes anchors inside the "
        "object (the only ones either assigner can make positive, so the only ones whose scores are trained against "
        "their boxes) with anchors outside it, whose boxes still reach it. Broken down "
        "(`analysis.pcc_breakdown`, every settled seed): " + "; ".join(parts) + ". Read together: TAL trains the "
        "regression on more, and more spread, positives than ATSS (its top 13 among the points inside an object against "
        "ATSS's few nearest the centre), and the boxes of anchors just outside improve with it; their scores, negatives "
        "under both assigners, do not learn which of those boxes are good. A statistic that pools them rewards a model "
        "whose poor boxes are also poorly scored. That reading is an explanation of the measured split, not a tested "
        "cause: the test is the same breakdown on COCO (the official checkpoint, no training needed).")
    return text, facts


BOX_COUNT_VARIANTS = ("atss_t_head", "tal_parallel", "tood")  # Table 6's models, each against parallel + ATSS


def box_count_mechanism(results_dir: str | Path) -> tuple[str, dict]:
    """Why Table 6's redundant and error counts reverse or tie where they do, from
    ``ranking_diagnosis_cpu.csv`` (``ablations diagnose``: every kept detection of the 200 val images of
    each settled run) and ``verdicts_cpu.csv``. Both counts are totals over the boxes a model keeps after
    NMS (score ≥ 0.05, at most 100 per image), so they grow with how many boxes it keeps; the quality of
    those boxes is their *share*: redundant and error boxes per 100 kept boxes.

    For every box-count claim (``t6_redundant_*``, ``t6_error_*``) judged other than reproduced: the
    paired Δ (variant − parallel + ATSS, over seeds, ± SE, the verdicts' 2-SE rule) of the boxes kept per
    image and of the claim's share. -> (Markdown, facts); facts per ``{dataset}_{variant}``: ``_boxes``
    and ``_{metric}_share`` each as (mean Δ, SE, seeds, order: "higher", "lower" or "not distinguishable"),
    and ``explained``: the claims whose count is not reproduced while their share is lower or tied and the
    variant keeps more boxes. ("", {}) without the files or without such a claim."""
    from tood_lib.ablations.claims import CLAIMS_BY_NAME, paired, verdict

    results_dir = Path(results_dir)
    runs, verdicts = _read(results_dir / "ranking_diagnosis_cpu.csv"), _read(results_dir / "verdicts_cpu.csv")
    if runs.empty or verdicts.empty:
        return "", {}
    runs = runs[runs["settled"].astype(bool)].copy()
    for metric in ("redundant", "error"):
        runs[f"{metric}_share"] = 100 * runs[metric] / runs["detections"]
    names = MODEL_NAMES

    def delta(part, variant, column):  # (mean paired Δ, SE, seeds, order of the variant by the 2-SE rule)
        d = paired(part, "atss_parallel", variant, column)
        mean = float(d.mean()) if len(d) else float("nan")
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
        order = {"reproduced": "higher", "reversed": "lower"}.get(verdict(mean, se, 1.0, len(d)), "not distinguishable")
        return mean, se, len(d), order

    facts, parts, explained = {}, [], []
    claims = verdicts[verdicts["claim"].str.match(r"t6_(redundant|error)_") & (verdicts["verdict"] != "reproduced")
                      & (verdicts["seeds"] > 1)]
    for r in claims.itertuples():
        metric, variant = CLAIMS_BY_NAME[r.claim].metric, CLAIMS_BY_NAME[r.claim].variant
        part = runs[runs["dataset"] == r.dataset]
        if variant not in BOX_COUNT_VARIANTS or part[part["experiment"] == variant].empty:
            continue
        boxes = delta(part, variant, "detections_per_image")
        share = delta(part, variant, f"{metric}_share")
        if boxes[2] < 2 or share[2] < 2:
            continue
        key = f"{r.dataset}_{variant}"
        facts[f"{key}_boxes"], facts[f"{key}_{metric}_share"] = boxes, share
        if boxes[3] == "higher" and share[3] in ("lower", "not distinguishable"):
            explained.append(f"{r.dataset}/{r.claim}")
        parts.append(
            f"{metric} boxes, {names[variant]} on the {r.dataset} (count Δ {r.delta:+.0f} ± {r.se:.0f}, **{r.verdict}**): it "
            f"keeps {boxes[0]:+.1f} ± {boxes[1]:.1f} boxes per image (**{boxes[3]}**), and per 100 kept boxes "
            f"{share[0]:+.2f} ± {share[1]:.2f} {metric} ones (**{share[3]}**)")
    if not parts:
        return "", {}
    facts["explained"] = explained
    text = (
        "*Why the box counts reverse or tie where they do:* Table 6 counts redundant and error boxes over every "
        "detection a model keeps after NMS (score ≥ 0.05, at most 100 per image), so a model that keeps more boxes "
        "has more of both even when each box is as good. Per run (`ablations diagnose`, the 200 val images, paired "
        "over seeds against parallel + ATSS, the 2-SE rule): " + "; ".join(parts) + ". "
        + (f"In **{len(explained)} of {len(parts)}** of these the variant keeps more boxes while its share is lower or "
           "tied: there the count follows how many boxes the model keeps, not worse boxes. "
           if explained else "In none of these does the volume of kept boxes explain the count. ")
        + "How many boxes a model keeps above the score threshold is a question of its ranking and score calibration "
        "(the ranking diagnosis of notebook 05 §10). This reading was found after the grid had run, from the files it records; it "
        "was not declared before.")
    return text, facts


def schedule_flip_mechanism(results_dir: str | Path) -> tuple[str, dict]:
    """What changes between the grid's schedule and twice it for every pair whose order the schedule check
    reverses (``checks.schedule_comparison``), from the two ``ranking_diagnosis_cpu.csv`` (the grid's and
    ``schedule_x2/``'s): each model's AP, boxes kept per image, correct and error boxes under both
    schedules (means over the check's seeds, settled runs) -> (Markdown, facts). Facts per
    ``{dataset}_{baseline}_{variant}``: ``{experiment}_{schedule}_{column}`` for schedule "1x" and "2x".
    ("", {}) when no pair flips or a diagnosis is missing."""
    from tood_lib.ablations.checks import SCHEDULE_FACTOR, SCHEDULE_SEEDS, schedule_check_dir, schedule_comparison

    results_dir = Path(results_dir)
    longer_dir = schedule_check_dir(results_dir)
    base_runs, longer_runs = _read(results_dir / "ablation_runs_cpu.csv"), _read(longer_dir / "ablation_runs_cpu.csv")
    diagnosis = {"1x": _read(results_dir / "ranking_diagnosis_cpu.csv"),
                 f"{SCHEDULE_FACTOR}x": _read(longer_dir / "ranking_diagnosis_cpu.csv")}
    if base_runs.empty or longer_runs.empty or any(d.empty for d in diagnosis.values()):
        return "", {}
    flips = schedule_comparison(base_runs, longer_runs)
    flips = flips[flips["agreement"] == "opposite"]
    names = MODEL_NAMES
    columns = ("AP", "detections_per_image", "correct", "error")
    facts, parts = {}, []
    for flip in flips.itertuples():
        f = {}
        for schedule, table in diagnosis.items():
            rows = table[(table["dataset"] == flip.dataset) & table["seed"].isin(SCHEDULE_SEEDS) & table["settled"].astype(bool)]
            for experiment in (flip.baseline, flip.variant):
                mine = rows[rows["experiment"] == experiment]
                for c in columns:
                    f[f"{experiment}_{schedule}_{c}"] = float(mine[c].mean()) if len(mine) else float("nan")
        if any(math.isnan(v) for v in f.values()):
            continue
        longer = f"{SCHEDULE_FACTOR}x"
        for schedule, table in (("1x", base_runs), (longer, longer_runs)):  # the plateau rule before the first LR drop
            pair_runs = table[(table["dataset"] == flip.dataset) & table["experiment"].isin([flip.baseline, flip.variant])
                              & table["seed"].isin(SCHEDULE_SEEDS)]
            f[f"{schedule}_runs"] = len(pair_runs)
            f[f"{schedule}_settled_before_drop"] = int(pair_runs["pre_drop_ok"].astype(bool).sum())
        facts[f"{flip.dataset}_{flip.baseline}_{flip.variant}"] = f

        def course(experiment):
            a = {c: f[f"{experiment}_1x_{c}"] for c in columns}
            b = {c: f[f"{experiment}_{longer}_{c}"] for c in columns}
            return (f"{names.get(experiment, experiment)} goes from **{100 * a['AP']:.1f}** to **{100 * b['AP']:.1f}** AP, "
                    f"keeping **{a['detections_per_image']:.0f}** then **{b['detections_per_image']:.0f}** boxes per image, "
                    f"of which **{a['correct']:.0f}** then **{b['correct']:.0f}** correct and **{a['error']:.0f}** then "
                    f"**{b['error']:.0f}** errors over the val split")
        parts.append(f"{names.get(flip.variant, flip.variant)} against {names.get(flip.baseline, flip.baseline)} on the "
                     f"{flip.dataset} (Δ AP {flip.schedule_1x_delta:+.2f} ± {flip.schedule_1x_se:.2f}, then "
                     f"{flip.schedule_2x_delta:+.2f} ± {flip.schedule_2x_se:.2f}): {course(flip.variant)}; "
                     f"{course(flip.baseline)}. Of the pair's runs, **{f['1x_settled_before_drop']} of {f['1x_runs']}** had "
                     f"settled before the first LR drop under the grid's schedule, **{f[f'{longer}_settled_before_drop']} of "
                     f"{f[f'{longer}_runs']}** under twice it: "
                     + ("the grid's verdict on this pair was taken from models still learning, and the longer runs, all "
                        "settled, are the better estimate of where it settles on this bench"
                        if f[f"{longer}_settled_before_drop"] == f[f"{longer}_runs"] else
                        "neither schedule has all of them settled before its first drop, so the order the longer runs "
                        "give is the better estimate so far but not a settled one; a longer schedule still could move it"))
    if not parts:
        return "", {}
    text = ("*Why the schedule check reverses an order:* the schedule check's runs are diagnosed like the grid's, so each "
            f"flipped pair can be read under both schedules (means over seeds {', '.join(map(str, SCHEDULE_SEEDS))} "
            "that have finished). Under the grid's schedule and then twice it: " + "; ".join(parts) + ".")
    return text, facts
