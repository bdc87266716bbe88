"""The two mechanisms found on the multi-level grid (ablations/mechanisms.py): the layer attention's
parameters against their init, TAL's candidate pool and its level course over training, and the
Markdown that renders them (every direction it states computed from the numbers)."""
import math

import pandas as pd
import pytest
import torch

from tood_lib.ablations.mechanisms import layer_attention_mechanism, tal_level_mechanism
from tood_lib.analysis.layer_attention import layer_attention_parameters
from tood_lib.analysis.levels import pool_shares
from tood_lib.config import apply_overrides, get_preset


from tood_lib.model.detector import build_model


def test_the_pool_is_the_share_of_inside_points_per_level():
    audit = pd.DataFrame([dict(inside_P3=16, inside_P4=4, inside_P5=1, inside_P6=0, inside_P7=0),
                          dict(inside_P3=48, inside_P4=12, inside_P5=3, inside_P6=1, inside_P7=0)])
    shares = pool_shares(audit)
    assert shares == pytest.approx(dict(pool_P3=64 / 85 * 100, pool_P4=16 / 85 * 100, pool_P5=4 / 85 * 100,
                                        pool_P6=1 / 85 * 100, pool_P7=0.0))


def _attention_frame(model, pooled_by_level: dict[str, torch.Tensor]) -> pd.DataFrame:
    """What layer_attention_by_level measures, from given pooled features: (images, N·C, 1, 1) per level."""
    rows = []
    for level, pooled in pooled_by_level.items():
        for task in ("cls", "reg"):
            w = getattr(model.head, f"{task}_decomp").attention(pooled)
            rows += [dict(level=level, task=task, layer=k + 1, weight=float(w[:, k].mean()), std=0.0) for k in range(w.shape[1])]
    return pd.DataFrame(rows)


def test_a_fresh_layer_attention_is_its_init_and_its_biases_alone():
    torch.manual_seed(0)
    model = build_model(get_preset("tood_small")).eval()
    channels = model.head.cls_decomp.feat_channels * model.head.cls_decomp.stacked_convs
    pooled = {"P3": torch.rand(4, channels, 1, 1) * 3, "P4": torch.rand(4, channels, 1, 1)}
    with torch.no_grad():
        fresh = layer_attention_parameters(model, _attention_frame(model, pooled)).set_index("task")
        assert list(fresh.index) == ["cls", "reg"]
        assert fresh["w1_growth"].between(0.9, 1.1).all() and fresh["w2_growth"].between(0.7, 1.3).all()
        assert all(v == pytest.approx([0.5] * model.head.cls_decomp.stacked_convs) for v in fresh["bias_only"])
        assert fresh["max_gap_to_bias_only"].max() < 1e-3 and fresh["b2_spread"].max() == 0.0
        # weights that have grown make w depend on the input: the gap to the biases alone says so
        for task in ("cls", "reg"):
            attention = getattr(model.head, f"{task}_decomp").layer_attention
            attention[0].weight.mul_(300)
            attention[2].weight.mul_(300)
            attention[2].bias.copy_(torch.linspace(-1, 1, attention[2].bias.numel()))
        grown = layer_attention_parameters(model, _attention_frame(model, pooled)).set_index("task")
    assert (grown["w1_growth"] > 250).all() and grown["b2_spread"].tolist() == pytest.approx([2.0, 2.0])
    assert grown["max_gap_to_bias_only"].min() > 1e-2
    no_attention = build_model(apply_overrides(get_preset("tood_small"), ["model.head_layer_attention=false"]))
    assert layer_attention_parameters(no_attention).empty


def test_the_tal_level_course_follows_a_run_through_its_checkpoints(tmp_path):
    """Two epochs of a tiny TOOD (one ATSS warm-up epoch): one row per checkpoint present, the assigner
    of that epoch, shares of TAL's positives and the pool, each summing to 100 %."""
    from tood_lib.analysis.levels import assignment_audit, tal_level_course
    from tood_lib.data.builtin import build_builtin_dataset
    from tood_lib.data.coco import CocoDetection
    from tood_lib.engine.trainer import Trainer

    root = build_builtin_dataset(tmp_path / "data", num_train=8, num_val=6, scenes="shapes", sizes="multi_level",
                                 progress=False)
    cfg = apply_overrides(get_preset("tood_small"), [
        "data.img_scale=128,128", "model.anchor_scale=2", "train.batch_size=4", "train.epochs=2", "tal.warmup_epochs=1",
        "train.warmup_iters=1", "train.lr_steps=2"])
    Trainer(cfg, root, tmp_path / "run", amp="off", progress=False, evaluate_at_end=False).fit()
    val = CocoDetection(root, "val", cfg.data, train=False, verbose=False)
    course = tal_level_course(tmp_path / "run", val, epochs=(1, 2, 5))
    assert course["epoch"].tolist() == [1, 2] and course["trained_with"].tolist() == ["atss", "tal"]
    shares = course[[f"share_P{k}" for k in range(3, 8)]].sum(axis=1)
    pools = course[[f"pool_P{k}" for k in range(3, 8)]].sum(axis=1)
    assert shares.round(6).eq(100).all() and pools.round(6).eq(100).all()
    geometry = pool_shares(assignment_audit(val, cfg, "atss"))  # the pool depends on the boxes and the anchors only
    assert course.iloc[0][list(geometry)].to_dict() == pytest.approx(geometry)


