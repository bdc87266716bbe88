"""Issue 19's checks and diagnostics: the schedule check (twice the bench's schedule, orders under
both), the ranking diagnosis, the per-level layer attention, and the diagnostics declared as claims."""
import json

import pandas as pd
import pytest
import torch

from tood_lib.ablations.bench import bench_schedule, scaled_schedule, schedule_overrides
from tood_lib.analysis.layer_attention import layer_attention_summary
from tood_lib.analysis.ranking import detection_rows, ranking_summary, reliability_curve


def test_the_schedule_check_doubles_every_epoch_of_the_declared_schedule():
    double = scaled_schedule(bench_schedule("multi_level"), 2)
    assert (double.epochs, double.lr_steps, double.settled_from, double.pre_drop_from) == (64, (48, 56), 56, 36)
    assert double.eval_epochs == tuple(2 * e for e in bench_schedule("multi_level").eval_epochs)
    assert scaled_schedule(bench_schedule("multi_level"), 1) == bench_schedule("multi_level")
    assert schedule_overrides("multi_level", 2) == ["train.epochs=64", "train.lr_steps=48,56"]
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="whole number"):
            scaled_schedule(bench_schedule(), bad)


def test_a_run_on_a_longer_schedule_trains_and_is_judged_on_it(tmp_path, monkeypatch):
    """run_experiment(schedule_factor=2) builds the doubled recipe and evaluates at the doubled epochs
    (the Trainer is replaced: only what it is asked to do is checked)."""
    from tood_lib.ablations import run_one
    from tood_lib.ablations.runs import Run

    seen = {}

    class Stop(Exception):
        pass

    class FakeTrainer:
        def __init__(self, cfg, root, out_dir, **kw):
            seen.update(epochs=cfg.train.epochs, lr_steps=tuple(cfg.train.lr_steps), eval_epochs=tuple(kw["eval_epochs"]))
            raise Stop

    monkeypatch.setattr("tood_lib.engine.trainer.Trainer", FakeTrainer)
    with pytest.raises(Stop):
        run_one.run_experiment(Run("shapes", "tood", 0), tmp_path, progress=False, schedule_factor=2, bench="multi_level")
    assert seen == dict(epochs=64, lr_steps=(48, 56), eval_epochs=scaled_schedule(bench_schedule("multi_level"), 2).eval_epochs)


def test_the_schedule_check_orders_each_pair_under_both_schedules(tmp_path):
    from tood_lib.ablations.checks import schedule_check

    def rows(deltas, seeds=range(3)):  # per-seed Δ of each experiment over atss_parallel, both data sets
        return pd.DataFrame([dict(dataset=d, experiment=e, seed=s, AP=0.30 + delta[s] + 0.01 * s)
                             for d in ("shapes", "misaligned") for e, delta in deltas.items() for s in seeds])
    clear, noisy = [0.03, 0.031, 0.029, 0.03, 0.03], [0.03, -0.02, 0.02, 0.0, 0.0]
    base = dict(atss_parallel=[0] * 5, atss_t_head=[-x for x in clear], tal_parallel=clear, tood=[2 * x for x in clear])
    rows(base, range(5)).to_csv(tmp_path / "ablation_runs_cpu.csv")
    longer = tmp_path / "schedule_x2"
    longer.mkdir()
    rows(dict(base, atss_t_head=clear, tal_parallel=noisy)).to_csv(longer / "ablation_runs_cpu.csv")
    check = schedule_check(tmp_path, longer)
    assert set(check["dataset"]) == {"shapes", "misaligned"} and len(check) == 10
    shapes = check[check.dataset == "shapes"].set_index(["baseline", "variant"])
    assert shapes.at[("atss_parallel", "atss_t_head"), "agreement"] == "opposite"
    assert shapes.at[("atss_parallel", "atss_t_head"), "schedule_1x_order"] == "baseline higher"
    assert shapes.at[("atss_parallel", "tal_parallel"), "agreement"] == "one not distinguishable"
    assert shapes.at[("atss_parallel", "tood"), "agreement"] == "same"
    assert shapes.at[("atss_parallel", "tood"), "schedule_1x_seeds"] == 3  # seeds 0-2 of the grid only
    assert shapes.at[("atss_parallel", "tood"), "schedule_2x_delta"] == pytest.approx(6.0)
    assert (tmp_path / "schedule_check_cpu.csv").is_file()


