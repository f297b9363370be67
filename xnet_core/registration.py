"""Native scans onto the template grid and results back: brain extraction, N4, affine registration.

X-Net was trained on T1s already registered to the MNI template (197x233x189, 1 mm), as ATLAS was
prepared (a 12-parameter affine to the template, N3/N4 inside the brain; docs/design.md, References: ATLAS). A scan on
that grid goes straight to the model; any other scan goes through ``register``:

1. brain extraction on the native scan with deepbet (a deep model whose weights ship in its wheel;
   warping the template's mask left skull and scalp inside the brain on real whole-head T1s), dilated
   by 2 mm so that infarcts open to the brain surface are not cut off;
2. N4 bias correction inside that mask (SimpleITK), fitted on a 4x shrunk image, applied at full size;
3. an affine registration of the native brain to the template brain (SimpleITK, Mattes mutual
   information, two resolution levels, moments initialisation);
4. the corrected whole scan resampled onto the template grid: preprocess then applies the template's
   brain mask, exactly as for a scan that arrived on the template grid;
5. the QC (``xnet_core.registration_qc``): does the scan's brain sit on the template's brain? Its
   verdict says what looks wrong; the correlation with the template (``similarity``) is reported
   beside it but judges nothing, since it falls with real contrast, bias and atrophy.

Results (probabilities, masks, heatmaps) go back through ``Registration.to_native``. World coordinates
are RAS mm throughout; SimpleITK's LPS is confined to ``_sitk_image`` and ``_affine_4x4``.
The transform is cached per scan (content hash) in the user cache, with the brain mask.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from xnet_core.assets import TEMPLATE_T1, asset_path, user_cache_dir
from xnet_core.atomic import atomic_path, write_json_atomic
from xnet_core.errors import Cancelled, XNetError
from xnet_core.image import Volume, content_sha256
from xnet_core.registration_qc import RegistrationQC, assess
from xnet_core.sequences import resample_to_grid

log = logging.getLogger(__name__)

METHOD = "deepbet brain extraction + N4 + SimpleITK affine (Mattes MI) to MNI152 2009a"
BRAIN_DILATION_MM = 2.0
N4_SHRINK = 4
CACHE_FORMAT = 1
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)
TRANSFORM_SUFFIXES = (".json", ".tfm", ".txt")

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]


class RegistrationError(XNetError):
    """A native scan cannot be brought onto the template grid."""


@lru_cache(maxsize=1)
def template_image() -> tuple[np.ndarray, np.ndarray]:
    """The skull-stripped template T1 ([x, y, z] float32, read-only) and its RAS affine."""
    image = nib.as_closest_canonical(nib.load(asset_path(TEMPLATE_T1)))
    data = np.asarray(image.dataobj, dtype=np.float32)
    data.setflags(write=False)
    return data, image.affine.copy()


@dataclass
class Registration:
    """How a native scan sits on the template: the transform, its quality and the model's input."""

    template_to_native: np.ndarray  # 4x4, RAS world mm of the template -> RAS world mm of the scan
    native_shape: tuple[int, int, int]
    native_affine: np.ndarray
    brain_mask: np.ndarray  # uint8 [x, y, z] on the native grid (deepbet, dilated)
    similarity: float
    seconds: float
    timings_s: dict[str, float] = field(default_factory=dict)
    template_volume: Volume | None = None  # the bias-corrected scan on the template grid
    from_cache: bool = False
    qc: RegistrationQC | None = None  # None only for a Registration built by hand, not by ``register``

    @property
    def warning(self) -> str | None:
        """What looks wrong with the registration, in words; None when the QC passed (or was not run)."""
        return self.qc.warning if self.qc is not None else None

    def summary(self) -> dict:
        """The ``registration`` entry of every JSON summary."""
        return {"applied": True, "method": METHOD, "similarity": round(self.similarity, 4),
                "seconds": round(self.seconds, 2), "warning": self.warning, "from_cache": self.from_cache,
                "qc": self.qc.summary() if self.qc is not None else None,
                "template_to_native_ras": np.round(self.template_to_native, 6).tolist()}

    def check(self, native: np.ndarray) -> RegistrationQC:
        """Run the QC (about 0.5 s) from the scan as stored on its own grid; sets and returns ``qc``."""
        self.qc = assess(self.template_to_native, self.native_affine, native, self.brain_mask)
        return self.qc

    # -- voxel maps ----------------------------------------------------------------------------
    def template_to_native_voxels(self) -> np.ndarray:
        """4x4: template voxel index -> native (RAS-canonical) voxel index."""
        _, template_affine = template_image()
        return np.linalg.solve(self.native_affine, self.template_to_native @ template_affine)

    def to_template(self, native: np.ndarray, order: int = 1) -> np.ndarray:
        """A native-grid array on the template grid (order 0 for labels, 1 for images)."""
        from xnet_core.preprocess import TEMPLATE_SHAPE

        _, template_affine = template_image()
        # The scan's voxels seen in template world coordinates: the registration undone.
        native_in_template = np.linalg.solve(self.template_to_native, self.native_affine)
        return resample_to_grid(native, native_in_template, TEMPLATE_SHAPE, template_affine, order)

    def to_native(self, template: np.ndarray, order: int = 1) -> np.ndarray:
        """A template-grid array (probabilities, maps) on the scan's own grid."""
        _, template_affine = template_image()
        return resample_to_grid(template, self.template_to_native @ template_affine, self.native_shape,
                                self.native_affine, order)

    def native_plane(self, template_stack: np.ndarray, z0: int, native_z: int) -> np.ndarray:
        """Native slice ``native_z`` of a template-grid sub-stack holding template slices ``z0...``."""
        from scipy import ndimage

        nx, ny = self.native_shape[:2]
        i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        points = np.stack([i.ravel(), j.ravel(), np.full(i.size, native_z), np.ones(i.size)])
        coords = (np.linalg.inv(self.template_to_native_voxels()) @ points)[:3]
        coords[2] -= z0
        plane = ndimage.map_coordinates(template_stack, coords, order=1, mode="constant", cval=0.0)
        return plane.reshape(nx, ny).astype(np.float32)

    def template_slices_for(self, native_slices: list[int]) -> list[int]:
        """Template axial slices that native slices intersect (inside the brain), for interpolation."""
        from xnet_core.preprocess import TEMPLATE_SHAPE

        native_to_template = np.linalg.inv(self.template_to_native_voxels())
        needed: set[int] = set()
        for z in native_slices:
            xs, ys = np.nonzero(self.brain_mask[:, :, z])
            if xs.size == 0:
                continue
            corners = np.array([[x, y, z, 1.0] for x in (xs.min(), xs.max()) for y in (ys.min(), ys.max())]).T
            tz = (native_to_template @ corners)[2]
            lo, hi = int(np.floor(tz.min())), int(np.ceil(tz.max()))
            needed.update(range(max(lo, 0), min(hi, TEMPLATE_SHAPE[2] - 1) + 1))
        return sorted(needed)

    # -- saving --------------------------------------------------------------------------------
    def save_transform(self, path: str | Path, scan_name: str = "") -> Path:
        """``.json`` (RAS 4x4 matrices, ours) or ``.tfm``/``.txt`` (ITK: LPS, fixed = template)."""
        path = check_transform_path(path)
        if path.name.lower().endswith(".json"):
            write_json_atomic(path, {
                "scan": scan_name, "template": Path(TEMPLATE_T1).name, **self.summary(),
                "native_to_template_ras": np.round(np.linalg.inv(self.template_to_native), 6).tolist(),
                "convention": "RAS world mm; template_to_native maps a template point to the scan's point"})
            return path
        import SimpleITK as sitk

        lps = LPS @ self.template_to_native @ LPS
        transform = sitk.AffineTransform(lps[:3, :3].ravel().tolist(), lps[:3, 3].tolist())
        try:
            with atomic_path(path, path.suffix.lower()) as tmp:  # ITK picks its writer by the lower-case suffix
                sitk.WriteTransform(transform, str(tmp))
        except (RuntimeError, OSError) as error:
            raise XNetError(f"{path}: the transform could not be written ({_first_line(error)}); choose "
                            "another place.") from None
        return path


