"""The CPU-scale ablation runner on tiny settings: feature caches, a resumable grid in subprocesses,
the AP curve and plateau rule, the analysed run's time-lapse and Table 6 numbers, tables and verdicts."""
import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tood_lib.ablations.collect import collect_results
from tood_lib.ablations.run_grid import run_grid
from tood_lib.ablations.run_one import run_experiment
from tood_lib.ablations.runs import Run, feature_dir, run_dir

REPO = Path(__file__).resolve().parents[1]

TINY = ["data.train_images=8", "train.batch_size=4", "train.epochs=2", "tal.warmup_epochs=1", "data.img_scale=64,64",
        "train.warmup_iters=1", "train.lr_steps=2"]


def test_grid_runs_resumes_and_tabulates(tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    runs = [Run("shapes", "fcos_parallel", 0), Run("shapes", "fcos_parallel", 1), Run("misaligned", "atss_qfl_parallel", 0)]
    kw = dict(out_root=out, results_dir=results, overrides=TINY, progress=False, with_complexity=False)
    run_grid(runs, jobs=2, **kw)
    assert sorted(p.name for p in feature_dir("misaligned", out).iterdir()) == ["train.pt", "train.pt.sha256", "val.pt",
                                                                             "val.pt.sha256"]
    finished = {r: (run_dir(r, out) / "result.json").stat().st_mtime_ns for r in runs}
    table = pd.read_csv(results / "ablation_runs_cpu.csv")
    assert len(table) == 3 and (table["steps"] == 4).all() and (table["threads"] == 1).all()
    assert set(zip(table["dataset"], table["experiment"])) == {("shapes", "fcos_parallel"), ("misaligned", "atss_qfl_parallel")}
    curves = pd.read_csv(results / "ap_curves_cpu.csv")
    for row in table.itertuples():  # the final point of each AP curve is the run's AP
        curve = curves[(curves.dataset == row.dataset) & (curves.experiment == row.experiment) & (curves.seed == row.seed)]
        assert curve["epoch"].tolist() == [1, 2] and curve["AP"].iloc[-1] == pytest.approx(row.AP, abs=1e-4)
        assert row.plateau_epoch_75 == 2 and row.plateau_ok
    # checkpoints of runs without a time-lapse are dropped, last.pth (for resuming) is kept
    assert [p.name for p in run_dir(runs[0], out).glob("*.pth")] == ["last.pth"]
    result = json.loads((run_dir(runs[2], out) / "result.json").read_text())
    assert result["dataset"] == "misaligned" and json.loads((run_dir(runs[2], out) / "config.json").read_text())["model"]["num_classes"] == 4

    levels = pd.read_csv(results / "levels_runs_cpu.csv")  # every run's level audit (issue 19)
    assert len(levels) == 3 * len(runs) and set(levels["kind"]) == {"atss_ground_truth", "tal_predictions", "detections"}
    shares = levels[[f"share_P{k}" for k in range(3, 8)]].sum(axis=1)
    assert ((shares - 100).abs() < 1e-2)[levels["kind"] == "atss_ground_truth"].all()
    assert "levels" in result and result["levels"]["atss_ground_truth"]["objects"] > 0

    run_grid(runs, jobs=2, **kw)  # nothing to do: finished runs are not redone
    assert finished == {r: (run_dir(r, out) / "result.json").stat().st_mtime_ns for r in runs}

    t1 = pd.read_csv(results / "table1_cpu.csv")
    assert set(t1["dataset"]) == {"shapes"}  # the misaligned run is in no Table 1 row
    t1 = t1.set_index("experiment")
    shapes = table[table.dataset == "shapes"]
    assert t1.at["fcos_parallel", "cpu_seeds"] == 2
    assert t1.at["fcos_parallel", "cpu_AP"] == pytest.approx(shapes["AP"].mean() * 100, abs=1e-3)
    assert t1.at["fcos_parallel", "cpu_AP_std"] == pytest.approx(shapes["AP"].std(ddof=1) * 100, abs=1e-3)
    assert t1.at["fcos_parallel", "paper_AP"] == 38.6 and t1.at["fcos_parallel", "coco_AP"] == "not run"
    t2 = pd.read_csv(results / "table2_cpu.csv")
    assert set(t2["dataset"]) == {"shapes", "misaligned"}
    verdicts = pd.read_csv(results / "verdicts_cpu.csv")
    assert set(verdicts["dataset"]) == {"shapes", "misaligned"} and (verdicts["verdict"] == "not run").any()
    timing = json.loads((results / "ablations_cpu_timing.json").read_text())
    assert len(timing["invocations"]) == 1 and timing["invocations"][0]["runs"] == 3 and timing["invocations"][0]["amp"] == "off"


def test_an_unsettled_run_never_reaches_a_table(tmp_path):
    run = Run("shapes", "fcos_parallel", 0)
    folder = run_dir(run, tmp_path / "runs")
    folder.mkdir(parents=True)
    record = dict(dataset="shapes", experiment="fcos_parallel", seed=0, AP=0.3, ap_curve=[[9, 0.2], [12, 0.3]],
                  plateau=dict(epoch_75=9, AP_75=0.2, AP_final=0.3, ok=False))
    (folder / "result.json").write_text(json.dumps(record))
    rows = collect_results([run], tmp_path / "runs", tmp_path / "results", with_complexity=False)
    assert rows.empty and not (tmp_path / "results" / "table1_cpu.csv").exists()
    assert pd.read_csv(tmp_path / "results" / "unsettled_runs_cpu.csv")["experiment"].tolist() == ["fcos_parallel"]


def test_analysed_run_has_time_lapse_and_table6(tmp_path):
    run = Run("shapes", "tood", 0)
    record = run_experiment(run, tmp_path, progress=False, overrides=TINY, analysis_images=8)
    assert [p["epoch"] for p in record["timelapse"]] == [0, 1, 2]
    assert all(-1 <= p["PCC"] <= 1 and 0 <= p["IoU"] <= 1 and p["best_anchor_gap"] >= 0 for p in record["timelapse"])
    assert record["timelapse"][2]["AP"] == record["ap_curve"][-1][1] == record["AP"]
    assert set(record["nms"]) >= {"correct", "redundant", "error", "objects"} and record["alignment"]["objects"] > 100
    snapshots = torch.load(run_dir(run, tmp_path) / "snapshots.pt", weights_only=True)
    assert sorted(snapshots["snapshots"]) == [0, 1, 2] and len(snapshots["snapshots"][2]) == 6
    collect_results([run], tmp_path, tmp_path / "results", with_complexity=False)
    table6 = pd.read_csv(tmp_path / "results" / "table6_cpu.csv").set_index("experiment")
    assert table6.at["tood", "cpu_correct"] == record["nms"]["correct"]
    assert table6.at["tood", "cpu_PCC"] == pytest.approx(record["alignment"]["PCC"], abs=1e-3)
    assert set(torch.load(tmp_path / "results" / "snapshots_shapes_cpu.pt", weights_only=True)) == {"tood"}

    # analyse=False (the notebooks' copy of a grid run): the same training, every epoch's checkpoint kept, no analysis
    plain = run_experiment(run, tmp_path / "plain", progress=False, overrides=TINY, analyse=False)
    assert plain["AP"] == record["AP"] and plain["ap_curve"] == record["ap_curve"]
    assert not {"timelapse", "nms", "alignment", "levels"} & set(plain)
    folder = run_dir(run, tmp_path / "plain")
    assert sorted(p.name for p in folder.glob("epoch_*.pth")) == ["epoch_1.pth", "epoch_2.pth"]
    ours = torch.load(folder / "epoch_2.pth", weights_only=False)["model"]
    grids = torch.load(run_dir(run, tmp_path) / "epoch_2.pth", weights_only=False)["model"]
    assert all(torch.equal(ours[k], grids[k]) for k in grids)


def test_finetune_mode_trains_the_backbone_without_a_cache(tmp_path):
    from tood_lib.ablations.grid import experiment_config
    from tood_lib.model.detector import build_model

    run = Run("shapes", "atss_parallel", 0)
    record = run_experiment(run, tmp_path, progress=False, overrides=TINY, finetune=True)
    assert record["backbone"].startswith("fine-tuned") and "nms" not in record
    assert not feature_dir("shapes", tmp_path).exists()
    config = json.loads((run_dir(run, tmp_path) / "config.json").read_text())
    assert config["model"]["frozen_stages"] == 1
    start = build_model(experiment_config("atss_parallel", "cpu"), load_backbone_weights=True).backbone.state_dict()
    trained = torch.load(run_dir(run, tmp_path) / "last.pth", weights_only=True)["model"]
    assert not torch.equal(trained["backbone.layer2.0.conv1.weight"], start["layer2.0.conv1.weight"])
    assert torch.equal(trained["backbone.conv1.weight"], start["conv1.weight"])  # the stem stays frozen


def test_finetune_check_compares_the_rankings(tmp_path):
    from tood_lib.ablations.checks import finetune_check

    def rows(deltas):
        return pd.DataFrame([dict(dataset="shapes", experiment=e, seed=s, AP=0.40 + d * (e != "atss_parallel") + 0.01 * s)
                             for e, d in deltas.items() for s in range(3)])
    (tmp_path / "frozen").mkdir()
    (tmp_path / "tuned").mkdir()
    rows(dict(atss_parallel=0, tood=0.03, tal_parallel=-0.02, atss_t_head=0.01)).to_csv(tmp_path / "frozen" / "ablation_runs_cpu.csv")
    rows(dict(atss_parallel=0, tood=0.05, tal_parallel=0.01, atss_t_head=0.02)).to_csv(tmp_path / "tuned" / "ablation_runs_cpu.csv")
    check = finetune_check(tmp_path / "frozen", tmp_path / "tuned").set_index("variant")
    assert check.at["tood", "agreement"] == "same" and check.at["tood", "frozen_order"] == "variant higher"
    assert check.at["tal_parallel", "agreement"] == "opposite" and not check.at["tal_parallel", "same_sign"]
    assert check.at["tood", "frozen_delta"] == pytest.approx(3.0) and check.at["tood", "finetuned_delta"] == pytest.approx(5.0)
    rows(dict(atss_parallel=0, tood=0.05)).to_csv(tmp_path / "tuned" / "ablation_runs_cpu.csv")  # two pairs not fine-tuned
    check = finetune_check(tmp_path / "frozen", tmp_path / "tuned").set_index("variant")
    assert check.at["tood", "agreement"] == "same" and pd.isna(check.at["tal_parallel", "agreement"])


def test_finetune_check_judges_orders_with_the_2_se_rule(tmp_path):
    """A Δ within 2 SE is a tie, whatever its sign: two ties agree; a tie against a clear order is
    "one not distinguishable", not a reversal."""
    from tood_lib.ablations.checks import finetune_check

    def rows(deltas):  # per-seed Δ of the variants over atss_parallel
        return pd.DataFrame([dict(dataset="shapes", experiment=e, seed=s, AP=0.40 + (d[s] if e != "atss_parallel" else 0))
                             for e, d in deltas.items() for s in range(3)])
    for name in ("frozen", "tuned"):
        (tmp_path / name).mkdir()
    noisy_up, noisy_down, clear_up = [0.03, -0.02, 0.02], [-0.03, 0.02, -0.02], [0.03, 0.031, 0.029]
    rows(dict(atss_parallel=[0] * 3, tood=clear_up, tal_parallel=noisy_up, atss_t_head=clear_up)) \
        .to_csv(tmp_path / "frozen" / "ablation_runs_cpu.csv")
    rows(dict(atss_parallel=[0] * 3, tood=clear_up, tal_parallel=noisy_down, atss_t_head=noisy_up)) \
        .to_csv(tmp_path / "tuned" / "ablation_runs_cpu.csv")
    check = finetune_check(tmp_path / "frozen", tmp_path / "tuned").set_index("variant")
    assert check.at["tal_parallel", "frozen_order"] == check.at["tal_parallel", "finetuned_order"] == "not distinguishable"
    assert check.at["tal_parallel", "agreement"] == "same" and not check.at["tal_parallel", "same_sign"]
    assert check.at["atss_t_head", "agreement"] == "one not distinguishable"
    assert check.at["tood", "agreement"] == "same"


def test_a_superseded_invocation_stays_on_record_but_out_of_the_total(tmp_path):
    from tood_lib.ablations.run_grid import _log_invocation

    path = tmp_path / "ablations_cpu_timing.json"
    path.write_text(json.dumps(dict(invocations=[
        dict(started="2026-01-01T00:00:00", wall_seconds=600, runs=5, cpus=2, amp="off"),
        dict(started="2026-01-01T01:00:00", wall_seconds=1900, runs=1, cpus=2, amp="off", superseded=True)])))
    _log_invocation(tmp_path, time.time() - 100, runs=2, grid="core")
    log = json.loads(path.read_text())
    assert len(log["invocations"]) == 3 and log["invocations"][1]["superseded"]
    assert log["total_runs"] == 7
    assert 700 <= log["total_wall_seconds"] <= 702
    assert log["core_runs"] == 2 and 100 <= log["core_wall_seconds"] <= 102  # only the invocation that ran core runs


def test_an_invocation_knows_its_grid():
    from tood_lib.ablations.runs import grid_of, grid_runs

    core, full = grid_runs("core"), grid_runs("full")
    assert grid_of(core[:3]) == "core"
    assert grid_of([r for r in full if r not in core][:2] + core[:1]) == "full"
    assert grid_of([Run("shapes", "tood", 7)]) == "other"  # a seed no grid declares


def test_replacement_seed_rule():
    from tood_lib.ablations.runs import MAX_REPLACEMENT_SEEDS, grid_of, grid_runs

    core, full = grid_runs("core"), grid_runs("full")
    settled = {r: True for r in full}
    assert grid_runs("core", settled) == core and grid_runs("full", settled) == full  # nothing to replace

    # parallel + TAL seed 1 on the shapes did not settle: seed 5 for it and for its partners in the core claims
    # (Table 6, TAL vs ATSS, TAL vs ATSS+QFL, TAL+TAP vs TAL); the misaligned set is untouched
    outcomes = {**settled, Run("shapes", "tal_parallel", 1): False}
    added = grid_runs("core", outcomes)[len(core):]
    assert set(added) == {Run("shapes", e, 5) for e in ("tal_parallel", "atss_parallel", "atss_qfl_parallel", "tood")}
    assert grid_of(added, outcomes) == "core" and grid_of(added) == "other"
    # the full grid also pairs it for the full grid's claims (the diagnostic without centerness), and keeps core first
    full_added = grid_runs("full", outcomes)
    assert full_added[:len(core) + len(added)] == core + added
    assert set(full_added) - set(full) == set(added) | {Run("shapes", "tal_parallel_no_centerness", 5)}

    # an experiment with 3 seeds gets seed 3; its partner (TOOD, 5 seeds) already has it
    outcomes = {**settled, Run("shapes", "tood_no_prob_map", 1): False}
    assert grid_runs("core", outcomes)[len(core):] == [Run("shapes", "tood_no_prob_map", 3)]

    # a replacement that does not settle is replaced in turn, at most MAX_REPLACEMENT_SEEDS times
    outcomes = {**settled, **{Run("shapes", "tal_parallel", s): False for s in (1, 5, 6)}}
    seeds = sorted(r.seed for r in grid_runs("core", outcomes) if r.dataset == "shapes" and r.experiment == "tal_parallel")
    assert MAX_REPLACEMENT_SEEDS == 2 and seeds == [0, 1, 2, 3, 4, 5, 6]
    # a partner's replacement run that does not settle counts against the partner: ATSS+QFL seed 5 -> seed 6,
    # with its own core partners (ATSS for ATSS+QFL > ATSS; parallel + TAL for TAL > ATSS+QFL)
    outcomes = {**settled, Run("shapes", "tal_parallel", 1): False, Run("shapes", "atss_qfl_parallel", 5): False}
    added = set(grid_runs("core", outcomes)[len(core):])
    assert {Run("shapes", e, 6) for e in ("atss_qfl_parallel", "atss_parallel", "tal_parallel")} <= added
    assert Run("shapes", "tood", 6) not in added  # TOOD is no partner of ATSS+QFL


def test_run_grid_runs_the_replacements(tmp_path, monkeypatch):
    """run_grid with grid="core": the declared runs, then the replacement runs once an unsettled one is known
    (training replaced by a stub that writes result.json; the rule and the loop are what is tested)."""
    from tood_lib.ablations import run_grid as grid_module
    from tood_lib.ablations.runs import grid_runs, run_outcomes

    unsettled = {Run("shapes", "tood_no_prob_map", 1), Run("shapes", "tood_no_prob_map", 3)}
    launched = []

    def fake_launch(run, out_root, threads, extra, lock_fd=None):
        folder = run_dir(run, out_root)
        folder.mkdir(parents=True, exist_ok=True)
        record = dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed, AP=0.3, seconds=0.0,
                      plateau=dict(epoch_75=9, AP_75=0.3, AP_final=0.3, ok=run not in unsettled))
        (folder / "result.json").write_text(json.dumps(record))
        launched.append(run)
        return record

    monkeypatch.setattr(grid_module, "_launch", fake_launch)
    monkeypatch.setattr(grid_module, "prepare_features", lambda *a, **k: None)
    monkeypatch.setattr(grid_module, "collect_results", lambda *a, **k: None)
    monkeypatch.setattr(grid_module, "diagnose_grid", lambda *a, **k: None)
    out = tmp_path / "runs"
    core = grid_runs("core")
    run_grid(core, jobs=2, out_root=out, results_dir=tmp_path / "results", progress=False, grid="core")
    # seed 1 -> seed 3; seed 3 unsettled too -> seed 4 (TOOD already has 3 and 4); then the cap
    assert launched[:len(core)] != [] and set(launched[:len(core)]) == set(core)
    assert launched[len(core):] == [Run("shapes", "tood_no_prob_map", 3), Run("shapes", "tood_no_prob_map", 4)]
    timing = json.loads((tmp_path / "results" / "ablations_cpu_timing.json").read_text())
    assert timing["invocations"][0]["grid"] == "core" and timing["core_runs"] == len(core) + 2
    launched.clear()
    run_grid(grid_runs("core", run_outcomes(out)), jobs=2, out_root=out, results_dir=tmp_path / "results",
             progress=False, grid="core")
    assert launched == []  # resumed: nothing left


