"""The info command: parameter counts and MACs against the paper's Table 1 (spec §5)."""
import json

import pytest

from tood_lib.cli import main


def run_json(capsys, *args):
    assert main(["info", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_r50_info_matches_the_paper(capsys):
    info = run_json(capsys, "--preset", "tood_r50_fpn_1x_coco")
    assert info["params_total"] == 32_200_494
    assert info["params_trainable"] == 31_975_150  # Table 1: 31.98 M
    assert info["params_head"] == 4_823_790  # Table 1: 4.82 M
    assert info["macs_total"] / 1e9 == pytest.approx(201.13, rel=0.02)
    assert info["macs_head"] / 1e9 == pytest.approx(100.79, rel=0.02)
    # the counter sees the folded reduction's bmm: without it the head would be ~16.8 G short
    assert info["macs_head"] / 1e9 > 100.0


def test_parallel_head_info_matches_the_paper(capsys):
    info = run_json(capsys, "--preset", "atss_parallel_r50_fpn_1x_coco")
    assert round(info["params_head"] / 1e6, 2) == 4.92
    assert round(info["params_trainable"] / 1e6, 2) == 32.07
    assert info["macs_head"] / 1e9 == pytest.approx(104.87, rel=0.02)
    assert info["macs_total"] / 1e9 == pytest.approx(205.21, rel=0.02)


def test_presets_listing_and_human_readable_table(capsys):
    assert main(["presets"]) == 0
    names = capsys.readouterr().out.split()
    assert "tood_x101_64x4d_fpn_dconv_c4-c5_mstrain_2x_coco" in names and "tood_small" in names
    assert main(["info", "--preset", "tood_small", "--height", "320", "--width", "320"]) == 0
    out = capsys.readouterr().out
    assert "parameters, head" in out and "MACs at 320x320, total" in out


def test_unknown_preset_is_a_clear_error_not_a_traceback(capsys):
    assert main(["info", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "tood_r50_fpn_1x_coco" in err
