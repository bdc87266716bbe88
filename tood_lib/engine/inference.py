"""Running a model over a data set: detections, COCO results and COCO evaluation."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from tood_lib.engine.atomic import atomic_write_text


def check_categories(model, dataset) -> None:
    """Refuse (ValueError) to score a model on a data set with other categories than it was trained on.

    A model's label k is the k-th category of its training data. On a data set with another number
    of categories, or other ids or names, label k means something else and the AP would be computed
    on the wrong thing. Our checkpoints record their categories (``model.categories``); for others
    (official files) only the count can be compared.
    """
    model = getattr(model, "module", model)
    num_classes = model.cfg.model.num_classes
    ours = getattr(model, "categories", None)
    theirs = [{"id": c, "name": n} for c, n in zip(dataset.cat_ids, dataset.class_names)]

    def names(cats):
        shown = ", ".join(c["name"] for c in cats[:5])
        return shown + (", ..." if len(cats) > 5 else "")

    where = f"the data set at {dataset.root} ({dataset.annotation_file.name})"
    if num_classes != len(theirs):
        trained = f" ({names(ours)})" if ours else ""
        raise ValueError(f"the model has {num_classes} classes{trained} but {where} has {len(theirs)} "
                         f"({names(theirs)}): it was trained on other data, so its labels cannot be scored "
                         "against these categories. Evaluate it on its own data, or train/fine-tune with "
                         f"--set model.num_classes={len(theirs)}")
    if ours is not None:
        ours_pairs = [(c["id"], c["name"]) for c in ours]
        theirs_pairs = [(c["id"], c["name"]) for c in theirs]
        if ours_pairs != theirs_pairs:
            diff = [(k, a, b) for k, (a, b) in enumerate(zip(ours_pairs, theirs_pairs)) if a != b]
            k, a, b = diff[0]
            raise ValueError(f"the model's categories differ from those of {where}: {len(diff)} of {num_classes} "
                             f"labels differ, e.g. label {k} is (id {a[0]}, {a[1]!r}) in the model and "
                             f"(id {b[0]}, {b[1]!r}) in the data; its AP here would be computed on the wrong classes")


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
    ``detections_<split>.json`` (COCO results format), ``coco_stats_<split>.csv`` and ``per_class_ap_<split>.csv``.

    Refuses a data set with other categories than the model's (``check_categories``). The images
    the data check left out (missing, unreadable, wrong size) are not scored, and a line says so."""
    from tood_lib.engine.evaluate import detections_to_coco_results, evaluate_coco, save_results_json

    check_categories(model, dataset)
    left_out = dataset.report.num_images - len(dataset)
    if left_out and progress:
        print(f"[eval] scoring {len(dataset)} of the {dataset.report.num_images} images of {dataset.annotation_file}; "
              f"{left_out} left out by the data check (see its table)", flush=True)
    detections, image_ids = predict_dataset(model, dataset, device, batch_size, amp_dtype, progress)
    if len(set(image_ids)) != len(image_ids) or set(image_ids) != set(dataset.image_ids):
        raise RuntimeError(f"internal error: predictions for {len(image_ids)} images ({len(set(image_ids))} distinct) "
                           f"do not match the {len(dataset)} images of {dataset.annotation_file}; refusing to score them")
    results = detections_to_coco_results(detections, image_ids, dataset.cat_ids)
    result = evaluate_coco(dataset.coco, results, image_ids=image_ids)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_results_json(results, out_dir / f"detections_{dataset.split}.json")
        atomic_write_text(out_dir / f"coco_stats_{dataset.split}.csv", result.stats.to_csv())
        atomic_write_text(out_dir / f"per_class_ap_{dataset.split}.csv", result.per_class.to_csv(index=False))
    return result