def check_transform_path(path: str | Path) -> Path:
    """The file types ``save_transform`` writes (checked before a registration, not after it)."""
    path = Path(path)
    if not path.name.lower().endswith(TRANSFORM_SUFFIXES):
        raise XNetError(f"{path}: a transform is saved as a .json file (RAS matrices) or .tfm (ITK, for "
                        "ANTs/Slicer/ITK-SNAP); choose one of these.", parameter="transform")
    return path


# -- the pipeline ----------------------------------------------------------------------------------
def register(volume: Volume, device: str = "cpu", use_cache: bool = True,
             on_progress: ProgressCallback | None = None,
             should_cancel: CancelCallback | None = None) -> Registration:
    """Bring a native scan onto the template grid; see the module docstring for the steps.

    Progress is reported in four steps (brain extraction, N4, registration, resampling).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    step = _Steps(on_progress, should_cancel, volume.name)
    key = scan_key(volume)
    cached = _load_cached(key, volume) if use_cache else None
    if cached is None:
        brain = extract_brain(volume, device)
        timings["brain_extraction"] = step.done("brain extraction", started)
    else:
        brain = cached["brain_mask"]
        timings["brain_extraction"] = step.done("brain extraction (cached)", started)
    t0 = time.perf_counter()
    corrected = bias_corrected(volume, brain, should_cancel)
    timings["n4"] = step.done("N4", t0)
    t0 = time.perf_counter()
    if cached is None:
        template_to_native = affine_to_template(volume, corrected, brain, should_cancel)
    else:
        template_to_native = cached["template_to_native"]
    timings["registration"] = step.done("registration", t0)
    t0 = time.perf_counter()
    registration = Registration(template_to_native, volume.shape, volume.affine.copy(), brain, 0.0, 0.0,
                                timings, from_cache=cached is not None)
    on_template = registration.to_template(corrected, order=1)
    registration.similarity = similarity(on_template)
    registration.template_volume = _template_volume(volume, on_template)
    registration.check(volume.data)
    timings["resample"] = step.done("resampling", t0)
    registration.seconds = time.perf_counter() - started
    if registration.warning:
        log.warning("%s: %s", volume.name, registration.warning)
    if use_cache and cached is None:
        _store_cached(key, registration)
    return registration


def cached_registration(volume: Volume) -> Registration | None:
    """A scan's cached registration with its QC, without N4 or resampling (no ``template_volume``), or
    None when it has no cache entry: the QC of many registered scans in seconds."""
    cached = _load_cached(scan_key(volume), volume)
    if cached is None:
        return None
    registration = Registration(cached["template_to_native"], volume.shape, volume.affine.copy(),
                                cached["brain_mask"], cached["similarity"], 0.0, from_cache=True)
    registration.check(volume.data)
    return registration


class _Steps:
    """Progress and cancellation between the four steps (each step itself runs to its end)."""

    def __init__(self, on_progress, should_cancel, name: str) -> None:
        self.on_progress, self.should_cancel, self.name, self.count = on_progress, should_cancel, name, 0

    def done(self, what: str, since: float) -> float:
        self.count += 1
        seconds = round(time.perf_counter() - since, 3)
        log.info("%s: %s took %.1f s", self.name, what, seconds)
        if self.on_progress is not None:
            self.on_progress(self.count, 4)
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled(f"registration of {self.name} cancelled after {what}.")
        return seconds


def extract_brain(volume: Volume, device: str = "cpu") -> np.ndarray:
    """deepbet's brain mask on the native grid (uint8), dilated by ``BRAIN_DILATION_MM`` (in mm, so
    thick slices are not dilated by the in-plane voxel count)."""
    import torch
    from scipy import ndimage

    data = np.ascontiguousarray(volume.data, dtype=np.float32)
    target = torch.device("cpu" if device == "auto" else device)
    try:
        mask = _deepbet_mask(data, target)
    except (torch.OutOfMemoryError, NotImplementedError, RuntimeError) as error:
        if target.type == "cpu":
            raise RegistrationError(f"{volume.name}: brain extraction failed ({_first_line(error)}); "
                                    "check that this is a head MRI.") from None
        log.warning("brain extraction on %s failed (%s); retrying on the CPU.", target, _first_line(error))
        mask = _deepbet_mask(data, torch.device("cpu"))
    if mask is None or not mask.any():
        raise RegistrationError(f"{volume.name}: brain extraction found no brain; is this a head MRI? Open a "
                                "T1-weighted scan of the head.")
    return ndimage.binary_dilation(mask, structure=_ball(volume.voxel_sizes, BRAIN_DILATION_MM)).astype(np.uint8)


def _ball(voxel_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """A structuring element reaching ``radius_mm`` in every direction on an anisotropic grid."""
    reach = [int(radius_mm // size) for size in voxel_mm]
    offsets = np.indices([2 * r + 1 for r in reach]).T - np.array(reach)
    return (((offsets * np.array(voxel_mm)) ** 2).sum(axis=-1) <= radius_mm ** 2).T


def _deepbet_mask(data: np.ndarray, device) -> np.ndarray | None:
    """deepbet's two models (bounding box, then mask) on a RAS array; None when it finds no head."""
    import warnings

    with warnings.catch_warnings():  # torch.jit.load's deprecation notice, about deepbet's own files
        warnings.simplefilter("ignore", FutureWarning)
        from deepbet import BrainExtraction

        extractor = BrainExtraction(no_gpu=True)
    extractor.model.to(device)
    extractor.bbox_model.to(device)
    try:
        probability = extractor.run_model(data.copy())
        return extractor.postprocess(probability > 0.5)
    except (AssertionError, ValueError):  # deepbet asserts on an empty bounding box
        return None


