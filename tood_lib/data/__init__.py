"""Data: transforms, the built-in synthetic scenes (and, later, COCO)."""
