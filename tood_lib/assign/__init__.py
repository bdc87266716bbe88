"""Label assignment: which priors are positives for which ground-truth box, and their soft targets.

``task_aligned_assign`` is TOOD's Task Alignment Learning assigner (used from epoch 4 on);
``atss_assign`` is the ATSS warm-up assigner of the first epochs; ``max_iou_assign`` is RetinaNet's
IoU-threshold assigner and ``fcos_assign`` FCOS's centre sampling (Table 2 baselines),
``fovea_assign`` FoveaBox's (Table 1). Each works on a whole padded batch
and return an :class:`Assignment`. ``reference`` holds per-image transcriptions of the original code.
"""
from tood_lib.assign.assignment import Assignment
from tood_lib.assign.atss import atss_assign
from tood_lib.assign.fcos import fcos_assign
from tood_lib.assign.fovea import fovea_assign
from tood_lib.assign.max_iou import max_iou_assign
from tood_lib.assign.tal import task_aligned_assign

__all__ = ["Assignment", "task_aligned_assign", "atss_assign", "max_iou_assign", "fcos_assign", "fovea_assign"]