def _write(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)


def test_the_layer_attention_mechanism_renders_its_numbers(tmp_path):
    assert layer_attention_mechanism(tmp_path) == ("", {})
    _write(tmp_path / "layer_attention_parameters_cpu.csv", [
        dict(dataset="shapes", experiment="tood", seed=0, task=t, w1_growth=g1, w2_growth=g2, b2_spread=b,
             max_gap_to_bias_only=gap)
        for t, g1, g2, b, gap in (("cls", 0.97, 1.7, 0.31, 1.4e-4), ("reg", 0.93, 0.82, 0.11, 4e-6))])
    _write(tmp_path / "layer_attention_summary_cpu.csv", [dict(dataset="shapes", experiment="tood", seed=0,
                                                               level_gap=3e-5, task_gap_max=0.08)])
    _write(tmp_path / "ablation_runs_cpu.csv", [dict(steps=4000)])
    _write(tmp_path / "verdicts_cpu.csv", [dict(dataset="shapes", claim="layer_attention_helps", delta=0.08, se=0.46,
                                                seeds=3, verdict="not distinguishable"),
                                           dict(dataset="shapes", claim="offsets_help", delta=3.0, se=0.6, seeds=3,
                                                verdict="reproduced")])
    text, facts = layer_attention_mechanism(tmp_path)
    assert facts["runs"] == 1 and facts["w1_growth_max"] == 0.97 and facts["steps"] == 4000
    assert "**0.93–0.97×**" in text and "**0.82–1.70×**" in text and "**1.4e-04**" in text and "**4000**" in text
    assert "facts[" not in text and "None" not in text
    assert facts["layer_attention_helps"] == {"shapes": "not distinguishable"}
    assert "shapes: **not distinguishable** (Δ +0.08 ± 0.46 AP, 3 seeds)" in text and "reproduced" not in text


def test_the_tal_level_mechanism_says_where_the_positives_go_from_the_numbers(tmp_path):
    def files(first_tal, last):
        course = [dict(dataset="shapes", experiment="tood", seed=0, epoch=e, trained_with=w, share_P3=s,
                       **{f"pool_P{k}": p for k, p in zip(range(3, 8), (77, 18, 4, 1, 0))})
                  for e, w, s in ((1, "atss", 54), (2, "tal", first_tal), (32, "tal", last))]
        _write(tmp_path / "tal_level_course_cpu.csv", course)
        _write(tmp_path / "levels_bench.csv", [dict(data="COCO (coco_tiny, val), official resize", split="val",
                                                    **{f"pool_P{k}": p for k, p in zip(range(3, 8), (75, 19, 5, 1, 0))})])
        _write(tmp_path / "levels_runs_cpu.csv", [
            dict(dataset="shapes", experiment="tood", seed=s, kind=k, share_P3=v)
            for s in (0, 1) for k, v in (("atss_ground_truth", 43), ("tal_predictions", 85), ("detections", 89))])

    assert tal_level_mechanism(tmp_path) == ("", {})
    files(first_tal=75, last=85)
    text, facts = tal_level_mechanism(tmp_path)
    assert facts["shapes_moves_towards_pool"] and facts["shapes_concentrates_further"] and facts["pool_held"]
    assert facts["coco_pool_P3"] == 75 and facts["shapes_final_P3_mean"] == 85 and facts["shapes_seeds"] == 2
    assert "**75 / 19 / 5 / 1 / 0 %**" in text and "**77 %** P3" in text and "(towards the pool)" in text
    assert "does not pull them below" in text and "level. On the shapes (tood, seed 0)" in text  # a sentence begins
    files(first_tal=40, last=30)  # a TAL that leaves P3: every direction flips
    text, facts = tal_level_mechanism(tmp_path)
    assert not facts["shapes_moves_towards_pool"] and not facts["shapes_concentrates_further"] and not facts["pool_held"]
    assert "(not towards the pool)" in text and "(not more than" in text and "pulls them below" in text
    assert not math.isnan(facts["shapes_atss_P3"])


