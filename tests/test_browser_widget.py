"""The assignment explorer of notebook 03 works in a real browser (JupyterLab + headless Chromium).

Runs the notebook in JupyterLab, moves the α slider and checks the summary text changes, then
saves the screenshot as ``figures/assignment_explorer_browser.png``. Skipped when Chromium or
Playwright is missing, unless ``TOOD_REQUIRE_BROWSER=1`` (set by CI), which makes that a failure.
``TOOD_BROWSER_NOTEBOOK`` points the test at another notebook (e.g. a stub while developing);
the trained model is then not prepared and the screenshot is not copied into ``figures/``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "03_anchor_assignment.ipynb"
FIGURE = REPO / "figures" / "assignment_explorer_browser.png"


def load_browser_check():
    """scripts/browser_check.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("browser_check", REPO / "scripts" / "browser_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def skip_or_fail(reason: str) -> None:
    """Skip on a developer's machine; fail when the browser is required (CI)."""
    if os.environ.get("TOOD_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (TOOD_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.mark.workbook_model
@pytest.mark.slow
def test_assignment_explorer_in_browser(tmp_path):
    browser_check = load_browser_check()
    try:
        browser_check.find_chromium()
        browser_check.import_playwright()
    except browser_check.BrowserCheckError as exc:
        skip_or_fail(str(exc))

    override = os.environ.get("TOOD_BROWSER_NOTEBOOK")
    notebook = Path(override) if override else NOTEBOOK
    assert notebook.is_file(), f"notebook {notebook} is missing"
    if not override:
        # Train (or reuse) the notebooks' small model here, once, so the kernel only loads it and
        # the browser check's timeout covers running the notebook, not training.
        from tood_lib.workbook import workbook_run

        workbook_run()

    figures = tmp_path / "figures"  # the notebook's own figures must not overwrite committed ones
    env = dict(os.environ, TOOD_FIGURES_DIR=str(figures))
    screenshot = tmp_path / "assignment_explorer_browser.png"
    result = browser_check.check_widget_in_browser(notebook, screenshot, timeout_s=600, env=env)
    print(f"browser check: {result}")

    assert result["before"] and result["after"]
    assert result["before"] != result["after"], "moving the α slider did not change the summary"
    assert screenshot.is_file() and screenshot.stat().st_size > 20_000, "screenshot missing or tiny"
    with Image.open(screenshot) as image:
        assert image.format == "PNG"
        extrema = image.convert("RGB").getextrema()
    assert any(low != high for low, high in extrema), "screenshot is a single colour"
    if not override:
        shutil.copyfile(screenshot, FIGURE)