def test_a_partial_schedule_check_judges_only_pairs_with_two_seeds_under_both():
    """While the check runs (runs committed one by one), a pair is judged only once it has two paired seeds
    under the longer schedule; the plateau counts count the finished runs of each schedule."""
    from tood_lib.ablations.checks import schedule_comparison, schedule_plateaus

    def row(dataset, experiment, seed, ap, end=True, pre_drop=True):
        return dict(dataset=dataset, experiment=experiment, seed=seed, AP=ap, plateau_ok=end, pre_drop_ok=pre_drop)
    base = pd.DataFrame([row(d, e, s, 0.30 + 0.05 * (e == "tood") + 0.001 * s, pre_drop=s > 0)
                         for d in ("shapes", "misaligned") for e in ("atss_parallel", "atss_t_head", "tal_parallel", "tood")
                         for s in range(3)])
    longer = pd.DataFrame([row("shapes", "atss_parallel", 0, 0.30), row("shapes", "atss_parallel", 1, 0.31),
                           row("shapes", "tood", 0, 0.36, pre_drop=False), row("shapes", "tood", 1, 0.371)])
    check = schedule_comparison(base, longer).set_index(["dataset", "baseline", "variant"])
    assert len(check) == 10  # every declared pair of both data sets is listed, judged or not
    assert check.at[("shapes", "atss_parallel", "tood"), "agreement"] == "same"
    assert check.at[("shapes", "atss_parallel", "tood"), "schedule_2x_seeds"] == 2
    assert check["agreement"].notna().sum() == 1  # no other pair has two seeds of both experiments yet
    plateaus = schedule_plateaus(base, longer).set_index(["schedule", "dataset"])
    assert plateaus.at[("1x", "shapes"), "runs"] == 12 and plateaus.at[("1x", "shapes"), "settled_before_first_drop"] == 8
    assert plateaus.at[("2x", "shapes"), "runs"] == 4 and plateaus.at[("2x", "shapes"), "settled_before_first_drop"] == 3
    assert plateaus.at[("2x", "misaligned"), "runs"] == 0


class _Truth:
    """A stand-in data set: ground_truth(index) -> (boxes (G, 4), labels (G,))."""

    def __init__(self, objects):
        self.objects = objects

    def ground_truth(self, index):
        boxes, labels = self.objects[index]
        return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.long)

    def __len__(self):
        return len(self.objects)


def test_the_ranking_diagnosis_measures_how_the_score_orders_localisation():
    truth = _Truth([([[0, 0, 10, 10]], [1]), ([[20, 20, 40, 40]], [0]), ([], [])])
    detections = [
        dict(boxes=torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60.]]), scores=torch.tensor([0.9, 0.3, 0.7]),
             labels=torch.tensor([1, 1, 1])),
        dict(boxes=torch.tensor([[20, 20, 40, 40.], [20, 20, 40, 40.]]), scores=torch.tensor([0.55, 0.45]),
             labels=torch.tensor([1, 0])),  # the first is on the object but of another class: IoU 0
        dict(boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long)),
    ]
    rows = detection_rows(detections, truth)
    assert rows["iou"].round(3).tolist() == [1.0, 0.5, 0.0, 0.0, 1.0]
    assert rows["category"].tolist() == ["correct", "redundant", "background", "background", "correct"]
    summary = ranking_summary(rows, images=3, cap=3)
    assert summary["detections_per_image"] == pytest.approx(5 / 3) and summary["images_at_cap"] == pytest.approx(1 / 3)
    assert summary["correct"] == 2 and summary["redundant"] == 1 and summary["background"] == 2
    assert summary["mean_iou_top_half"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)  # scores 0.9, 0.7, 0.55
    curve = reliability_curve(rows).set_index("score_lo")
    assert curve["detections"].sum() == 5
    assert curve.at[0.8, "detections"] == 1 and curve.at[0.8, "mean_iou"] == pytest.approx(1.0)
    assert curve.at[0.6, "mean_iou"] == pytest.approx(0.0) and curve.at[0.5, "correct_share"] == 0.0
    assert curve.at[0.4, "correct_share"] == 1.0 and curve.at[0.3, "mean_iou"] == pytest.approx(0.5)
    well_ranked = rows.assign(score=rows["iou"] + 0.01)
    assert ranking_summary(well_ranked, 3, 3)["score_iou_spearman"] > ranking_summary(rows, 3, 3)["score_iou_spearman"]