def test_the_pcc_mechanism_names_the_part_of_the_pool_where_the_pcc_differs(tmp_path):
    from tood_lib.ablations.mechanisms import pcc_mechanism

    def row(experiment, seed, inside, outside, top50, all_inside, iou_out, settled=True):
        return dict(dataset="shapes", experiment=experiment, seed=seed, settled=settled, pcc_top50=top50,
                    pcc_inside=inside, pcc_outside=outside, pcc_all_inside=all_inside, iou_inside=0.5,
                    iou_outside=iou_out, inside_share=0.4)
    rows = [row("atss_parallel", s, 0.50, 0.47, 0.61, 0.43, 0.13) for s in range(3)]
    rows += [row("tal_parallel", s, 0.46 - 0.01 * s, 0.28, 0.54, 0.48, 0.19) for s in range(3)]
    rows += [row("tal_parallel", 3, 0.99, 0.99, 0.99, 0.99, 0.99, settled=False)]  # an unsettled run counts nowhere
    pd.DataFrame(rows).to_csv(tmp_path / "pcc_breakdown_cpu.csv", index=False)
    text, facts = pcc_mechanism(tmp_path)
    assert facts["tal_parallel_shapes_gap_part"] == "outside" and facts["tal_parallel_shapes_seeds"] == 3
    assert facts["tal_parallel_shapes_d_pcc_inside"] == pytest.approx(-0.05)
    assert facts["tal_parallel_shapes_d_pcc_outside"] == pytest.approx(-0.19)
    assert "so the difference sits mostly **outside** the object" in text
    assert "better placed for parallel + TAL (mean IoU **0.190** against **0.130**)" in text  # the word follows the sign
    assert "follow the IoU better (**0.480** against **0.430**)" in text
    assert "TOOD" not in text  # no breakdown of it
    # with verdicts: only the pairs whose PCC claim is not reproduced are explained
    rows += [row("tood", s, 0.44, 0.36, 0.62, 0.50, 0.22) for s in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "pcc_breakdown_cpu.csv", index=False)
    _write(tmp_path / "verdicts_cpu.csv", [
        dict(dataset="shapes", claim="t6_PCC_tal_parallel", delta=-0.07, se=0.002, seeds=3, verdict="reversed"),
        dict(dataset="shapes", claim="t6_PCC_tood", delta=0.01, se=0.01, seeds=3, verdict="not distinguishable")])
    text, facts = pcc_mechanism(tmp_path)
    assert facts["tood_shapes_verdict"] == "not distinguishable" and facts["tal_parallel_shapes_verdict"] == "reversed"
    assert "TOOD on the shapes (PCC claim **not distinguishable**, 3 seeds): PCC **0.620**" in text
    _write(tmp_path / "verdicts_cpu.csv", [
        dict(dataset="shapes", claim="t6_PCC_tal_parallel", delta=0.07, se=0.002, seeds=3, verdict="reproduced"),
        dict(dataset="shapes", claim="t6_PCC_tood", delta=0.05, se=0.01, seeds=3, verdict="reproduced")])
    assert pcc_mechanism(tmp_path) == ("", {})
    assert pcc_mechanism(tmp_path / "nothing") == ("", {})


