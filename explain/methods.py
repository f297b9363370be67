"""The explanation methods' names, importable without torch (the viewer shows its window first)."""

METHODS = ("gradcam", "gradcampp", "lime")
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "lime": "LIME"}
