"""One explanation result as a plain record (numpy only, no torch): it crosses from the model's
process to the viewer's, whose process must never import torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from explain.targets import Target


@dataclass
class SliceExplanation:
    method: str
    z: int
    status: str  # "ok", or why there is no map (e.g. "no lesion predicted on this slice")
    map: np.ndarray | None  # float32 [x, y] on the scan's RAS plane, raw values
    target_kind: str
    target_area: int  # voxels of the frozen target inside the model window
    params: dict
    fit_score: float | None = None  # LIME's local R^2
    seconds: float = 0.0
    source: str = "computed"  # "computed", "memory" or "disk"
    target: Target | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> dict:
        out = {"z": self.z, "method": self.method, "status": self.status, "target": self.target_kind,
               "target_voxels": self.target_area, **self.params, "seconds": round(self.seconds, 3),
               "source": self.source}
        if self.map is not None:
            out.update(map_min=float(self.map.min()), map_max=float(self.map.max()))
        if self.fit_score is not None:
            out["lime_fit_r2"] = round(self.fit_score, 4)
        return out
