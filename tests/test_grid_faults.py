"""Fault trials of the ablation grid (issue 21): the grid command killed at precise points (mid-epoch,
mid-write of result.json, of the feature cache, of the results), a damaged feature cache, two grid
commands on one folder, a grid killed while its run goes on, and a full disk. Each trial fails if a
result is lost, duplicated or wrong: after it, the grid's results are those of one uninterrupted
command (the module's reference), and nothing half-written is left anywhere.

The grid is the real command line (``python -m tood_lib ablations run``) on two shrunk runs; faults
are injected into its processes by tests/grid_faults.py (a process SIGKILLed half-way through a
file, a disk that fills)."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import grid_faults
from tood_lib.ablations.grid import REPO_ROOT
from tood_lib.ablations.runs import Run, feature_dir, run_dir

TINY = ["data.train_images=8", "train.batch_size=4", "train.epochs=2", "tal.warmup_epochs=1", "data.img_scale=64,64",
        "train.warmup_iters=1", "train.lr_steps=2"]  # 2 epochs of 2 steps, evaluated after each
RUNS = [Run("shapes", "fcos_parallel", 0), Run("shapes", "fcos_parallel", 1)]
ARGS = ["ablations", "run", "fcos_parallel", "--datasets", "shapes", "--seeds", "0", "1", "--set", *TINY]
TIMES = ["seconds", "train_eval_seconds", "levels_seconds"]  # the only columns that differ between two runs of one grid
# written in place, not atomically, and why that is safe:
APPEND_ONLY = {"metrics.jsonl": "the run's log, appended to; a line cut by a kill is dropped when the run resumes",
               "log.txt": "the run's console output, appended to; never read back"}
NOT_THE_GRIDS = {"coco_stats_val.csv": "engine/inference.py, rewritten at every evaluation; never read back",
                 "per_class_ap_val.csv": "engine/inference.py, rewritten at every evaluation; never read back"}


# ------------------------------------------------------------------------------------ helpers
def grid(folder: Path, fault: dict | None = None, wait: bool = True):
    """The grid command on ``folder/runs`` -> ``folder/results``, in a process of its own, with ``fault``
    in it and in the runs it starts. -> (exit status, stdout + stderr) or, with ``wait=False``, the Popen."""
    hooks = grid_faults.hook_dir(folder.parent / f"{folder.name}_hooks")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(hooks)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    env.pop(grid_faults.ENV, None)
    if fault:
        env[grid_faults.ENV] = json.dumps(fault)
    process = subprocess.Popen([sys.executable, "-m", "tood_lib", *ARGS, "--out-root", str(folder / "runs"),
                                "--results", str(folder / "results")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if not wait:
        return process
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def start_from(reference: Path, folder: Path, features: bool = True, finished=()) -> Path:
    """A grid folder with some of the reference's state: its feature caches, its finished ``runs``, its
    timing log (an earlier command's), and the full-size complexity table (which runs do not change,
    and which takes a minute to compute)."""
    (folder / "results").mkdir(parents=True)
    for name in ("table1_complexity.csv", "ablations_cpu_timing.json"):
        shutil.copy(reference / "results" / name, folder / "results")
    if features:
        shutil.copytree(feature_dir("shapes", reference / "runs"), feature_dir("shapes", folder / "runs"))
    for run in finished:
        shutil.copytree(run_dir(run, reference / "runs"), run_dir(run, folder / "runs"))
    return folder


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic writes (a write that never finished) anywhere under ``folder``."""
    return sorted(p for p in folder.rglob("*.tmp"))


def assert_same_results(folder: Path, reference: Path) -> None:
    """Every result of ``folder`` equals the reference's: the runs' result.json (less their timings),
    every CSV of results/ byte for byte (the run table less its timings), and a readable timing log;
    no temporary file is left and the runs folder's lock is free."""
    for run in RUNS:
        ours, theirs = (json.loads((run_dir(run, root / "runs") / "result.json").read_text()) for root in (folder, reference))
        assert {k: v for k, v in ours.items() if k not in TIMES} == {k: v for k, v in theirs.items() if k not in TIMES}, run
    names = sorted(p.name for p in (reference / "results").iterdir())
    assert sorted(p.name for p in (folder / "results").iterdir()) == names
    for name in names:
        ours, theirs = folder / "results" / name, reference / "results" / name
        if name == "ablation_runs_cpu.csv":
            pd.testing.assert_frame_equal(pd.read_csv(ours).drop(columns=TIMES), pd.read_csv(theirs).drop(columns=TIMES))
        elif name.endswith(".csv"):
            assert ours.read_bytes() == theirs.read_bytes(), name
    assert json.loads((folder / "results" / "ablations_cpu_timing.json").read_text())["invocations"]
    assert leftovers(folder) == []
    assert (folder / "runs" / "grid.lock").read_text() == ""  # released, and by a command that ended cleanly


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted grid command, every file it opens for writing recorded."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "results").mkdir()
    shutil.copy(REPO_ROOT / "results" / "table1_complexity.csv", folder / "results")
    code, output = grid(folder, dict(action="audit", log=str(folder / "writes.log")))
    assert code == 0, output
    return folder


