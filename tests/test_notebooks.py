"""The notebooks run top to bottom on the built-in data (in a temporary copy) and draw every figure they name.

They need the series' model (``tood_lib.workbook.workbook_run``: the CPU bench's TOOD seed 0, about 8
minutes on one CPU thread, as the grid trains it) unless the grid's run or ``runs/workbook/`` already holds
it; so they run last, and ``tests/conftest.py`` trains it in the background while the other tests run.
"""
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nbclient")
pytest.importorskip("ipywidgets")

from tood_lib.data.coco import coco_tiny_root  # noqa: E402
from tood_lib.notebook_runner import execute_notebook, figure_names, list_notebooks  # noqa: E402
from tood_lib.workbook import workbook_run  # noqa: E402

NOTEBOOKS = list_notebooks()


def test_the_series_is_there():
    names = [nb.name for nb in NOTEBOOKS]
    assert names.index("00b_prerequisites.ipynb") == names.index("00_quickstart.ipynb") + 1
    for expected in ("00_quickstart.ipynb", "00b_prerequisites.ipynb", "01_t_head_internals.ipynb", "02_alignment_metric.ipynb",
                     "03_anchor_assignment.ipynb", "04_training_on_coco.ipynb", "05_ablations.ipynb",
                     "06_qualitative_figures.ipynb"):
        assert expected in names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_committed_notebook_has_outputs_and_no_errors(notebook):
    """Committed with the outputs of a run, so it reads well on a code host; no error outputs."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "run it with `python -m tood_lib figures`"
    for cell in code:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{notebook.name}: error output {out.get('ename')}"
            assert not (out.get("name") == "stderr" and "Traceback" in out.get("text", ""))
    assert figure_names(nb), f"{notebook.name} saves no figure"


@pytest.mark.workbook_model
@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_and_draws_its_figures(notebook, tmp_path):
    workbook_run(progress=False)  # train once here, not inside a cell with a cell timeout
    copy = tmp_path / notebook.name
    shutil.copy(notebook, copy)
    figures = tmp_path / "figures"
    nb, seconds = execute_notebook(copy, figures_dir=figures, timeout=600)
    print(f"{notebook.name}: {seconds:.0f} s")
    names = figure_names(nb)
    assert names
    if coco_tiny_root() is None:
        # COCO Tiny lives beside the repo (../shared), not in it; without it the notebook prints that it skips
        # its real-image figures, and only those may be missing.
        skipped = [n for n in names if "coco_tiny" in n]
        printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        assert not skipped or "COCO Tiny not found" in printed, f"{notebook.name} skipped {skipped} without saying so"
        names = [n for n in names if n not in skipped]
    for name in names:
        path = figures / name
        assert path.is_file(), f"{notebook.name} did not write figures/{name}"
        image = np.asarray(Image.open(path).convert("L"), dtype=float)
        assert image.shape[0] >= 200 and image.shape[1] >= 300, f"{name} is too small: {image.shape}"
        assert image.std() > 10, f"{name} looks blank"
