"""Figures a reader can read: every PNG the project draws under figures/ is at least 100 dpi."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from tood_lib.workbook import MIN_DPI, REPO_ROOT, save_figure  # noqa: E402

# A browser screenshot of the live widget (scripts/browser_check.py): pixels of a screen, not a drawn figure.
SCREENSHOTS = {"assignment_explorer_browser.png"}


def test_every_committed_figure_is_drawn_at_100_dpi_or_more():
    figures = sorted((REPO_ROOT / "figures").glob("*.png"))
    assert len(figures) > 20
    low = []
    for path in figures:
        if path.name in SCREENSHOTS:
            continue
        dpi = Image.open(path).info.get("dpi")
        if dpi is None or min(dpi) < MIN_DPI - 0.5:
            low.append(f"{path.name}: {dpi}")
    assert not low, f"figures below {MIN_DPI} dpi: {low}"


def test_save_figure_refuses_a_blurry_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOD_FIGURES_DIR", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    with pytest.raises(ValueError, match="below"):
        save_figure(fig, "blurry", dpi=72)
    path = save_figure(fig, "sharp")
    assert Path(path).parent == tmp_path and min(Image.open(path).info["dpi"]) >= MIN_DPI - 0.5
    plt.close(fig)
