"""The main command's recipe on the multi-level shapes, against the bar for moving it there (issue 19):
the committed measurement exists and the sentence notebook 00 renders follows it."""
import json

from tood_lib.quickstart import REPO_ROOT, main_job_on_bench_verdict


def _record(ap, resumed=False):
    return dict(overrides=["data.img_scale=160,160", "model.anchor_scale=2.5", "train.epochs=10", "train.lr_steps=9"],
                precision="fp32", threads=2, minutes=8.7, resumed=resumed, AP=ap, AP50=0.6, AP75=0.5, APs=0.2,
                APm=0.4, APl=0.5, note="")


def test_the_verdict_follows_the_measurement(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(dict(bar=dict(minutes=10.0, box_ap=0.45), runs={"160px_10ep": _record(0.44)})))
    text = main_job_on_bench_verdict(path)
    assert "box AP **0.440**" in text and "in 8.7 min (fp32, 2 threads)" in text and text.count("No recipe reaches") == 1
    path.write_text(json.dumps(dict(bar=dict(minutes=10.0, box_ap=0.45), runs={"160px_10ep": _record(0.46, resumed=True)})))
    text = main_job_on_bench_verdict(path)
    assert "A recipe reaches the bar" in text and " min (" not in text  # a resumed run's time is not quoted
    assert "Not measured yet" in main_job_on_bench_verdict(tmp_path / "missing.json")


def test_the_committed_measurement_is_below_the_bar():
    table = json.loads((REPO_ROOT / "results" / "main_job_on_bench.json").read_text())
    assert table["bar"] == dict(minutes=10.0, box_ap=0.45)
    assert table["runs"] and all(r["AP"] < table["bar"]["box_ap"] for r in table["runs"].values())
    assert all(r["precision"] == "fp32" and r["data"] == "data/bench_shapes" for r in table["runs"].values())