def test_tables_without_names_tabulates_every_finished_run(tmp_path):
    """`ablations tables` with no experiment names: the rows of every finished run of the full grid,
    core and the rest of Tables 1-4 alike (it once took the core grid only and dropped the rest)."""
    from tood_lib.ablations.run_one import STAT_KEYS
    from tood_lib.ablations.runs import grid_runs
    from tood_lib.cli import main

    core = grid_runs("core")
    rest = [r for r in grid_runs("full") if r not in set(core)]
    finished = [core[0], rest[0]]
    for i, run in enumerate(finished):
        folder = run_dir(run, tmp_path / "runs")
        folder.mkdir(parents=True)
        record = dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed,
                      **{k: 0.3 + 0.1 * i for k in STAT_KEYS}, ap_curve=[[9, 0.3 + 0.1 * i], [12, 0.3 + 0.1 * i]],
                      plateau=dict(epoch_75=9, AP_75=0.3 + 0.1 * i, AP_final=0.3 + 0.1 * i, ok=True))
        (folder / "result.json").write_text(json.dumps(record))
    # Table 1's model sizes are counted once and cached beside the tables; the committed cache spares this test
    # the full-size models it would build (about 40 s), which are not what it checks
    (tmp_path / "results").mkdir()
    shutil.copy(REPO / "results" / "table1_complexity.csv", tmp_path / "results" / "table1_complexity.csv")
    assert main(["ablations", "tables", "--out-root", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]) == 0
    table = pd.read_csv(tmp_path / "results" / "ablation_runs_cpu.csv")
    assert sorted(zip(table.dataset, table.experiment, table.seed)) == sorted((r.dataset, r.experiment, r.seed) for r in finished)


def test_a_run_on_the_multi_level_bench_uses_its_anchors_and_data(tmp_path):
    from tood_lib.ablations.bench import BENCHES, bench_data_root

    run = Run("misaligned", "atss_parallel", 0)
    record = run_experiment(run, tmp_path, progress=False, overrides=[o for o in TINY if "img_scale" not in o],
                            finetune=True, bench="multi_level")
    config = json.loads((run_dir(run, tmp_path) / "config.json").read_text())
    canvas, anchor_scale, _ = BENCHES["multi_level"]
    assert config["model"]["anchor_scale"] == anchor_scale and config["data"]["img_scale"] == [canvas, canvas]
    log = (run_dir(run, tmp_path) / "metrics.jsonl").read_text()
    assert record["dataset"] == "misaligned" and record["bench"] == "multi_level" and "eval" in log
    assert record["data_root"] == "bench_misaligned"  # the redesigned scenes, not the first bench's
    assert bench_data_root("misaligned", "multi_level").name == "bench_misaligned"
    assert bench_data_root("misaligned", "single_level").name == "misaligned"
