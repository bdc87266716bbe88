"""tood_lib: TOOD (Task-aligned One-stage Object Detection, Feng et al., ICCV 2021) in plain PyTorch.

Read it in the order the data flows: ``model/backbone.py`` → ``model/fpn.py`` → ``model/t_head.py``
→ ``assign/tal.py`` → ``losses.py`` (training) or → ``postprocess.py`` (inference).
"""
__version__ = "0.1.0"
