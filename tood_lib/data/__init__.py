"""Data: COCO-format loading with the official transforms, and the built-in synthetic data set."""
