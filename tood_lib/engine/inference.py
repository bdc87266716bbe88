"""Running a model over a data set: detections, COCO results and COCO evaluation."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def predict_dataset(model, dataset, device=None, batch_size: int = 4, amp_dtype=None, progress: bool = True):
    """Detections of every image of a (test-mode) CocoDetection -> (list of dicts, list of image ids)."""
    from tood_lib.data.coco import collate

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    detections, image_ids = [], []
    for batch, meta in tqdm(loader, desc="predict", disable=not progress, leave=False, dynamic_ncols=True):
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            dets = model.predict(batch.to(device))
        detections += [{k: (v.float() if v.is_floating_point() else v).cpu() for k, v in d.items()} for d in dets]
        image_ids += [m["image_id"] for m in meta]
    model.train(was_training)
    return detections, image_ids


def evaluate_dataset(model, dataset, out_dir=None, device=None, amp_dtype=None, progress: bool = True,
                     batch_size: int = 4):
    """Predict a split and score it with pycocotools' COCOeval. Writes, when ``out_dir`` is given,
    ``detections_<split>.json`` (COCO results format), ``coco_stats_<split>.csv`` and ``per_class_ap_<split>.csv``."""
    from tood_lib.engine.evaluate import detections_to_coco_results, evaluate_coco, save_results_json

    detections, image_ids = predict_dataset(model, dataset, device, batch_size, amp_dtype, progress)
    results = detections_to_coco_results(detections, image_ids, dataset.cat_ids)
    result = evaluate_coco(dataset.coco, results, image_ids=image_ids)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_results_json(results, out_dir / f"detections_{dataset.split}.json")
        result.stats.to_csv(out_dir / f"coco_stats_{dataset.split}.csv")
        result.per_class.to_csv(out_dir / f"per_class_ap_{dataset.split}.csv", index=False)
    return result
