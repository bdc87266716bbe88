"""Static markdown carries no measured number (issue 12): a number in a notebook's prose is a
reference (Table 2, Eq. 9, §3, notebook 05), a constant of the method or of the recipe with its unit
(β = 6 inside math, 128 px, 12 epochs), or one of the paper's own numbers. Measured numbers are
rendered from computed values in code cells (``display(Markdown(f"..."))``), so they cannot drift.

Every notebook of the series is checked."""
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from tood_lib.notebook_runner import list_notebooks

CHECKED = [p.stem for p in list_notebooks()]  # every notebook of the series

# A number right after one of these words is a reference, not a measurement.
REFERENCE = re.compile(r"(?:tables?|fig(?:ure)?s?\.?|eqs?\.?|equations?|§|sections?|notebooks?|issues?|exercises?|"
                       r"epochs?|steps?|chapters?|d2l\.ai|stages?|levels?|rows?|cells?|batch|strides?|top-?)"
                       r"(?:\s*\d+\s*(?:,|and|to|–|-|or)?)*\s*$", re.I)
# A number right before one of these is a setting of the recipe or of the data, with its unit.
SETTING = re.compile(r"^\s*(?:px|pixels?|-pixel|×|x\d|epochs?|seeds?|images?|classes|cores?|gpus?|threads?|"
                     r"steps?|strides?|levels?|convolutions|objects?|experiments?|runs?|anchors?\b|channels|"
                     r"shapes|models|val images|training images|layers)", re.I)
CONSTANTS = {"0", "1", "2", "0.5", "0.95", "0.50", "0.55", "0.25", "0.75", "0.6", "0.01", "0.4", "4.595", "1.0",
             "0.26", "0.34", "100", "101", "50", "10", "75"}  # thresholds, the plateau rule's 75 %, COCO's 101 points


def paper_numbers() -> set[str]:
    numbers = set()
    for path in (Path(__file__).parents[1] / "tood_lib" / "paper_data").glob("table*.csv"):
        table = pd.read_csv(path, comment="#")
        for value in table.select_dtypes("number").to_numpy().ravel():
            numbers |= {f"{value:g}", f"{value:.1f}", f"{value:.3f}", f"{value:,.0f}"}
    return numbers


def prose(text: str) -> str:
    """Markdown without what is not prose: math, code, links' targets, HTML."""
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"<[^>]+>", " ", text)
    return text


def hand_typed_numbers(text: str, allowed: set[str]) -> list[str]:
    """The numbers of ``text`` that are neither references, settings, constants nor the paper's."""
    found = []
    for match in re.finditer(r"(?<![\w.])(\d+(?:[.,]\d+)*)(?![\w])", prose(text)):
        number, before, after = match.group(1), match.string[:match.start()], match.string[match.end():]
        line = before.rsplit("\n", 1)[-1]
        numbered = line.strip() == "" and after.startswith(".")  # a numbered list
        heading = line.lstrip().startswith("#")  # "## 3. ..." and the notebook's own number
        if (numbered or heading or REFERENCE.search(before[-20:]) or SETTING.match(after[:20]) or number in allowed
                or re.match(r"^\s*[–-]\s*\d", after) and REFERENCE.search(before[-20:])
                or re.search(r"[A-Za-z×]-?$", before[-1:]) or re.fullmatch(r"(19|20)\d\d", number)):
            continue
        found.append(f"{number!r} in “…{before[-30:]}{number}{after[:30]}…”".replace("\n", " "))
    return found


@pytest.fixture(scope="module")
def allowed():
    return CONSTANTS | paper_numbers()


def test_the_scanner_catches_a_measured_number(allowed):
    assert hand_typed_numbers("TOOD reaches AP 0.553 after training; 60 TAL positives against 44.", allowed)
    assert not hand_typed_numbers("Table 2, Eq. 9 and §3; 128 px, 12 epochs, 5 seeds; $\\beta = 6$; the paper's 42.5.",
                                  allowed)