def test_the_layer_attention_summary_finds_the_level_and_task_gaps():
    rows = []
    for level, shift in (("P3", 0.0), ("P4", 0.2)):
        for layer in (1, 2):
            rows.append(dict(level=level, task="cls", layer=layer, weight=0.5 + shift * (layer == 1), std=0.0))
            rows.append(dict(level=level, task="reg", layer=layer, weight=0.5 - 0.1 * (layer == 2), std=0.0))
    summary = layer_attention_summary(pd.DataFrame(rows))
    assert summary["level_gap"] == pytest.approx(0.2)
    assert summary["task_gap_by_level"] == pytest.approx({"P3": 0.05, "P4": 0.15})
    assert summary["task_gap_max"] == pytest.approx(0.2)
    assert pd.isna(layer_attention_summary(pd.DataFrame(columns=["level", "task", "layer", "weight", "std"]))["level_gap"])


def test_the_ranking_diagnostics_are_declared_claims_on_both_data_sets():
    from tood_lib.ablations.claims import CLAIMS_BY_NAME
    from tood_lib.ablations.grid import EXPERIMENTS
    from tood_lib.ablations.runs import grid_runs

    full = set(grid_runs("full"))
    for name, baseline, variant in (("centerness_helps_atss_parallel", "atss_parallel_no_centerness", "atss_parallel"),
                                    ("qfl_helps_atss_t_head", "atss_t_head", "atss_qfl_t_head")):
        claim = CLAIMS_BY_NAME[name]
        assert (claim.baseline, claim.variant) == (baseline, variant) and claim.datasets == ("shapes", "misaligned")
        assert not claim.core  # not in the core grid: its budget was declared without them
        for dataset in claim.datasets:
            assert all(any(r == (dataset, e, s) for r in map(lambda r: (r.dataset, r.experiment, r.seed), full))
                       for e in (baseline, variant) for s in range(3))
    assert not EXPERIMENTS["atss_parallel_no_centerness"].centerness
    assert EXPERIMENTS["atss_qfl_t_head"].head == "t_head" and EXPERIMENTS["atss_qfl_t_head"].assigner == "atss_qfl"


def test_diagnose_measures_each_finished_run_once(tmp_path, monkeypatch):
    """diagnose_grid measures the runs of the diagnosed experiments that have no diagnosis.json, keeps
    each answer in its run folder, and writes the four tables from all of them."""
    from tood_lib.ablations import diagnose
    from tood_lib.ablations.runs import Run, run_dir

    calls = []

    def fake(run, out_root, bench=None):
        calls.append(run)
        record = dict(ranking=dict(detections_per_image=float(run.seed)), reliability=[dict(score_lo=0.0, detections=1)],
                      layer_attention=[dict(level="P3", task="cls", layer=1, weight=0.5, std=0.0)] if "t_head" in run.experiment else [],
                      layer_attention_summary=dict(level_gap=0.0, task_gap_max=0.0, task_gap_mean=0.0, task_gap_by_level={"P3": 0.0}))
        (run_dir(run, out_root) / "diagnosis.json").write_text(json.dumps(record))

    monkeypatch.setattr(diagnose, "diagnose_run", fake)
    for run in (Run("shapes", "atss_t_head", 0), Run("shapes", "atss_parallel", 1), Run("shapes", "fcos_parallel", 0)):
        run_dir(run, tmp_path).mkdir(parents=True)
        (run_dir(run, tmp_path) / "result.json").write_text(json.dumps(dict(
            dataset=run.dataset, experiment=run.experiment, seed=run.seed, AP=0.3, AP50=0.5, AP75=0.3, plateau=dict(ok=True))))
    table = diagnose.diagnose_grid(tmp_path, tmp_path / "results", progress=False)
    assert sorted(map(str, calls)) == ["shapes/atss_parallel/seed1", "shapes/atss_t_head/seed0"]  # fcos is not diagnosed
    assert sorted(table["experiment"]) == ["atss_parallel", "atss_t_head"] and table["settled"].all()
    assert len(pd.read_csv(tmp_path / "results" / "layer_attention_summary_cpu.csv")) == 1
    diagnose.diagnose_grid(tmp_path, tmp_path / "results", progress=False)
    assert len(calls) == 2  # measured once


