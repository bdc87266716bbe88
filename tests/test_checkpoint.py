"""Our own checkpoints round-trip exactly and are written atomically."""
import pytest
import torch

from tood_lib.batch import make_batch
from tood_lib.engine.checkpoint import atomic_torch_save, load_checkpoint, save_checkpoint
from tood_lib.model.detector import build_model


def test_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = build_model("tood_small")
    with torch.no_grad():  # move every parameter away from its init so nothing matches by accident
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_checkpoint(tmp_path / "a.pth", model, epoch=3)
    torch.manual_seed(1)
    other = build_model("tood_small")
    ckpt = load_checkpoint(tmp_path / "a.pth", other)
    assert ckpt["epoch"] == 3 and ckpt["config"]["name"] == "tood_small"
    for (k, a), (k2, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    batch = make_batch([torch.randn(3, 64, 64)])
    model.eval(), other.eval()
    assert all(torch.equal(x, y) for x, y in zip(model(batch.images).scores, other(batch.images).scores))


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"v": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"v": Unpicklable()}, path)
    assert torch.load(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temporary left behind


def test_wrong_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable tood_lib checkpoint"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save({"state_dict": {}}, tmp_path / "mmdet.pth")
    with pytest.raises(ValueError, match="load_official_checkpoint"):
        load_checkpoint(tmp_path / "mmdet.pth")
    save_checkpoint(tmp_path / "small.pth", build_model("tood_small"))
    cfg_r50 = build_model("atss_parallel_r50_fpn_1x_coco")
    with pytest.raises(ValueError, match="does not fit this model"):
        load_checkpoint(tmp_path / "small.pth", cfg_r50)
