"""ATLAS readers (R1.1, R1.2, R2.0), found by a recursive search, and the paper's splits.

Layouts (docs/design.md, References: ATLAS):
- R1.1: ``<id>/t01/<id>_t1w_deface_stx.nii.gz`` + ``<id>_LesionSmooth*_stx.nii.gz`` (several files = several
  lesions, ORed), ordered as ``ATLAS_Meta-Data_Release_1.1_standard_mni.csv`` when it is there;
- R1.2: ``c00XXs00YYtZZ_t1w_stx.nii.gz`` + ``c00XXs00YYtZZ_LesionSmooth*_stx.nii.gz``;
- R2.0: ``sub-*_ses-*_space-MNI152NLin2009aSym_T1w.nii.gz`` + ``..._label-L_desc-T1lesion_mask.nii.gz``.
Any folder at or above a release root works; cohort folder names are not assumed.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from xnet_core.errors import DatasetError
from xnet_core.image import Volume

log = logging.getLogger(__name__)

R20_T1_SUFFIX = "_space-MNI152NLin2009aSym_T1w.nii.gz"
R20_MASK_SUFFIX = "_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"
R11_CSV = "ATLAS_Meta-Data_Release_1.1_standard_mni.csv"


@dataclass(frozen=True)
class Scan:
    """One T1 scan with its lesion mask files (several for multi-lesion R1.x scans)."""

    scan_id: str
    patient_id: str
    t1: Path
    masks: tuple[Path, ...]
    release: str


def _r20(root: Path) -> list[Scan]:
    scans = []
    for t1 in root.rglob(f"*{R20_T1_SUFFIX}"):
        stem = t1.name[: -len(R20_T1_SUFFIX)]
        mask = t1.with_name(stem + R20_MASK_SUFFIX)
        subject = stem.split("_")[0]
        scans.append(Scan(stem, subject, t1, (mask,) if mask.is_file() else (), "R2.0"))
    return scans


def _r1(root: Path, pattern: str, release: str, patient: re.Pattern[str]) -> list[Scan]:
    scans = []
    for t1 in root.rglob(pattern):
        scan_id = t1.name.split("_")[0]
        masks = tuple(sorted(t1.parent.glob(f"{scan_id}_LesionSmooth*_stx.nii.gz")))
        match = patient.match(scan_id)
        scans.append(Scan(scan_id, match.group(1) if match else scan_id, t1, masks, release))
    return scans


def _r11_order(root: Path, scans: list[Scan]) -> list[Scan]:
    """R1.1 in the metadata CSV's row order (what the paper's folds are made of), else by path."""
    tables = list(root.rglob(R11_CSV))
    if not tables:
        return sorted(scans, key=lambda s: str(s.t1))
    with open(tables[0], newline="") as handle:
        order = [f"{int(row['INDI Subject ID']):06d}" for row in csv.DictReader(handle)
                 if row.get("INDI Subject ID", "").strip().isdigit()]
    rank = {subject: i for i, subject in enumerate(order)}
    return sorted(scans, key=lambda s: (rank.get(s.scan_id, len(rank)), str(s.t1)))


def find_scans(data: str | Path, require_mask: bool = True) -> list[Scan]:
    """Every ATLAS scan at or below ``data``; scans without a mask are skipped with a warning."""
    root = Path(data)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; give the folder that holds your ATLAS copy.", parameter="data")
    scans = _r20(root)
    scans += _r11_order(root, _r1(root, "*_t1w_deface_stx.nii.gz", "R1.1", re.compile(r"(\d+)")))
    r12 = _r1(root, "*_t1w_stx.nii.gz", "R1.2", re.compile(r"(c\d+s\d+)t\d+"))
    scans += sorted(r12, key=lambda s: str(s.t1))
    if not scans:
        raise DatasetError(
            f"{root}: no ATLAS scan found (looked for R2.0 '*{R20_T1_SUFFIX}', R1.1 '*_t1w_deface_stx.nii.gz' "
            "and R1.2 '*_t1w_stx.nii.gz'); point --data at your ATLAS folder."
        )
    if require_mask:
        missing = [s for s in scans if not s.masks]
        for scan in missing[:5]:
            log.warning("%s: no lesion mask next to it; skipped.", scan.t1)
        if len(missing) > 5:
            log.warning("... and %d more scans without a mask skipped.", len(missing) - 5)
        scans = [s for s in scans if s.masks]
        if not scans:
            raise DatasetError(f"{root}: scans found but none has a lesion mask (R2.0 Testing has none).")
    return scans


def load_lesion_mask(scan: Scan, volume: Volume) -> np.ndarray:
    """The OR of a scan's mask files (> 0), in the RAS order of ``volume``; refuses another grid."""
    union = None
    for path in scan.masks:
        image = nib.load(path)
        if image.shape[:3] != volume.source_shape or not np.allclose(image.affine, volume.source_affine, atol=1e-3):
            raise DatasetError(
                f"{path}: mask grid {image.shape[:3]} does not match its scan {scan.t1.name} "
                f"{volume.source_shape}; both must be on the same grid."
            )
        data = np.asarray(image.dataobj) > 0
        union = data if union is None else union | data
    if union is None:
        raise DatasetError(f"{scan.t1}: has no lesion mask.")
    return volume.to_ras(union.reshape(volume.source_shape)).astype(np.uint8)


def kfold_blocks(n: int, n_folds: int = 5) -> list[range]:
    """``sklearn.model_selection.KFold(n_folds, shuffle=False)``: contiguous blocks, larger ones first."""
    sizes = [n // n_folds + (1 if i < n % n_folds else 0) for i in range(n_folds)]
    starts = np.cumsum([0] + sizes)
    return [range(int(starts[i]), int(starts[i + 1])) for i in range(n_folds)]


def split(scans: list[Scan], fold: int, method: str = "paper", n_folds: int = 5) -> tuple[list[Scan], list[Scan]]:
    """(train, validation). ``paper``: 5-fold over scan rows, no shuffle, as the official code.
    ``patient``: the same folds over patients, so that scans of one patient never straddle them."""
    if not 0 <= fold < n_folds:
        raise DatasetError(f"the validation fold {fold} must be 0..{n_folds - 1}.", parameter="fold")
    if method == "paper":
        held = set(kfold_blocks(len(scans), n_folds)[fold])
        return [s for i, s in enumerate(scans) if i not in held], [s for i, s in enumerate(scans) if i in held]
    if method != "patient":
        raise DatasetError(f"the split {method!r} is unknown; expected paper or patient.", parameter="split")
    patients = list(dict.fromkeys(s.patient_id for s in scans))
    held_patients = {patients[i] for i in kfold_blocks(len(patients), n_folds)[fold]}
    return ([s for s in scans if s.patient_id not in held_patients], [s for s in scans if s.patient_id in held_patients])