def test_the_conclusions_render_each_family_from_the_verdict_files(tmp_path):
    """Issue 19, item 7: a family's section counts its verdicts, gives each claim's Δ ± SE beside the
    first bench's verdict, and fills the miniature's limits from the level audit, all from the files."""
    from tood_lib.ablations.conclusions import FAMILIES, family_markdown, family_table, scale_facts
    from tood_lib.ablations.runs import RESULTS_DIR

    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir(), old.mkdir()
    cols = ["dataset", "claim", "delta", "se", "seeds", "verdict", "metric"]
    pd.DataFrame([("shapes", "t_head_atss_af", 2.5, 0.5, 5, "reproduced", "AP"),
                  ("misaligned", "t_head_atss_af", -0.2, 0.4, 5, "not distinguishable", "AP"),
                  ("shapes", "centerness_helps_atss_parallel", 1.5, 0.2, 3, "reproduced", "AP")], columns=cols) \
        .to_csv(new / "verdicts_cpu.csv", index=False)
    pd.DataFrame([("shapes", "t_head_atss_af", -3.2, 0.3, 5, "reversed", "AP")], columns=cols).to_csv(old / "verdicts_cpu.csv", index=False)
    family = FAMILIES[0]
    table = family_table(family, new, old).set_index(["claim", "dataset"])
    assert table.at[("t_head_atss_af", "shapes"), "verdict"] == "reproduced"
    assert table.at[("t_head_atss_af", "shapes"), "first_bench_verdict"] == "reversed"
    assert table.at[("t_head_fcos", "shapes"), "verdict"] == "not run"
    facts = scale_facts(RESULTS_DIR / "levels_bench.csv")
    assert facts["coco_inside"] > 10 * facts["inside"] and facts["coco_pos_obj"] > facts["pos_obj"]
    text = family_markdown(family, new, old, facts=facts)
    assert "Of 2 judged (claim, data set) pairs on this bench: 1 reproduced, 1 not distinguishable." in text
    assert "Δ +2.50 ± 0.50 AP, 5 seeds; paper +1.9); first bench: reversed" in text
    assert "parallel + ATSS (shapes): reproduced (Δ +1.50 ± 0.20 AP, 3 seeds)" in text
    assert f"{facts['pts_side']:.1f} anchor points per side" in text and "{" not in text
    assert "`configs/ablations/atss_parallel_no_centerness.json`" in text
    empty = family_markdown(FAMILIES[3], tmp_path / "none", facts=facts)
    assert "No claim of this family has finished on this bench yet." in empty