@pytest.mark.parametrize("name", CHECKED)
def test_markdown_has_no_hand_typed_measurement(name, allowed):
    """A notebook may also cite numbers it did not measure (a model zoo's memory, a data set's size), each
    listed with its source in its metadata ``tood_cited_numbers``."""
    path = next(p for p in list_notebooks() if p.stem == name)
    nb = nbformat.read(str(path), as_version=4)
    cited = nb.metadata.get("tood_cited_numbers", {})
    assert all(isinstance(source, str) and source for source in cited.values()), f"{path.name}: a cited number without its source"
    allowed = allowed | set(cited)
    problems = [f"cell {i}: {n}" for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
                for n in hand_typed_numbers(cell.source, allowed)]
    assert not problems, f"{path.name} has numbers typed into its prose:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", CHECKED)
def test_every_notebook_has_exercises_with_checked_solutions(name):
    """Issue 12: exercises in every notebook, with solutions in code cells tagged "solution" (collapsed in
    JupyterLab) that end in an assert, so CI runs and checks them with the rest of the notebook."""
    path = next(p for p in list_notebooks() if p.stem == name)
    nb = nbformat.read(str(path), as_version=4)
    assert any("## Exercises" in c.source for c in nb.cells if c.cell_type == "markdown"), f"{path.name}: no exercises"
    solutions = [c for c in nb.cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])]
    assert solutions, f"{path.name}: no solution cells"
    assert all("assert" in c.source for c in solutions), f"{path.name}: a solution without an assert"
    assert any("Predict" in c.source for c in nb.cells if c.cell_type == "markdown"), f"{path.name}: no predict-first prompt"


# ---- Directions (issue 20) -------------------------------------------------------------------------
# In the results notebooks, a sentence of markdown that says how a result behaves (higher, sharper,
# closer, depends on, pulls together, ...) must be rendered from the data in a code cell instead, or be
# one of: a question; the paper's own claim (the sentence names the paper); a condition ("If ...");
# or an entry of DIRECTION_ALLOWED below, each a fact of the method or of the recipe, not of a result.
RESULTS_NOTEBOOKS = ("05_ablations", "06_qualitative_figures")
DIRECTIONAL = re.compile(
    r"\b(higher|lower|sharper|broader|closer|further apart|better|worse|fewer|larger|smaller|depends? on|"
    r"pulls? (?:\w+ )?together|makes? them differ|raises?|improves?|widens?|narrows?|reduces?|increases?|"
    r"decreases?|outperforms?|beats?|helps?|hurts?|exceeds?|more \w+ than|less \w+ than)\b", re.I)
DIRECTION_ALLOWED = {
    # the protocol (notebook 05 §1): what an LR drop does to any curve, said to justify the second rule
    "a drop of the LR by itself flattens a curve",
    # the design check's definition (05 §2): what the misaligned set must measure as, before any result
    "must lie further apart (relative to the box) and its PCC must be lower than on the shapes",
    # why a square anchor misses elongated bodies: geometry of the anchor, not a result
    "overlaps none of them that much",
    # the names of the three orders a pair can take under the verdicts' rule (05 §8), not a result
    "the variant higher, the baseline higher, or not distinguishable",
}


def sentences(markdown: str) -> list[str]:
    text = " ".join(prose(markdown).split())
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9*(])", text) if s]


def unchecked_directions(markdown: str) -> list[str]:
    found = []
    for sentence in sentences(markdown):
        if not DIRECTIONAL.search(sentence):
            continue
        if (sentence.rstrip(" )*").endswith("?") or re.search(r"\bpaper'?s?\b", sentence, re.I)
                or re.match(r"\W*if\b", sentence, re.I) or any(a in sentence for a in DIRECTION_ALLOWED)):
            continue
        found.append(sentence)
    return found


def test_the_direction_scanner_flags_a_claim_and_spares_questions_and_the_paper():
    assert unchecked_directions("TOOD pulls them together. The T-Head scores higher AP than the parallel head.")
    assert not unchecked_directions("Does TOOD pull them together? The paper's point: TOOD pulls them together. "
                                    "If freezing changed the order, every verdict would be about frozen features.")


@pytest.mark.parametrize("name", RESULTS_NOTEBOOKS)
def test_results_notebooks_state_no_direction_in_static_markdown(name):
    path = next(p for p in list_notebooks() if p.stem == name)
    nb = nbformat.read(str(path), as_version=4)
    bad = [f"cell {i}: {s}" for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
           for s in unchecked_directions(c.source)]
    assert not bad, "directions stated in markdown; render them from the data or assert them:\n" + "\n".join(bad)