# ------------------------------------------------------------------------------------ every write
def test_every_file_the_grid_writes_is_written_atomically(reference):
    """Each file under the runs and results folders is written to a temporary file and renamed into
    place, except the append-only logs (and the evaluation's own tables, not the grid's files)."""
    written = {Path(line) for line in (reference / "writes.log").read_text().splitlines()}
    ours = [p for p in written if p.is_relative_to(reference / "runs") or p.is_relative_to(reference / "results")]
    assert all(any(name in p.name for p in ours) for name in ("result.json", "ablation_runs_cpu.csv"))  # seen
    in_place = sorted({p.name for p in ours if not p.name.endswith(".tmp")} - set(APPEND_ONLY) - set(NOT_THE_GRIDS))
    assert in_place == [], f"written in place, not atomically: {in_place}"


# ------------------------------------------------------------------------------------ killed
KILLS = {  # where the grid command is killed -> (fault, which runs are already finished, features cached)
    "mid-epoch, half-way through a line of the metrics log":
        (dict(action="kill", file="metrics.jsonl", nth=5), RUNS[1:], True),
    "mid-write of result.json": (dict(action="kill", file="result.json"), RUNS[1:], True),
    "mid-write of the feature cache": (dict(action="kill", file="train.pt"), RUNS[1:], False),
    "mid-write of the results table": (dict(action="kill", file="ablation_runs_cpu.csv"), RUNS, True),
    "mid-write of the timing log": (dict(action="kill", file="ablations_cpu_timing.json"), RUNS[1:], True),
}


@pytest.mark.parametrize("where", list(KILLS))
def test_a_grid_killed_resumes_to_the_same_results(where, reference, tmp_path):
    fault, finished, features = KILLS[where]
    folder = start_from(reference, tmp_path / "grid", features, finished)
    code, output = grid(folder, fault)
    if fault["file"] in ("metrics.jsonl", "result.json"):  # the run's process died; the grid names it
        assert code == 1 and "shapes/fcos_parallel/seed0 failed (exit -9)" in output, output
        assert not (run_dir(RUNS[0], folder / "runs") / "result.json").is_file()
    else:  # the grid command itself died
        assert code == -9, output

    code, output = grid(folder)  # the same command again
    assert code == 0, output
    assert_same_results(folder, reference)
    log = [json.loads(line) for line in (run_dir(RUNS[0], folder / "runs") / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["epoch"] for r in log if r["kind"] == "eval"}) == [1, 2]  # every line whole, both evaluations there
    if not features:  # the cache built again is the one the reference built
        for split in ("train", "val"):
            ours, theirs = (torch.load(feature_dir("shapes", root / "runs") / f"{split}.pt", weights_only=True)
                            for root in (folder, reference))
            assert ours["key"] == theirs["key"] | dict(root=ours["key"]["root"])
            assert all(torch.equal(a, b) for a, b in zip(ours["levels"], theirs["levels"]))