def test_the_conclusions_say_whether_the_protocol_checks_keep_each_pairs_order(tmp_path):
    """Issue 19, items 4 and 7: a family's conclusion renders, for each of its AP pairs that a check
    covers, the order under twice the schedule (per data set, while the check runs) and with the backbone
    fine-tuned, and names the pairs and families that no check covers."""
    from tood_lib.ablations.conclusions import FAMILIES, checks_line

    def rows(deltas, datasets=("shapes", "misaligned"), seeds=range(3)):
        return pd.DataFrame([dict(dataset=d, experiment=e, seed=s, AP=0.30 + delta[s] + 0.01 * s)
                             for d in datasets for e, delta in deltas.items() for s in seeds])
    up = [0.03, 0.031, 0.029]
    rows(dict(atss_parallel=[0] * 3, atss_t_head=up)).to_csv(tmp_path / "ablation_runs_cpu.csv")
    t_head = FAMILIES[0]
    assert "twice the schedule, shapes: not judged yet (0 of 3 paired seeds finished)" in checks_line(t_head, tmp_path)
    (tmp_path / "schedule_x2").mkdir()
    pd.concat([rows(dict(atss_parallel=[0] * 3, atss_t_head=[-x for x in up]), ("shapes",)),  # flipped
               rows(dict(atss_parallel=[0] * 3, atss_t_head=up), ("misaligned",), seeds=[0])]) \
        .to_csv(tmp_path / "schedule_x2" / "ablation_runs_cpu.csv")
    text = checks_line(t_head, tmp_path)
    assert "T-Head + ATSS vs parallel + ATSS: twice the schedule, shapes: **the opposite order** (Δ -3.00 ± 0.06 AP, " \
           "baseline higher)" in text
    assert "twice the schedule, misaligned: not judged yet (1 of 3 paired seeds finished)" in text
    assert "fine-tuned backbone, shapes: not run on this bench yet" in text
    assert "A check reverses the order of T-Head + ATSS vs parallel + ATSS on the shapes (the grid's schedule)" in text
    assert "A check reverses" not in checks_line(FAMILIES[1], tmp_path)  # TAL vs ATSS: nothing flipped
    assert "Not covered by either check: T-Head > parallel head (ATSS, anchor-based);" in text
    (tmp_path / "finetune").mkdir()  # the fine-tuning check's runs so far: seeds 0 and 1
    rows(dict(atss_parallel=[0.05] * 3, atss_t_head=[0.08, 0.081, 0.079]), ("shapes",), seeds=[0, 1]) \
        .to_csv(tmp_path / "finetune" / "ablation_runs_cpu.csv")
    assert "fine-tuned backbone, shapes: the same order (Δ +3.05 ± 0.05 AP, variant higher)" in checks_line(t_head, tmp_path)
    layer = next(f for f in FAMILIES if f.title.startswith("M, O"))
    assert "none of this family's pairs is in the schedule or the fine-tuning check" in checks_line(layer, tmp_path)
    table6 = next(f for f in FAMILIES if f.title.startswith("Table 6"))
    assert "this family's claims are not pairs of AP" in checks_line(table6, tmp_path)


def test_the_grid_diagnoses_its_table6_runs_as_they_finish(tmp_path):
    """run_grid measures a finished run of a diagnosed experiment right after collecting it: the ranking
    table, the reliability curve and (for a T-Head) the layer attention, from the run's own checkpoint."""
    from tood_lib.ablations.run_grid import run_grid
    from tood_lib.ablations.runs import Run, run_dir

    tiny = ["data.train_images=8", "train.batch_size=4", "train.epochs=2", "tal.warmup_epochs=1", "data.img_scale=64,64",
            "train.warmup_iters=1", "train.lr_steps=2"]
    run = Run("shapes", "atss_t_head", 1)  # (seed 1: no time-lapse to make)
    results = tmp_path / "results"
    run_grid([run], jobs=2, out_root=tmp_path / "runs", results_dir=results, overrides=tiny, progress=False,
             with_complexity=False, analysis_images=4)
    assert (run_dir(run, tmp_path / "runs") / "diagnosis.json").is_file()
    ranking = pd.read_csv(results / "ranking_diagnosis_cpu.csv")
    assert ranking[["experiment", "seed", "images"]].values.tolist() == [["atss_t_head", 1, 200]]
    attention = pd.read_csv(results / "layer_attention_cpu.csv")
    assert set(attention["level"]) == {"P3", "P4", "P5", "P6", "P7"} and set(attention["task"]) == {"cls", "reg"}
    assert attention.groupby(["level", "task"]).size().eq(6).all()  # the small preset's 6 interactive layers
    assert len(pd.read_csv(results / "reliability_cpu.csv")) == 9
    parameters = pd.read_csv(results / "layer_attention_parameters_cpu.csv")
    assert parameters["task"].tolist() == ["cls", "reg"] and parameters["w1_growth"].between(0.5, 2).all()
    assert (parameters["max_gap_to_bias_only"] < 0.01).all()  # two tiny epochs: still near its init
    assert (results / "tal_level_course_cpu.csv").read_text().strip() == ""  # seed 1 of a T-Head + ATSS: no course
    # the PCC breakdown (a Table 6 run): its top-50 PCC is the run's own Table 6 PCC, split inside / outside
    breakdown = pd.read_csv(results / "pcc_breakdown_cpu.csv")
    result = json.loads((run_dir(run, tmp_path / "runs") / "result.json").read_text())
    assert breakdown[["experiment", "seed"]].values.tolist() == [["atss_t_head", 1]]
    assert breakdown.at[0, "pcc_top50"] == pytest.approx(result["alignment"]["PCC"], abs=1e-4)
    assert 0 < breakdown.at[0, "inside_share"] < 1 and breakdown.at[0, "objects"] > 0


