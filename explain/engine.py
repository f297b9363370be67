"""One entry point for every explanation, with a cache in memory and on disk.

The viewer, ``xnet explain`` and ``xnet report`` all call ``ExplanationEngine.explain``. A map is
stored under a key made of everything it depends on: the scan's content (SHA-256 of its voxels and
affine), the checkpoint's SHA-256, the slice, the method, the target (kind and a digest of the
frozen target mask, so a changed threshold or ROI is a different key), the method's parameters and,
for LIME, the precision the model ran at. The disk cache lives in the user's cache folder
(``~/.cache/xnet-viewer/explain``), one compressed ``.npz`` per map written atomically, and evicts
the least recently used maps beyond its size cap; a second process (the report after the viewer)
therefore never computes the same map twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from explain import cam as cam_module
from explain import lime_seg
from explain.faithfulness import CASCADE, deletion_insertion, random_map, randomisation_test
from explain.methods import CAM_METHODS, METHODS, check_methods
from explain.targets import Target, TargetSpec, resolve
from xnet_core import __version__
from xnet_core.assets import user_cache_dir
from xnet_core.atomic import atomic_path
from xnet_core.checkpoint import Checkpoint
from xnet_core.errors import Cancelled, XNetError
from xnet_core.image import Volume, content_sha256
from xnet_core.inference import Segmentation, Segmenter
from xnet_core.preprocess import ModelInput, prepare

log = logging.getLogger(__name__)

CAM_BATCH = {"cpu": 1, "cuda": 16, "mps": 4}  # a backward pass holds activations: smaller than inference
DEFAULT_DISK_CAP_BYTES = 1024**3
CACHE_FORMAT = 2  # bump when a method's arithmetic changes, so old maps are not served


@dataclass(frozen=True)
class ExplainParams:
    """Method parameters; every map carries the ones that produced it."""

    layer: str = cam_module.DEFAULT_LAYER
    lime_samples: int = lime_seg.DEFAULT_SAMPLES
    lime_kernel: float = lime_seg.KERNEL_SIZE
    seed: int = 0

    def for_method(self, method: str) -> dict:
        if method == "lime":
            return {"num_samples": self.lime_samples, "kernel_size": self.lime_kernel, "seed": self.seed,
                    "hide_color": 0, "superpixels": "quickshift cut to the brain"}
        return {"layer": self.layer}


@dataclass
class ScanContext:
    """A scan prepared once for explanation: model input, segmentation and content hash."""

    volume: Volume
    model_input: ModelInput
    segmentation: Segmentation
    scan_sha256: str


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


class DiskCache:
    """Compressed maps in a folder, written atomically, least recently used evicted beyond ``cap``."""

    def __init__(self, folder: Path, cap_bytes: int = DEFAULT_DISK_CAP_BYTES) -> None:
        self.folder, self.cap_bytes = Path(folder), cap_bytes

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def get(self, key: str) -> tuple[np.ndarray, dict] | None:
        path = self._path(key)
        try:
            with np.load(path) as stored:
                value = stored["map"], json.loads(str(stored["meta"]))
        except FileNotFoundError:
            return None
        except Exception as error:  # a damaged entry is a miss, never an error for the user
            log.warning("ignoring damaged cache entry %s (%s)", path, error)
            return None
        with suppress(OSError):  # recently used; a read-only cache, or an entry just evicted, still serves it
            os.utime(path)
        return value

    def put(self, key: str, array: np.ndarray, meta: dict) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.savez_compressed(buffer, map=array, meta=np.array(json.dumps(meta)))
            with atomic_path(self._path(key)) as tmp:
                tmp.write_bytes(buffer.getvalue())
            self._evict()
        except OSError as error:  # a full or read-only disk costs speed, not results
            log.warning("explanation cache not written (%s)", error)

    def _evict(self) -> None:
        entries = []
        for path in self.folder.glob("*.npz"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.cap_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size


class ExplanationEngine:
    """Grad-CAM, Grad-CAM++, HiResCAM and LIME for the axial slices of a scan, cached."""

    def __init__(self, checkpoint: Checkpoint, device: str = "auto", fp32: bool = False, threshold: float = 0.5,
                 use_cache: bool = True, cache_dir: str | os.PathLike | None = None,
                 memory_items: int = 512, disk_cap_bytes: int = DEFAULT_DISK_CAP_BYTES,
                 segmenter: Segmenter | None = None, mirror: bool = True) -> None:
        """``mirror``: the segmentation's test-time mirroring (``xnet_core.inference``). The maps
        explain the network itself: Grad-CAM, LIME and the faithfulness curves use its single pass."""
        self.checkpoint = checkpoint
        model = checkpoint.build_model().eval()
        self.segmenter = segmenter or Segmenter(model, device=device, fp32=fp32, threshold=threshold,
                                                normalisation=checkpoint.normalisation, mirror=mirror)
        self.device = self.segmenter.device
        self._model = model
        self._cam_model = cam_module.explanation_copy(model, self.device)
        self._cams: dict[str, cam_module.CamExplainer] = {}
        self.use_cache = use_cache
        self.disk = DiskCache(Path(cache_dir) if cache_dir else user_cache_dir("explain"), disk_cap_bytes)
        self._memory: OrderedDict[str, tuple[np.ndarray, dict]] = OrderedDict()
        self._memory_items = memory_items
        self._random_curves: dict[tuple, tuple] = {}
        self._lock = threading.RLock()  # one computation at a time; caches shared across threads

    # -- scans ---------------------------------------------------------------------------------
    def context(self, volume: Volume, segmentation: Segmentation | None = None,
                model_input: ModelInput | None = None) -> ScanContext:
        """Prepare a scan once; pass the viewer's segmentation to explain exactly what it shows."""
        model_input = model_input or prepare(volume, self.checkpoint.normalisation)
        if segmentation is None:
            segmentation = self.segmenter.segment(volume, prepared=model_input)
        return ScanContext(volume, model_input, segmentation, content_sha256(volume))

    # -- explanations --------------------------------------------------------------------------
    def explain(
        self,
        context: ScanContext,
        slices: Iterable[int],
        methods: Iterable[str] = METHODS,
        params: ExplainParams = ExplainParams(),
        target: TargetSpec = TargetSpec(),
        on_result: Callable[[SliceExplanation], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[SliceExplanation]:
        """Maps for ``slices`` x ``methods``, the cached ones first. Progress counts model passes:
        one per CAM slice (Grad-CAM, Grad-CAM++ and HiResCAM share it), ``lime_samples`` per LIME slice."""
        methods = check_methods(methods)
        slices = list(dict.fromkeys(int(z) for z in slices))
        n_z = context.model_input.n_slices
        if any(not 0 <= z < n_z for z in slices):
            raise XNetError(f"slices must lie in 0..{n_z - 1} for {context.volume.name}.")
        # The predicted mask is frozen here: later threshold changes do not move the target.
        targets = {z: resolve(target, context.model_input.geometry, context.segmentation.mask[:, :, z].copy(), z)
                   for z in slices}
        results: list[SliceExplanation] = []
        pending: dict[str, list[int]] = {m: [] for m in methods}
        for z in slices:
            for method in methods:
                found = self._lookup(context, z, method, params, targets[z], target.kind)
                if found is None:
                    pending[method].append(z)
                else:
                    results.append(found)
                    if on_result:
                        on_result(found)
        cam_methods = tuple(m for m in methods if m in CAM_METHODS)
        cam_slices = sorted(set(z for m in cam_methods for z in pending[m]), key=slices.index)
        lime_slices = pending.get("lime", [])
        progress = _Progress(len(cam_slices) + len(lime_slices) * params.lime_samples, on_progress)

        def emit(explanation: SliceExplanation) -> None:
            self._store(context, explanation, params)
            results.append(explanation)
            if on_result:
                on_result(explanation)

        batch = CAM_BATCH.get(self.device.type, 1)
        for start in range(0, len(cam_slices), batch):
            _check_cancel(should_cancel, "explanation")
            for explanation in self._cam_batch(context, cam_slices[start:start + batch], cam_methods,
                                               params, targets):
                if explanation.z in pending[explanation.method]:
                    emit(explanation)
            progress.advance(len(cam_slices[start:start + batch]))
        for z in lime_slices:
            emit(self._lime(context, z, params, targets[z], progress, should_cancel))
        return results

    def _cam_batch(self, context: ScanContext, zs: list[int], methods: tuple[str, ...], params: ExplainParams,
                   targets: dict[int, Target]) -> list[SliceExplanation]:
        """Slices that reach here have a target: ``_lookup`` answers the others at once."""
        started = time.perf_counter()
        with self._lock:
            explainer = self._cam_for(params.layer)
            maps = explainer(context.model_input.slices[zs], [targets[z] for z in zs], methods)
        seconds = (time.perf_counter() - started) / len(zs)
        geometry = context.model_input.geometry
        return [SliceExplanation(method, z, "ok", geometry.from_model(maps.maps[method][i]), targets[z].kind,
                                 targets[z].area, params.for_method(method), seconds=seconds, target=targets[z])
                for i, z in enumerate(zs) for method in methods]

    def _lime(self, context: ScanContext, z: int, params: ExplainParams, target: Target,
              progress: "_Progress", should_cancel) -> SliceExplanation:
        started = time.perf_counter()
        base = progress.done
        with self._lock:
            result = lime_seg.explain_slice(
                context.model_input.slices[z], self._model_brain(context, z), target, self.network_predict,
                num_samples=params.lime_samples, kernel_size=params.lime_kernel, seed=params.seed,
                on_progress=lambda done, _total: progress.set(base + done), should_cancel=should_cancel)
        lime_params = {**params.for_method("lime"), "n_segments": result.n_segments,
                       "precision": self.segmenter.precision, "split_half": round(result.split_half, 4),
                       "n_significant": result.n_significant}
        return SliceExplanation("lime", z, "ok", context.model_input.geometry.from_model(result.weights),
                                target.kind, target.area, lime_params, fit_score=result.score,
                                seconds=time.perf_counter() - started, target=target)

    def network_predict(self, slices: np.ndarray) -> np.ndarray:
        """The network's single pass (no test-time mirroring): what the maps explain."""
        return self.segmenter.predict(slices, mirror=False)

    @staticmethod
    def _model_brain(context: ScanContext, z: int) -> np.ndarray:
        return context.model_input.geometry.to_model(context.model_input.brain_mask[:, :, z]) > 0

    def _cam_for(self, layer: str) -> cam_module.CamExplainer:
        if layer not in self._cams:
            self._cams[layer] = cam_module.CamExplainer(self._cam_model, self.device, layer, prepared=True)
        return self._cams[layer]

    @staticmethod
    def _no_map(method: str, z: int, reason: str, kind: str, params: ExplainParams) -> SliceExplanation:
        return SliceExplanation(method, z, reason, None, kind, 0, params.for_method(method))

    # -- cache ---------------------------------------------------------------------------------
    def _key(self, context: ScanContext, z: int, method: str, params: ExplainParams, target: Target) -> str:
        parts = {"format": CACHE_FORMAT, "scan": context.scan_sha256, "checkpoint": self.checkpoint.sha256,
                 "normalisation": self.checkpoint.normalisation, "z": z, "method": method,
                 "target": target.key, "params": params.for_method(method)}
        if method == "lime":  # a perturbation method sees the model's arithmetic
            parts["precision"] = self.segmenter.precision
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _lookup(self, context: ScanContext, z: int, method: str, params: ExplainParams,
                target: Target | str, kind: str) -> SliceExplanation | None:
        if not isinstance(target, Target):
            return self._no_map(method, z, target, kind, params)
        if not self.use_cache:
            return None
        key = self._key(context, z, method, params, target)
        with self._lock:
            hit, source = self._memory.get(key), "memory"
            if hit is not None:
                self._memory.move_to_end(key)
        if hit is None:
            hit, source = self.disk.get(key), "disk"
            if hit is not None:
                self._remember(key, hit)
        if hit is None:
            return None
        array, meta = hit
        return SliceExplanation(method, z, "ok", array, target.kind, target.area, meta["params"],
                                fit_score=meta.get("fit_score"), seconds=0.0, source=source, target=target)

    def _store(self, context: ScanContext, explanation: SliceExplanation, params: ExplainParams) -> None:
        if not self.use_cache or not explanation.ok:
            return
        key = self._key(context, explanation.z, explanation.method, params, explanation.target)
        meta = {"params": explanation.params, "fit_score": explanation.fit_score, "version": __version__,
                "checkpoint_sha256": self.checkpoint.sha256}
        value = (explanation.map.astype(np.float32), meta)
        self._remember(key, value)
        self.disk.put(key, *value)

    def _remember(self, key: str, value: tuple[np.ndarray, dict]) -> None:
        with self._lock:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)

    # -- faithfulness --------------------------------------------------------------------------
    def faithfulness(self, context: ScanContext, explanation: SliceExplanation, steps: int = 20,
                     seed: int = 0) -> dict:
        """Deletion / insertion AUCs of a map and of a random map on the same slice and target."""
        if not explanation.ok:
            return {"status": explanation.status}
        z, geometry = explanation.z, context.model_input.geometry
        image, brain = context.model_input.slices[z], self._model_brain(context, z)
        saliency = geometry.to_model(explanation.map)
        baseline_key = (context.scan_sha256, z, explanation.target.key, steps, seed)
        with self._lock:
            deletion, insertion = deletion_insertion(image, brain, saliency, explanation.target,
                                                     self.network_predict, steps)
            if baseline_key not in self._random_curves:  # one random baseline per slice and target
                self._random_curves[baseline_key] = deletion_insertion(
                    image, brain, random_map(image.shape, seed + z), explanation.target, self.network_predict, steps)
            random_deletion, random_insertion = self._random_curves[baseline_key]
        return {"deletion_auc": deletion.auc, "insertion_auc": insertion.auc,
                "random_deletion_auc": random_deletion.auc, "random_insertion_auc": random_insertion.auc,
                "deletion": deletion.as_dict(), "insertion": insertion.as_dict()}

    def randomisation(self, context: ScanContext, z: int, params: ExplainParams = ExplainParams(),
                      target: TargetSpec = TargetSpec(), stages: tuple[str, ...] = CASCADE) -> list[dict]:
        """Adebayo et al.'s cascading randomisation for the CAM methods on slice ``z``."""
        frozen = resolve(target, context.model_input.geometry, context.segmentation.mask[:, :, z].copy(), z)
        if not isinstance(frozen, Target):
            return []
        image = context.model_input.slices[z:z + 1]

        def cam_maps(model) -> dict[str, np.ndarray]:
            explainer = cam_module.CamExplainer(model, self.device, params.layer)
            return {m: v[0] for m, v in explainer(image, [frozen]).maps.items()}

        with self._lock:
            steps = randomisation_test(self._model, cam_maps, self._model_brain(context, z), stages, params.seed)
        return [step.as_dict() for step in steps]


class _Progress:
    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total, self.done, self.callback = total, 0, callback

    def set(self, done: int) -> None:
        self.done = done
        if self.callback is not None and self.total:
            self.callback(min(done, self.total), self.total)

    def advance(self, amount: int) -> None:
        self.set(self.done + amount)



def _check_cancel(should_cancel: Callable[[], bool] | None, what: str) -> None:
    if should_cancel is not None and should_cancel():
        raise Cancelled(f"{what} cancelled.")
