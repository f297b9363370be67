"""The explanation methods' names, importable without torch (the viewer shows its window first)."""

from __future__ import annotations

from typing import Iterable

from xnet_core.errors import XNetError

METHODS = ("gradcam", "gradcampp", "hirescam", "lime")
CAM_METHODS = ("gradcam", "gradcampp", "hirescam")  # all three from one forward and backward pass
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "hirescam": "HiResCAM", "lime": "LIME"}


def check_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """The distinct methods asked for, in order; unknown or none is an error for the user."""
    methods = tuple(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        problem = f"unknown explanation method {', '.join(unknown)}" if unknown else "no explanation method given"
        raise XNetError(f"{problem}; choose from {','.join(METHODS)}.", parameter="methods")
    return methods