def test_a_running_grid_records_its_wall_time_before_any_run_finishes(tmp_path, monkeypatch):
    """The timing log is written every HEARTBEAT_SECONDS while a run is under way, so a command killed
    mid-run (the end of a session) leaves its time on record; a command with nothing to run adds nothing."""
    import time

    from tood_lib.ablations import run_grid as grid_module
    from tood_lib.ablations.runs import Run, run_dir

    seen = []

    def slow_launch(run, out_root, threads, extra, lock_fd=None):
        deadline = time.time() + 5
        timing = tmp_path / "results" / "ablations_cpu_timing.json"
        while not timing.is_file() and time.time() < deadline:
            time.sleep(0.02)
        seen.append(json.loads(timing.read_text())["invocations"][0]["runs"] if timing.is_file() else None)
        run_dir(run, out_root).mkdir(parents=True, exist_ok=True)
        record = dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed, AP=0.3, seconds=0.0,
                      plateau=dict(epoch_75=9, AP_75=0.3, AP_final=0.3, ok=True))
        (run_dir(run, out_root) / "result.json").write_text(json.dumps(record))
        return record

    monkeypatch.setattr(grid_module, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(grid_module, "_launch", slow_launch)
    monkeypatch.setattr(grid_module, "prepare_features", lambda *a, **k: None)
    monkeypatch.setattr(grid_module, "collect_results", lambda *a, **k: None)
    runs = [Run("shapes", "fcos_parallel", 0)]
    grid_module.run_grid(runs, jobs=1, out_root=tmp_path / "runs", results_dir=tmp_path / "results", progress=False)
    assert seen == [0]  # on record, with no finished run, while the run was still going
    timing = json.loads((tmp_path / "results" / "ablations_cpu_timing.json").read_text())
    assert [i["runs"] for i in timing["invocations"]] == [1]
    grid_module.run_grid(runs, jobs=1, out_root=tmp_path / "runs", results_dir=tmp_path / "results", progress=False)
    assert len(json.loads((tmp_path / "results" / "ablations_cpu_timing.json").read_text())["invocations"]) == 1


def test_the_coco_cost_of_a_family_is_in_gpu_hours_at_a_stated_throughput():
    """Issue 19, item 7: the decisive COCO-scale runs come with their GPU-hours at the official recipe
    (R-50 1x: 12 epochs of the 118,287 train2017 images per run), at the V100 proxy unless a measured
    throughput is passed, and the proxy is named as one."""
    from tood_lib.ablations.conclusions import PROXY_V100_IMAGES_PER_S, coco_cost_text

    assert PROXY_V100_IMAGES_PER_S == pytest.approx(10.0)  # detectron2: 0.200 s per 16 images on 8 V100s
    text = coco_cost_text(["atss_parallel"])  # 3 seeds: 3 x 12 x 118,287 = 4,258,332 images
    assert "3 runs of R-50 1x, 4.3 M training images in all, about 118 GPU-hours at 10 images/s per GPU" in text
    assert "(a V100 proxy" in text and "4.9 h per run on 8 GPUs" in text
    measured = coco_cost_text(["atss_parallel", "tood"], gpu_images_per_s=20)
    assert "about 118 GPU-hours at 20 images/s per GPU, 2.5 h per run" in measured and "proxy" not in measured
    assert "GPU-hours" not in coco_cost_text(["tood"], gpu_images_per_s=None)
