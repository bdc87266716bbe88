"""The declared claims (ablations/claims.py) and how they are judged from paired seeds, on hand-made runs."""
import math

import pandas as pd
import pytest

from tood_lib.ablations.claims import CLAIMS, CLAIMS_BY_NAME, DATASETS, Claim, claim_experiments, judge, verdict_table
from tood_lib.ablations.grid import EXPERIMENTS
from tood_lib.ablations.run_one import plateau
from tood_lib.ablations.runs import TABLE6, grid_runs


def runs(values: dict[str, list[float]], metric: str = "AP") -> pd.DataFrame:
    return pd.DataFrame([dict(experiment=e, seed=s, **{metric: v}) for e, vs in values.items() for s, v in enumerate(vs)])


CLAIM = Claim("x", 1, "variant > base", "base", "variant", paper_delta=1.5)


@pytest.mark.parametrize("base, variant, verdict", [
    ([0.40, 0.42, 0.41], [0.45, 0.46, 0.47], "reproduced"),
    ([0.40, 0.42, 0.41], [0.35, 0.37, 0.36], "reversed"),
    ([0.40, 0.42, 0.41], [0.42, 0.40, 0.42], "not distinguishable"),
    ([0.40], [0.45], "one seed: no verdict"),
])
def test_verdicts_from_paired_seeds(base, variant, verdict):
    row = judge(CLAIM, runs(dict(base=base, variant=variant)))
    assert row["verdict"] == verdict and row["seeds"] == len(base)
    diffs = [100 * (v - b) for b, v in zip(base, variant)]
    assert row["delta"] == pytest.approx(sum(diffs) / len(diffs))
    if len(diffs) > 1:
        assert row["se"] == pytest.approx(pd.Series(diffs).std(ddof=1) / math.sqrt(len(diffs)))


def test_pairing_removes_the_seed_effect():
    # seeds differ a lot from each other, the variant is always 1 point better: paired, that is clear
    base = [0.30, 0.40, 0.50, 0.35, 0.45]
    row = judge(CLAIM, runs(dict(base=base, variant=[b + 0.01 for b in base])))
    assert row["verdict"] == "reproduced" and row["delta"] == pytest.approx(1.0) and row["se"] < 1e-6


def test_a_decrease_claim_and_a_near_best_claim():
    fewer = Claim("r", 6, "fewer redundant boxes", "base", "variant", paper_delta=-3000, metric="redundant")
    assert judge(fewer, runs(dict(base=[100, 110, 105], variant=[80, 85, 83]), "redundant"))["verdict"] == "reproduced"
    near = Claim("n", 4, "near best", "tood", "tood", 0.0, kind="near_best", others=("a", "b"))
    close = runs(dict(tood=[0.40, 0.41, 0.42], a=[0.41, 0.40, 0.42], b=[0.30, 0.31, 0.30]))
    assert judge(near, close)["verdict"] == "reproduced"
    beaten = runs(dict(tood=[0.40, 0.41, 0.42], a=[0.45, 0.46, 0.47], b=[0.30, 0.31, 0.30]))
    row = judge(near, beaten)
    assert row["verdict"] == "reversed" and "a" in row["detail"] and row["delta"] == pytest.approx(-5.0)


def test_the_declaration_is_consistent_with_the_grid():
    assert len({c.name for c in CLAIMS}) == len(CLAIMS) == len(CLAIMS_BY_NAME)
    for c in CLAIMS:
        assert {c.baseline, c.variant, *c.others} <= set(EXPERIMENTS), c.name
        assert set(c.core) <= set(c.datasets) <= set(DATASETS) and c.kind in ("greater", "near_best")
    # the issue's list: T-Head > parallel per detector, TAL > ATSS per head, Table 2's steps, Table 3, α/β, the parts, Table 6
    tables = {c.table for c in CLAIMS}
    assert tables == {0, 1, 2, 3, 4, 6}
    assert {"prob_map_helps", "offsets_help", "layer_attention_helps", "tal_vs_atss_qfl"} <= set(CLAIMS_BY_NAME)
    assert {c.metric for c in CLAIMS if c.table == 6} == {"AP", "PCC", "IoU", "redundant", "error"}
    core = grid_runs("core")
    for dataset in DATASETS:
        assert set(TABLE6) | {"atss_qfl_parallel"} <= set(claim_experiments(dataset))
        for e in claim_experiments(dataset):
            seeds = sorted(r.seed for r in core if r.dataset == dataset and r.experiment == e)
            assert seeds == list(range(5 if e in TABLE6 else 3))
    # the core grid: Table 6 x 5 seeds on both; Table 2's schemes and the parts on the shapes; ATSS+QFL on both
    assert len(core) == 2 * 4 * 5 + 6 * 3 + 3 and len(set(core)) == len(core)
    full = grid_runs("full")
    assert core == full[:len(core)] and len(set(full)) == len(full)
    assert {r.experiment for r in full if r.dataset == "misaligned"} >= {"tood_no_prob_map", "tood_no_offsets"}


def test_verdict_table_covers_each_dataset_claims():
    table = verdict_table(runs(dict(atss_parallel=[0.4, 0.41, 0.42], tood=[0.45, 0.47, 0.46])), "misaligned")
    assert set(table["claim"]) == {c.name for c in CLAIMS if "misaligned" in c.datasets}
    assert table.set_index("claim").at["tood_vs_atss_af", "verdict"] == "reproduced"
    assert table.set_index("claim").at["tal_vs_atss_qfl", "verdict"] == "not run"


@pytest.mark.parametrize("curve, ok", [
    ([(3, 0.1), (6, 0.3), (9, 0.370), (10, 0.375), (11, 0.378), (12, 0.379)], True),
    ([(3, 0.1), (6, 0.3), (9, 0.363), (10, 0.374), (11, 0.377), (12, 0.378)], False),  # +1.5 points after epoch 9
    ([(3, 0.1), (6, 0.3), (12, 0.379)], True),  # no epoch-9 point: the next evaluated epoch stands in
    ([(3, 0.1), (6, 0.3), (9, 0.37)], False),  # never finished
])
def test_plateau_rule(curve, ok):
    assert plateau(curve, 12)["ok"] is ok
