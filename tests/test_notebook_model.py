"""One model, stated by each notebook itself (issue 20): every notebook that shows the trained model
prints its model card, and the committed outputs name the model that ``workbook_run`` loads."""
import re

import nbformat
import pytest

from tood_lib.model_card import STATEMENT_PREFIX
from tood_lib.notebook_runner import list_notebooks
from tood_lib.workbook import workbook_config

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
        assert "runs/" in m["run"] and not m["run"].startswith("/"), f"{notebook.name}: a machine's path {m['run']!r}"