def test_the_box_count_mechanism_separates_how_many_boxes_from_how_good(tmp_path):
    """Issue 19, item 6: a reversed or tied redundant / error count is explained by the volume of kept
    boxes only where the variant keeps more boxes and its share of bad ones is lower or tied; a worse
    share is reported as such, and reproduced claims and unsettled runs are left out."""
    from tood_lib.ablations.mechanisms import box_count_mechanism

    assert box_count_mechanism(tmp_path) == ("", {})

    def run(experiment, seed, per_image, redundant_share, error_share, settled=True):
        detections = 200 * per_image
        return dict(dataset="shapes", experiment=experiment, seed=seed, settled=settled, detections=detections,
                    detections_per_image=per_image, redundant=round(detections * redundant_share / 100),
                    error=round(detections * error_share / 100), correct=500)
    rows = [run("atss_parallel", s, 44 + s, 1.8, 12.0) for s in range(3)]
    rows += [run("atss_t_head", s, 92 + s, 1.5 + 0.01 * s, 14.0 + 0.2 * s) for s in range(3)]  # more boxes; worse errors
    rows += [run("atss_t_head", 3, 10, 0.0, 0.0, settled=False)]  # counts nowhere
    _write(tmp_path / "ranking_diagnosis_cpu.csv", rows)
    _write(tmp_path / "verdicts_cpu.csv", [
        dict(dataset="shapes", claim="t6_redundant_t_head_atss", delta=124, se=10, seeds=3, verdict="reversed"),
        dict(dataset="shapes", claim="t6_error_t_head_atss", delta=830, se=31, seeds=3, verdict="reversed"),
        dict(dataset="shapes", claim="t6_redundant_tal_parallel", delta=-90, se=7, seeds=3, verdict="reproduced")])
    text, facts = box_count_mechanism(tmp_path)
    boxes, redundant, error = (facts["shapes_atss_t_head_boxes"], facts["shapes_atss_t_head_redundant_share"],
                               facts["shapes_atss_t_head_error_share"])
    assert boxes[0] == pytest.approx(48) and boxes[2] == 3 and boxes[3] == "higher"
    assert redundant[3] == "lower" and error[3] == "higher"
    assert facts["explained"] == ["shapes/t6_redundant_t_head_atss"]  # the error count is worse boxes, not volume
    assert "redundant boxes, T-Head + ATSS on the shapes (count Δ +124 ± 10, **reversed**): it keeps +48.0" in text
    assert "error ones (**higher**)" in text and "In **1 of 2** of these" in text
    assert "parallel + TAL" not in text  # its claim is reproduced


def test_the_schedule_flip_mechanism_reads_both_schedules_of_a_flipped_pair(tmp_path):
    """A pair whose order the schedule check reverses is described under both schedules from the two
    ranking diagnoses; a pair that keeps its order is not."""
    from tood_lib.ablations.mechanisms import schedule_flip_mechanism

    def runs(t_head_gain, tood_gain, settled=False):  # per-run rows of the misaligned set
        return [dict(dataset="misaligned", experiment=e, seed=s, AP=0.14 + gain + 0.001 * s, pre_drop_ok=settled)
                for e, gain in (("atss_parallel", 0.0), ("atss_t_head", t_head_gain), ("tood", tood_gain)) for s in range(3)]

    def diagnosis(t_head_boxes):
        return [dict(dataset="misaligned", experiment=e, seed=s, settled=True, AP=0.14, detections_per_image=boxes,
                     correct=400, error=10 * boxes) for e, boxes in (("atss_parallel", 22), ("atss_t_head", t_head_boxes))
                for s in range(3)]
    (tmp_path / "schedule_x2").mkdir()
    _write(tmp_path / "ablation_runs_cpu.csv", runs(-0.02, 0.5))
    _write(tmp_path / "schedule_x2" / "ablation_runs_cpu.csv", runs(0.04, 0.5))  # T-Head flips, TOOD keeps its order
    assert schedule_flip_mechanism(tmp_path) == ("", {})  # no diagnosis yet
    _write(tmp_path / "ranking_diagnosis_cpu.csv", diagnosis(62))
    _write(tmp_path / "schedule_x2" / "ranking_diagnosis_cpu.csv", diagnosis(36))
    text, facts = schedule_flip_mechanism(tmp_path)
    assert list(facts) == ["misaligned_atss_parallel_atss_t_head"]
    f = facts["misaligned_atss_parallel_atss_t_head"]
    assert f["atss_t_head_1x_detections_per_image"] == 62 and f["atss_t_head_2x_detections_per_image"] == 36
    assert "T-Head + ATSS against parallel + ATSS on the misaligned (Δ AP -2.00 ± 0.00, then +4.00 ± 0.00)" in text
    assert "keeping **62** then **36** boxes per image" in text and "TOOD" not in text
    assert "**0 of 6** had settled before the first LR drop under the grid's schedule, **0 of 6** under twice it" in text
    assert "not a settled one" in text  # neither schedule settled: the text says the question is still open
    _write(tmp_path / "schedule_x2" / "ablation_runs_cpu.csv", runs(0.04, 0.5, settled=True))
    text, facts = schedule_flip_mechanism(tmp_path)
    assert "**6 of 6** under twice it" in text and "the longer runs, all settled, are the better estimate" in text
    _write(tmp_path / "schedule_x2" / "ablation_runs_cpu.csv", runs(-0.02, 0.5))  # no flip: nothing to explain
    assert schedule_flip_mechanism(tmp_path) == ("", {})
