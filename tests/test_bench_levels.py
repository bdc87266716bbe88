"""The multi-level bench's declared target (ablations/bench.py), checked on the committed level table
(results/levels_bench.csv, written by ``python -m tood_lib levels --table``)."""
import pandas as pd
import pytest

from tood_lib.ablations.bench import BENCHES, audit_row, bench_data_root, target_failures
from tood_lib.ablations.grid import REPO_ROOT

TABLE = REPO_ROOT / "results" / "levels_bench.csv"


def _table():
    return pd.read_csv(TABLE)


def test_both_bench_data_sets_meet_the_declared_target():
    bench = _table().query("role == 'bench'")
    assert sorted(bench["dataset"]) == ["misaligned", "shapes"]
    for row in bench.to_dict("records"):
        assert target_failures(row) == [], row["data"]
        assert row["share_P3"] <= 60 and min(row["share_P3"], row["share_P4"], row["share_P5"]) >= 10 and row["share_P6"] > 0


def test_the_first_bench_is_recorded_as_single_level_and_coco_as_spread():
    table = _table()
    first = table.query("role == 'first bench'")
    assert (first["share_P3"] > 99).all() and not first["meets_target"].any()
    coco = table.query("role == 'COCO'")
    if len(coco):  # (COCO Tiny is in ../shared; a table made without it has no COCO rows)
        assert coco["meets_target"].all() and (coco["share_P7"] > 0).all()


@pytest.mark.parametrize("dataset", ["shapes", "misaligned"])
def test_a_committed_bench_row_is_what_the_code_computes(dataset):
    """(fails when a generator changed and the table was not made again: python -m tood_lib levels --table)"""
    canvas, scale, _ = BENCHES["multi_level"]
    row = _table().query(f"role == 'bench' and dataset == '{dataset}'").iloc[0]
    fresh = audit_row("x", bench_data_root(dataset, "multi_level"), "val", (canvas, canvas), scale)
    for level in ("P3", "P4", "P5", "P6", "P7"):
        assert fresh[f"share_{level}"] == pytest.approx(row[f"share_{level}"], abs=0.01)


def test_the_committed_table_names_no_machine_path():
    assert not any(str(root).startswith("/") for root in _table()["root"])
