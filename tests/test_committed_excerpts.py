"""The source excerpts in the committed notebooks' outputs (``analysis.source.source_excerpt``) are the
library as it is now: the lines they name hold the code they show. An edit to a function the notebooks
quote, even one that only moves it, makes its notebook stale until it is re-executed; this test says which."""
import re
import textwrap

import nbformat
import pytest

from tood_lib.notebook_runner import list_notebooks
from tood_lib.workbook import REPO_ROOT

EXCERPT = re.compile(r"`(?P<path>tood_lib/[\w/]+\.py)`, lines (?P<first>\d+)–(?P<last>\d+) \(`(?P<name>[\w.]+)`\)\n\n"
                     r"```python\n(?P<code>.*?)\n```", re.S)


def committed_excerpts(notebook):
    nb = nbformat.read(str(notebook), as_version=4)
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown", "")
            text = text if isinstance(text, str) else "".join(text)
            for match in EXCERPT.finditer(text):
                yield index, match


def as_shown(lines: list[str]) -> str:
    """What source_excerpt prints for these lines: dedented, blank lines emptied, trailing space stripped."""
    return textwrap.dedent("".join(line if line.strip() else "\n" for line in lines)).rstrip()


def test_the_pattern_reads_an_excerpt_as_source_excerpt_writes_it():
    from tood_lib.analysis.source import source_excerpt
    from tood_lib.assign.tal import task_aligned_assign

    match = EXCERPT.search(source_excerpt(task_aligned_assign).data)
    assert match and match["path"] == "tood_lib/assign/tal.py" and match["name"] == "task_aligned_assign"
    lines = (REPO_ROOT / match["path"]).read_text().splitlines(keepends=True)
    first, last = int(match["first"]), int(match["last"])
    assert as_shown(lines[first - 1:last]) == match["code"]
    assert as_shown(lines[first:last + 1]) != match["code"]  # one line off is seen as stale


def test_the_series_quotes_the_library():
    """The check above is not empty: the notebooks' excerpts are found (01, 02 and 02b quote the equations)."""
    found = {nb.stem: sum(1 for _ in committed_excerpts(nb)) for nb in list_notebooks()}
    assert found["01_t_head_internals"] >= 5 and found["02_alignment_metric"] >= 1 and found["02b_tal_by_hand"] >= 3


@pytest.mark.parametrize("notebook", list_notebooks(), ids=lambda p: p.stem)
def test_every_committed_excerpt_matches_the_source(notebook):
    stale = []
    for index, match in committed_excerpts(notebook):
        lines = (REPO_ROOT / match["path"]).read_text().splitlines(keepends=True)
        shown = as_shown(lines[int(match["first"]) - 1:int(match["last"])])
        if shown != match["code"]:
            stale.append(f"cell {index}: {match['path']} lines {match['first']}-{match['last']} ({match['name']})")
    assert not stale, (f"{notebook.name} shows code that is no longer at those lines; re-execute it "
                       f"(python -m tood_lib figures --only {notebook.stem.split('_')[0]}): " + "; ".join(stale))
