"""Explanations (Grad-CAM, Grad-CAM++, LIME) for X-Net segmentations. Never imports Qt."""
