"""The paper's tables as data: every file loads, and every number matches the specification's copy."""
import re
from pathlib import Path

import pandas as pd
import pytest

from tood_lib.analysis.complexity import PAPER_TABLE1
from tood_lib.analysis.paper_tables import TABLES, paper_table

SPEC = Path(__file__).resolve().parents[2] / "shared" / "tood_spec.md"
ROWS = {1: 8, 2: 14, 3: 4, 4: 6, 5: 29, 6: 4}


@pytest.mark.parametrize("number", TABLES)
def test_tables_load_with_their_source(number):
    table = paper_table(number)
    assert len(table) == ROWS[number]
    assert "2108.07755" in table.attrs["source"] and "data version" in table.attrs["source"]
    for column in ("AP", "AP50", "AP75"):
        if column in table:
            assert pd.api.types.is_float_dtype(table[column]) and table[column].between(0, 100).all()
    assert not table.drop(columns=[c for c in ("variant",) if c in table]).isna().any().any()


def test_unknown_table_is_a_clear_error():
    with pytest.raises(ValueError, match="Tables 1-6"):
        paper_table(7)


def _fmt(values) -> str:
    return "/".join(f"{v:.1f}" for v in values)


@pytest.mark.skipif(not SPEC.is_file(), reason="../shared/tood_spec.md is not beside the project")
def test_every_number_matches_the_specification():
    """Typos in the data files would silently skew every comparison: cross-check each row against
    the spec's transcription of the paper (slash-separated AP rows, markdown rows for Tables 1 and 6)."""
    spec = SPEC.read_text()
    for _, r in paper_table(1).iterrows():
        row = (f"| {r.detector} | {r['head']} | {r.head_params_m:.2f}/{r.total_params_m:.2f} | "
               f"{r.head_gflops:.2f}/{r.total_gflops:.2f} | {r.AP:.1f} | {r.AP50:.1f} | {r.AP75:.1f} |")
        assert row in spec, row
    for number in (2, 3, 4):
        for _, r in paper_table(number).iterrows():
            assert _fmt((r.AP, r.AP50, r.AP75)) in spec, (number, dict(r))
    for _, r in paper_table(5).iterrows():
        assert _fmt((r.AP, r.AP50, r.AP75, r.APs, r.APm, r.APl)) in spec, dict(r)
    for _, r in paper_table(6).iterrows():
        counts = " | ".join(f"{int(v):,}" for v in (r.correct, r.redundant, r.error))
        row = f"| {r['head']} + {r.assignment} | {r.AP:.1f} | {r.PCC:.3f} | {r.IoU:.3f} | {counts} |"
        assert row in spec, row
    # and the spec's Table 4 exponents are the file's
    pairs = set(re.findall(r"^- \*{0,2}\((\d\.\d), (\d)\)", spec, flags=re.M))
    assert pairs == {(f"{a:.1f}", str(int(b))) for a, b in zip(paper_table(4).alpha, paper_table(4).beta)}


def test_complexity_reference_comes_from_table1():
    t1 = paper_table(1).set_index(["detector", "head"])
    assert PAPER_TABLE1["t_head"]["head_gmacs"] == t1.loc[("ATSS (anchor-free)", "T-head"), "head_gflops"]
    assert PAPER_TABLE1["parallel"]["total_params_m"] == t1.loc[("ATSS (anchor-free)", "parallel"), "total_params_m"]
