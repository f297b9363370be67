"""Model and attention against the reader's mask, as the viewer's comparison panel and ``xnet compare``
show them (no Qt). Mask-vs-mask figures come from ``xnet_core.metrics``, map-vs-mask figures from
``explain.agreement``; this module only arranges them, for one volume or one axial slice."""

from __future__ import annotations

import numpy as np

from explain import agreement
from xnet_core import metrics
from xnet_core.image import Volume


def lesion_record(lesion: metrics.Lesion, affine: np.ndarray) -> dict:
    """A lesion as the JSON and the viewer list it: volume, centroid in world mm, slices, slice to show."""
    centre = affine @ [*lesion.centroid, 1.0]
    return {"volume_ml": lesion.volume_ml, "centroid_mm": [round(float(v), 1) for v in centre[:3]],
            "slices": list(lesion.z_range), "z": int(round(lesion.centroid[2]))}


def rounded(value, digits: int = 4):
    """Floats of a JSON-bound structure rounded (figures are kept exact until they are written)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def lesion_slices(model_mask: np.ndarray, reader_mask: np.ndarray) -> list[int]:
    """Axial slices where the model or the reader marks a lesion (``--slices lesion`` of compare)."""
    marked = (model_mask > 0).any(axis=(0, 1)) | (reader_mask > 0).any(axis=(0, 1))
    return [int(z) for z in np.flatnonzero(marked)]


def attention_record(figures: agreement.Agreement) -> dict:
    """The contract's names: energy_in_mask, pointing_hit, otsu_iou (None where undefined)."""
    return {"energy_in_mask": figures.energy_inside, "pointing_hit": figures.pointing_hit,
            "otsu_iou": figures.otsu_iou}


def volume_comparison(volume: Volume, model_mask: np.ndarray, reader_mask: np.ndarray,
                      maps: dict[str, np.ndarray], explained: dict[str, list[int]]) -> dict:
    """Whole-volume figures in the order of ``xnet compare``'s JSON: Dice ... lesion F1, both volumes,
    the lesions only one side found, attention per method over its explained slices."""
    voxel_ml = volume.voxel_volume_ml
    whole = metrics.compare_masks(model_mask, reader_mask, voxel_ml)
    return {
        **whole.as_dict(),
        "model_only_lesions": [lesion_record(lesion, volume.affine)
                               for lesion in metrics.unmatched_lesions(model_mask, reader_mask, voxel_ml)],
        "reader_only_lesions": [lesion_record(lesion, volume.affine)
                                for lesion in metrics.unmatched_lesions(reader_mask, model_mask, voxel_ml)],
        "attention": {m: attention_record(agreement.per_volume(maps[m], reader_mask, explained[m]))
                      for m in maps if explained[m]},
    }


def slice_comparison(volume: Volume, z: int, model: np.ndarray, reader: np.ndarray,
                     maps: dict[str, np.ndarray], status: dict[str, str | None]) -> dict:
    """Axial slice ``z`` from its sections ``[x, y]``: the mask figures (no lesion F1: components are
    3D) and, per method, the attention figures when its map is computed, else its status."""
    record = {"z": int(z), **metrics.compare_masks(model, reader, volume.voxel_volume_ml).as_dict(), "attention": {}}
    for method, values in maps.items():
        state = status.get(method)
        record["attention"][method] = (attention_record(agreement.agreement(values, reader))
                                       if state == "ok" else {"status": state or "not computed"})
    return record