def test_a_grid_killed_while_its_run_goes_on_keeps_the_folder_locked(reference, tmp_path):
    """The grid command dies while a run it started is still training: a new command is refused until
    that run has ended (two processes would train it at once), then resumes to the same results, with
    every training step done once."""
    folder = start_from(reference, tmp_path / "grid", finished=RUNS[1:])
    go = tmp_path / "go"
    first = grid(folder, dict(action="kill_parent", file="metrics.jsonl", nth=3, resume_when=str(go)), wait=False)
    try:
        first.communicate(timeout=600)
        assert first.returncode == -9
        code, output = grid(folder)  # while the orphaned run waits for `go`
        assert code == 1, output
        assert f"{folder / 'runs' / 'grid.lock'} is held by pid {first.pid}" in output
        assert "the runs it started still hold the lock" in output
        assert not (run_dir(RUNS[0], folder / "runs") / "result.json").exists()
    finally:
        go.touch()
    deadline = time.time() + 300
    while not (run_dir(RUNS[0], folder / "runs") / "result.json").is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # its process exits right after
    code, output = grid(folder)
    assert code == 0, output
    assert_same_results(folder, reference)
    log = [json.loads(line) for line in (run_dir(RUNS[0], folder / "runs") / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "step"] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------ a damaged feature cache
def test_a_truncated_or_corrupted_feature_cache_is_rebuilt_and_named(reference, tmp_path, capsys):
    from tood_lib.ablations.run_grid import prepare_features
    from tood_lib.engine.feature_cache import cache_problem

    folder = start_from(reference, tmp_path / "grid")
    cache = feature_dir("shapes", folder / "runs")
    train = (cache / "train.pt").read_bytes()
    (cache / "train.pt").write_bytes(train[:len(train) // 2])  # truncated
    val = bytearray((cache / "val.pt").read_bytes())
    val[len(val) // 2] ^= 0xFF  # one byte of the features flipped: the same size, a readable file
    (cache / "val.pt").write_bytes(bytes(val))

    prepare_features(["shapes"], folder / "runs", progress=False, overrides=TINY)
    printed = capsys.readouterr().out
    assert f"{cache / 'train.pt'}: " in printed and "(truncated); rebuilding it" in printed, printed
    assert f"{cache / 'val.pt'}: " in printed and "(corrupted); rebuilding it" in printed, printed
    for split in ("train", "val"):
        assert cache_problem(cache / f"{split}.pt") is None
        ours, theirs = (torch.load(root / f"{split}.pt", weights_only=True)
                        for root in (cache, feature_dir("shapes", reference / "runs")))
        assert all(torch.equal(a, b) for a, b in zip(ours["levels"], theirs["levels"]))


# ------------------------------------------------------------------------------------ two commands at once
def test_a_second_grid_command_on_the_same_folder_is_refused(tmp_path, capsys):
    from tood_lib.cli import main

    out, results = tmp_path / "runs", tmp_path / "results"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom tood_lib.ablations.grid_lock import grid_lock\n"
                               "with grid_lock(sys.argv[1], 'the first grid command'):\n"
                               "    print('held', flush=True)\n    sys.stdin.read()\n", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(ARGS + ["--out-root", str(out), "--results", str(results)])
        error = capsys.readouterr().err
    finally:
        holder.communicate("")
    assert code == 1
    assert error.startswith("error: another grid command is running on") and "Traceback" not in error
    assert f"{out / 'grid.lock'} is held by pid {holder.pid}" in error and "the first grid command" in error
    assert sorted(p.name for p in out.iterdir()) == ["grid.lock"] and not results.exists()  # nothing ran


def test_a_lock_left_by_a_killed_command_is_taken_over(tmp_path, monkeypatch, capsys):
    from tood_lib.ablations import run_grid as grid_module

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    out = tmp_path / "runs"
    out.mkdir()
    (out / "grid.lock").write_text(json.dumps(dict(pid=dead.pid, started="2026-01-01T00:00:00", command="killed")))
    launched = []

    def fake_launch(run, out_root, threads, extra, lock_fd=None):
        launched.append(run)
        run_dir(run, out_root).mkdir(parents=True)
        record = dict(dataset=run.dataset, experiment=run.experiment, seed=run.seed, AP=0.3, seconds=0.0,
                      plateau=dict(epoch_75=2, AP_75=0.3, AP_final=0.3, ok=True))
        (run_dir(run, out_root) / "result.json").write_text(json.dumps(record))
        return record

    monkeypatch.setattr(grid_module, "_launch", fake_launch)
    monkeypatch.setattr(grid_module, "prepare_features", lambda *a, **k: None)
    monkeypatch.setattr(grid_module, "collect_results", lambda *a, **k: None)
    grid_module.run_grid(RUNS, out_root=out, results_dir=tmp_path / "results", progress=False)
    printed = capsys.readouterr().out
    assert f"taking over {out / 'grid.lock'}: pid {dead.pid}" in printed
    assert sorted(launched, key=str) == RUNS and (out / "grid.lock").read_text() == ""


def test_the_next_command_commits_what_a_killed_one_collected(tmp_path, monkeypatch):
    """With --commit, a command killed between collecting and committing leaves results that only a
    later command can commit: one with nothing left to run still commits them."""
    from tood_lib.ablations import run_grid as grid_module

    folder = run_dir(RUNS[0], tmp_path / "runs")
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(dict(dataset="shapes", experiment="fcos_parallel", seed=0,
                                                         plateau=dict(ok=True))))
    commits = []
    monkeypatch.setattr(grid_module, "prepare_features", lambda *a, **k: None)
    monkeypatch.setattr(grid_module, "collect_results", lambda *a, **k: None)
    monkeypatch.setattr(grid_module, "git_commit_results", lambda results_dir, message: commits.append(results_dir))
    grid_module.run_grid(RUNS[:1], out_root=tmp_path / "runs", results_dir=tmp_path / "results", progress=False,
                         commit=True)
    assert commits == [tmp_path / "results"]


# ------------------------------------------------------------------------------------ a full disk
def test_a_full_disk_while_a_checkpoint_is_written_keeps_the_previous_one(tmp_path):
    """ENOSPC while last.pth of epoch 3 is written: the epoch-2 file stays byte for byte, no temporary
    file is left, the error says what to delete (not epoch_2.pth, a hard link of last.pth that frees
    nothing), and once there is room the run resumes."""
    from tood_lib.config import apply_overrides, get_preset
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.engine.trainer import Trainer

    cfg = apply_overrides(get_preset("tood_small"), ["model.backbone_weights=none", "data.img_scale=64,64",
                                                     "data.train_images=8", "train.batch_size=4", "train.epochs=3",
                                                     "tal.warmup_epochs=1", "train.warmup_iters=1"])
    out, kept = tmp_path / "run", {}

    class KeepEpoch2:
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 2:
                kept["bytes"] = (out / "last.pth").read_bytes()

    trainer = Trainer(cfg, build_builtin_dataset(), out, amp="off", progress=False, evaluate_at_end=False,
                      callbacks=[KeepEpoch2()])
    with grid_faults.striking(dict(action="disk_full", file="last.pth", nth=3)), pytest.raises(OSError) as failure:
        trainer.fit()
    message = str(failure.value)
    assert type(failure.value).__name__ == "DiskFull", message
    assert (out / "last.pth").read_bytes() == kept["bytes"] and leftovers(out) == []
    assert message.startswith(f"disk full while writing {out / 'last.pth'}: it needs about ")
    assert f"free on the file system of {out}" in message and "The previous last.pth is intact" in message
    assert "epoch_1.pth (" in message and "epoch_2.pth" not in message

    resumed = Trainer(cfg, build_builtin_dataset(), out, amp="off", progress=False, evaluate_at_end=False)
    assert resumed.resume() and resumed.state.epoch == 2
    resumed.fit()
    assert resumed.state.global_step == 6


def test_a_full_disk_while_results_are_written_keeps_the_previous_ones(reference, tmp_path, capsys):
    from tood_lib.cli import main

    folder = start_from(reference, tmp_path / "grid", finished=RUNS)
    table = folder / "results" / "ablation_runs_cpu.csv"
    table.write_text("the previous table\n")
    with grid_faults.striking(dict(action="disk_full", file="ablation_runs_cpu.csv")):
        code = main(["ablations", "tables", "fcos_parallel", "--datasets", "shapes", "--seeds", "0", "1",
                     "--out-root", str(folder / "runs"), "--results", str(folder / "results")])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert error.startswith(f"error: disk full while writing {table}: ") and "Free space there" in error
    assert table.read_text() == "the previous table\n" and leftovers(folder) == []


def test_a_run_that_fills_the_disk_is_named_by_the_grid_and_resumes(reference, tmp_path):
    """In a run's own process: its epoch-2 checkpoint does not fit. The grid command says so in one
    line per run (no traceback), the epoch-1 checkpoint stays, and the next command finishes the run."""
    folder = start_from(reference, tmp_path / "grid", finished=RUNS[1:])
    last = run_dir(RUNS[0], folder / "runs") / "last.pth"
    code, output = grid(folder, dict(action="disk_full", file="last.pth", nth=2))
    assert code == 1 and "Traceback" not in output.split("error: some runs failed")[-1], output
    assert f"shapes/fcos_parallel/seed0 failed (exit 2): disk full while writing {last}: " in output, output
    assert torch.load(last, weights_only=True)["state"]["epoch"] == 1 and leftovers(folder) == []
    code, output = grid(folder)
    assert code == 0, output
    assert_same_results(folder, reference)