def bias_corrected(volume: Volume, brain: np.ndarray, should_cancel: CancelCallback | None = None) -> np.ndarray:
    """N4 inside the brain mask, fitted at 1/4 resolution; the field is applied to the whole scan."""
    import SimpleITK as sitk

    data = np.clip(volume.data, 0, None).astype(np.float32)  # N4 works on positive intensities
    image = _sitk_image(data, volume.affine)
    mask = _sitk_image(brain.astype(np.uint8), volume.affine)
    shrink = [N4_SHRINK if n >= 4 * N4_SHRINK else 1 for n in volume.shape]
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([50, 50, 30])
    if should_cancel is not None:  # a stop asked for during N4 ends it at the next iteration
        n4.AddCommand(sitk.sitkIterationEvent, lambda: should_cancel() and n4.Abort())
    try:
        n4.Execute(sitk.Shrink(image, shrink), sitk.Shrink(mask, shrink))
    except RuntimeError as error:
        log.warning("%s: N4 bias correction failed (%s); continuing without it.", volume.name, error)
        return data
    finally:
        n4.RemoveAllCommands()  # the command and the filter hold each other: kept, they kept the caller's scan
    log_field = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)).transpose(2, 1, 0)
    return (data / np.exp(log_field)).astype(np.float32)


def affine_to_template(volume: Volume, corrected: np.ndarray, brain: np.ndarray,
                       should_cancel: CancelCallback | None = None) -> np.ndarray:
    """The 12-parameter affine (RAS, template -> native) from the native brain to the template brain."""
    import SimpleITK as sitk

    template, template_affine = template_image()
    fixed = _sitk_image(np.asarray(template), template_affine)
    fixed_mask = _sitk_image((template > 0).astype(np.uint8), template_affine)
    moving = _sitk_image(np.where(brain > 0, corrected, 0).astype(np.float32), volume.affine)
    transform = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                  sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed=1)  # a fixed seed: the same scan, the same transform
    method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=300,
                                                    relaxationFactor=0.7)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2])  # a third, full-resolution level cost 2x and was not more accurate
    method.SetSmoothingSigmasPerLevel([2.0, 1.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    if should_cancel is not None:
        method.AddCommand(sitk.sitkIterationEvent, lambda: should_cancel() and method.StopRegistration())
    try:
        method.Execute(fixed, moving)
    except RuntimeError as error:
        raise RegistrationError(f"{volume.name}: registration to the template failed ({_first_line(error)}); "
                                "check that the scan is a whole-brain T1 or register it yourself.") from None
    finally:
        method.RemoveAllCommands()  # as in bias_corrected: the command held the viewer's worker and its study
    return LPS @ _affine_4x4(transform) @ LPS


def similarity(on_template: np.ndarray) -> float:
    """Normalised cross-correlation with the template T1 inside the template's brain mask (reported only:
    well-registered real scans score 0.27-0.55 on it)."""
    template, _ = template_image()
    inside = template > 0
    a = on_template[inside].astype(np.float64)
    b = template[inside].astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def _template_volume(volume: Volume, on_template: np.ndarray) -> Volume:
    _, template_affine = template_image()
    header = nib.Nifti1Header()
    header.set_data_shape(on_template.shape)
    header.set_zooms((1.0, 1.0, 1.0))
    return replace(volume, data=on_template, affine=template_affine.copy(), source_header=header,
                   source_affine=template_affine.copy(), source_shape=on_template.shape,
                   name=f"{volume.name} (on the template)", warnings=[])


def _sitk_image(data: np.ndarray, affine_ras: np.ndarray):
    """A SimpleITK image of an [x, y, z] array with a RAS affine (ITK works in LPS)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    lps = LPS @ affine_ras
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    return image


def _affine_4x4(transform) -> np.ndarray:
    """SimpleITK's AffineTransform (x -> M (x - c) + t + c) as a 4x4 matrix (LPS)."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    centre = np.array(transform.GetCenter())
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = np.array(transform.GetTranslation()) + centre - matrix @ centre
    return out


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# -- cache -----------------------------------------------------------------------------------------
def scan_key(volume: Volume) -> str:
    """The scan's content hash, tied to this method, so that a changed recipe does not reuse old entries."""
    return hashlib.sha256(f"{content_sha256(volume)} {METHOD} {CACHE_FORMAT}".encode()).hexdigest()


def _cache_paths(key: str) -> tuple[Path, Path]:
    folder = user_cache_dir("registration")
    return folder / f"{key[:32]}.json", folder / f"{key[:32]}.npz"


def _load_cached(key: str, volume: Volume) -> dict | None:
    meta_path, mask_path = _cache_paths(key)
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            return None
        with np.load(mask_path) as stored:
            bits = stored["brain_mask"]
        size = int(np.prod(volume.shape))
        brain = np.unpackbits(bits, count=size).reshape(volume.shape)
        matrix = np.array(meta["template_to_native"], dtype=np.float64)
        similarity = float(meta.get("similarity", np.nan))
    except Exception:  # noqa: BLE001 - no entry, or a damaged one (truncated zip, bad JSON): register again
        return None
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
        return None  # valid JSON holding no usable transform is a damaged entry too
    return {"template_to_native": matrix, "brain_mask": brain, "similarity": similarity}


def _store_cached(key: str, registration: Registration) -> None:
    meta_path, mask_path = _cache_paths(key)
    try:
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(mask_path, ".npz") as tmp:
            np.savez_compressed(tmp, brain_mask=np.packbits(registration.brain_mask.ravel() > 0))
        write_json_atomic(meta_path, {"key": key, "template_to_native": registration.template_to_native.tolist(),
                                      "similarity": registration.similarity, "method": METHOD})
    except OSError as error:
        log.warning("could not cache the registration (%s); it will be computed again next time.", error)
