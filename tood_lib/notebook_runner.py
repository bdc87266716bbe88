"""Run the notebooks headless: the figures command, and the tests that execute the series.

``python -m tood_lib figures`` executes every ``notebooks/NN_*.ipynb`` in place (so the committed
notebooks carry the outputs of a fresh run), which rewrites every figure under ``figures/``, and
then, where Chromium is installed, retakes the browser screenshot of the assignment explorer.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from tood_lib.workbook import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
_SAVE_CALL = re.compile(r"""save_figure\(\s*[^,]+,\s*["']([^"']+)["']""")


def list_notebooks(directory: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    """The series, in order: ``NN_name.ipynb`` files, and ``NNb_name.ipynb`` for one that goes between
    NN and NN+1 (``00b_prerequisites`` after the quickstart, before 01)."""
    return sorted(p for p in Path(directory).glob("[0-9][0-9]*_*.ipynb") if re.fullmatch(r"\d\d[a-z]?", p.stem.split("_")[0]))


def figure_names(notebook) -> list[str]:
    """Figure file names (``name.png``) a notebook saves: the literal names of its ``save_figure`` calls."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, (str, Path)) else notebook
    names = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            names += [n if n.endswith(".png") else f"{n}.png" for n in _SAVE_CALL.findall(cell.source)]
    return list(dict.fromkeys(names))


@contextlib.contextmanager
def _environment(**values):
    """Set environment variables for the kernel (it inherits them) and restore them afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_notebook(path: str | Path, output_path: str | Path | None = None, figures_dir: str | Path | None = None,
                     timeout: int = 900) -> tuple[object, float]:
    """Execute a notebook top to bottom (cwd: its own folder) and write it with its outputs.

    output_path: where to write the executed notebook (default: in place). figures_dir: where its
    ``save_figure`` calls write (default: ``figures/``). Raises ``nbclient``'s CellExecutionError,
    which names the failing cell and its traceback, on the first error. -> (notebook, seconds).
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    start = time.perf_counter()
    with _environment(TOOD_FIGURES_DIR=figures_dir, MPLBACKEND="module://matplotlib_inline.backend_inline",
                      PYDEVD_DISABLE_FILE_VALIDATION=1):
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, str(output_path or path))
    return nb, seconds


def regenerate_figures(only: list[str] | None = None, browser: bool = True) -> dict[str, float]:
    """Execute the notebooks in place (all, or those whose name starts with one of ``only``), then
    retake the browser screenshot of the explorer when Chromium and Playwright are available.
    -> {notebook name: seconds}."""
    import shutil

    from tood_lib.workbook import figures_dir, workbook_run

    workbook_run()  # train the notebooks' model first, with a progress bar, rather than inside a cell
    timings = {}
    for nb in list_notebooks():
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        print(f"[figures] running {nb.relative_to(REPO_ROOT)} ...", flush=True)
        _, seconds = execute_notebook(nb)
        timings[nb.name] = seconds
        print(f"[figures]   {seconds:.0f} s; wrote {', '.join(figure_names(nb)) or 'no figures'}", flush=True)
    explorer = NOTEBOOKS_DIR / "03_anchor_assignment.ipynb"
    if browser and explorer.is_file() and (not only or any(explorer.name.startswith(o) for o in only)):
        if shutil.which("chromium") is None:
            print("[figures] skipping the browser screenshot of the explorer: no chromium "
                  "(Debian: apt-get install chromium)")
        else:
            import importlib.util
            import tempfile

            spec = importlib.util.spec_from_file_location("browser_check", REPO_ROOT / "scripts" / "browser_check.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            target = figures_dir() / "assignment_explorer_browser.png"
            with tempfile.TemporaryDirectory() as scratch, _environment(TOOD_FIGURES_DIR=scratch):
                out = module.check_widget_in_browser(explorer, target)
            print(f"[figures] browser screenshot: {out['screenshot']} ({out['seconds']:.0f} s)")
    total = sum(timings.values())
    print(f"[figures] notebooks: {total:.0f} s in all; figures in {figures_dir()}")
    return timings
