"""One model, stated by each notebook itself (issue 20): every notebook that shows the trained model
prints its model card, and the committed outputs name the model that ``workbook_run`` loads."""
import os
import re

import nbformat
import pytest

from tood_lib.model_card import STATEMENT_PREFIX
from tood_lib.notebook_runner import list_notebooks
from tood_lib.ablations.runs import run_dir as grid_run_dir
from tood_lib.workbook import REPO_ROOT, WORKBOOK_RUNS, notebook_run, workbook_config

NOTEBOOKS = list_notebooks()
STATEMENT = re.compile(r"`(?P<preset>[^`]+)` from `(?P<run>[^`]+)`, epoch (?P<epoch>\d+) of (?P<epochs>\d+) "
                       r"\((?P<steps>\d+) optimiser steps, batch (?P<batch>\d+), .*?\), (?P<w>\d+)×(?P<h>\d+) px")


def committed_statements(path) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/markdown", "") or out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            found += [line for line in text.splitlines() if line.startswith(STATEMENT_PREFIX)]
    return found


def loads_the_model(path) -> bool:
    nb = nbformat.read(str(path), as_version=4)
    return any("workbook_run()" in c.source for c in nb.cells if c.cell_type == "code")


def test_the_statement_format_is_what_model_statement_writes(tmp_path):
    from test_model_card import _fake_run  # a run folder without weights
    from tood_lib.model_card import model_card, model_statement

    _fake_run(tmp_path / "run")
    match = STATEMENT.search(model_statement(model_card(tmp_path / "run")))
    assert match and match["preset"] == "tood_small" and match["epoch"] == match["epochs"] == "3"


@pytest.mark.parametrize("notebook", [nb for nb in NOTEBOOKS if loads_the_model(nb)], ids=lambda p: p.stem)
def test_committed_outputs_name_the_model_the_notebook_loads(notebook):
    cfg = workbook_config()
    declared = str(grid_run_dir(notebook_run(), WORKBOOK_RUNS).relative_to(REPO_ROOT))  # runs/workbook/shapes/tood/seed0
    statements = committed_statements(notebook)
    assert statements, f"{notebook.name} loads the series' model but prints no model card (model_statement)"
    steps_per_epoch = cfg.data.train_images // cfg.train.batch_size
    for line in statements:
        m = STATEMENT.search(line)
        assert m, f"{notebook.name}: unreadable model statement {line!r}"
        assert m["preset"] == cfg.name, f"{notebook.name} shows {m['preset']}, the series' model is {cfg.name}"
        assert int(m["epochs"]) == cfg.train.epochs and int(m["epoch"]) <= cfg.train.epochs
        assert int(m["steps"]) == int(m["epoch"]) * steps_per_epoch, f"{notebook.name}: {line}"
        assert int(m["batch"]) == cfg.train.batch_size
        assert [int(m["w"]), int(m["h"])] == list(cfg.data.img_scale)
        assert m["run"] == declared, f"{notebook.name} shows {m['run']}, the series' model is in {declared}"


def test_the_grids_finished_run_is_linked_not_trained_again(tmp_path, monkeypatch):
    """With the grid's run finished, workbook_run links runs/workbook/... to it (no training), so the
    notebooks name the same folder whether the grid ran on this machine or not."""
    import json

    import tood_lib.ablations.runs as runs
    import tood_lib.workbook as workbook

    cfg = workbook_config()
    grid = tmp_path / "grid"
    monkeypatch.setattr(runs, "RUNS_DIR", grid)
    monkeypatch.setattr(workbook, "WORKBOOK_RUNS", tmp_path / "workbook")
    monkeypatch.delenv("TOOD_WORKBOOK_RUN", raising=False)
    assert not workbook.workbook_model_ready()  # nothing trained: the suite would train it in the background
    monkeypatch.setenv("TOOD_WORKBOOK_RUN", str(tmp_path / "elsewhere"))
    assert workbook.workbook_model_ready()  # a named run is the user's business, nothing to train
    monkeypatch.delenv("TOOD_WORKBOOK_RUN")
    finished = grid_run_dir(notebook_run(), grid)
    finished.mkdir(parents=True)
    (finished / "config.json").write_text(json.dumps(cfg.to_dict()))
    (finished / "result.json").write_text("{}")
    for epoch in range(1, cfg.train.epochs + 1):
        (finished / f"epoch_{epoch}.pth").write_bytes(b"")
    assert workbook.workbook_model_ready()  # the grid's finished run will do
    half_trained = grid_run_dir(notebook_run(), tmp_path / "workbook")
    half_trained.mkdir(parents=True)
    assert not workbook.workbook_model_ready()  # ... unless a half-trained run is here, which is resumed instead
    half_trained.rmdir()
    folder = workbook.workbook_run(progress=False)
    assert folder == grid_run_dir(notebook_run(), tmp_path / "workbook")
    assert folder.is_symlink() and folder.resolve() == finished.resolve()
    assert workbook.workbook_run(progress=False) == folder  # and the second call finds it


def test_the_tests_that_need_the_model_run_last():
    """tests/conftest.py: the notebook runs and the browser check (marked workbook_model) come after every
    other test, so that the model's background training overlaps those."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TOOD_WORKBOOK_RUN"}
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "tests/test_browser_widget.py", "tests/test_notebooks.py", "tests/test_model_card.py"],
                            cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    ids = [line for line in listed.stdout.splitlines() if "::" in line]
    needing = [i for i, name in enumerate(ids) if "test_notebook_runs_and_draws" in name or "in_browser" in name]
    assert needing and len(ids) > len(needing)
    assert needing == list(range(len(ids) - len(needing), len(ids))), ids  # all of them at the end
