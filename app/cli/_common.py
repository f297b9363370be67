"""What the ``xnet`` commands share: the common options (docs/design.md, Contracts), the progress bar,
the output checks, loading the model and the scan from the arguments, ``--methods``, provenance,
the LIME time estimate, and the flag names the CLI puts before a library error.

Light at import (argparse and the standard library only): every heavy module is imported inside the
function that needs it, so ``xnet segment`` never loads Qt and ``xnet --help`` never loads torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from xnet_core import DEVICES, DISCLAIMER, __version__

EXIT_BAD_INPUT = 2
ALL_METHODS = "gradcam,gradcampp,hirescam,lime"
CAM_METHODS = "gradcam,gradcampp,hirescam"  # one forward and backward pass serves all three
FEW_LIME_SLICES = 3  # beyond this, say how long LIME will take before starting

# A library error names the argument at fault in ``XNetError.parameter``; the CLI names its flag.
FLAGS = {
    "weights": "--weights", "device": "--device", "threshold": "--threshold", "slices": "--slices",
    "methods": "--methods", "series": "--series", "volume": "--volume", "transform": "--save-transform",
    "layer": "--layer", "data": "--data", "fold": "--fold", "split": "--split",
    "lesion": "--lesion", "min_lesion_ml": "--min-lesion-ml",
}


def error_line(exc: Exception, args: argparse.Namespace) -> str:
    """The library's message, after the flag of the argument it is about when this command has one."""
    flag = FLAGS.get(getattr(exc, "parameter", None) or "")
    if flag is None or not hasattr(args, flag[2:].replace("-", "_")):
        return str(exc)
    return f"{flag}: {exc}"


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICES)


def add_common(parser: argparse.ArgumentParser, slices: bool = True, slices_default: str = "all",
               methods: bool = False, methods_default: str = ALL_METHODS, json_required: bool = False) -> None:
    """The options docs/design.md's Contracts give the same spelling and meaning everywhere."""
    parser.add_argument("--weights", metavar="CKPT", help="X-Net checkpoint (default: the shipped demo weights)")
    add_device(parser)
    parser.add_argument("--fp32", action="store_true", help="full precision instead of bf16/fp16")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold of the mask")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false",
                        help="score each slice once instead of averaging it with its left-right mirror image "
                             "(twice as fast; the demo model's figures are with mirroring)")
    if slices:
        parser.add_argument("--slices", default=slices_default, metavar="lesion|all|A:B|z,z,...",
                            help=f"0-based axial slices of the RAS volume; A:B is inclusive (default {slices_default})")
    if methods:
        parser.add_argument("--methods", default=methods_default, metavar="gradcam,gradcampp,hirescam,lime",
                            help=f"explanation methods (default {methods_default})")
    parser.add_argument("--json", metavar="OUT", required=json_required, help="write a JSON summary here")


def add_min_lesion(parser: argparse.ArgumentParser) -> None:
    """``--min-lesion-ml X``: what the lesion table and the report list as findings (docs/design.md)."""
    from xnet_core import DEFAULT_MIN_LESION_ML

    parser.add_argument("--min-lesion-ml", type=float, default=DEFAULT_MIN_LESION_ML, metavar="X",
                        help="list components of at least X ml as findings, the rest in one line "
                             f"(default {DEFAULT_MIN_LESION_ML}; masks and metrics keep every component)")


def add_scan(parser: argparse.ArgumentParser) -> None:
    """INPUT and the options of commands that read one scan (registered when off the template grid)."""
    parser.add_argument("input", metavar="INPUT", help="NIfTI scan (.nii/.nii.gz) or a folder of DICOM files")
    parser.add_argument("--series", metavar="UID|NUMBER", help="the DICOM series, when a folder holds several")
    parser.add_argument("--volume", type=int, default=None, metavar="K",
                        help="volume of a 4D file or series (default: the first)")
    parser.add_argument("--save-transform", metavar="OUT.json|OUT.tfm",
                        help="save the scan-to-template registration (JSON: RAS matrices; .tfm: ITK)")
    parser.add_argument("--no-cache", action="store_true",
                        help="neither read nor write the registration and explanation caches")


class ProgressBar:
    """``on_progress(done, total)`` drawn on stderr: redrawn in place on a terminal, else one line."""

    def __init__(self, label: str, unit: str = "slices", stream=None) -> None:
        stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced since import
        self.label, self.unit, self.stream, self.started = label, unit, stream, time.perf_counter()
        self.interactive = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.interactive and done < total:
            return
        width = 30
        filled = width * done // max(total, 1)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (total - done) if done else 0.0
        line = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {self.unit}, ETA {eta:4.0f} s"
        self.stream.write(("\r" if self.interactive else "") + line + ("\n" if done >= total else ""))
        self.stream.flush()


def check_output(path: str | Path, inputs: list[str]) -> None:
    """An output goes into an existing folder and never over an input."""
    from xnet_core.errors import XNetError

    out = Path(path)
    if not out.parent.is_dir():
        raise XNetError(f"{out}: the folder {out.parent} does not exist; create it or choose another output.")
    if any(out.resolve() == Path(p).resolve() for p in inputs):
        raise XNetError(f"{out}: is an input file; input files are never overwritten, choose another name.")


def write_json(path: str | Path, payload: dict) -> Path:
    from xnet_core.atomic import write_json_atomic

    return write_json_atomic(path, payload)


def provenance(checkpoint) -> dict:
    """The keys every JSON output carries (docs/design.md: outputs carry provenance)."""
    return {"disclaimer": DISCLAIMER, **checkpoint.provenance(), "version": __version__}


def load_model(args: argparse.Namespace, explain: bool = False):
    """``(checkpoint, segmenter)`` from ``--weights`` (default: the demo weights), ``--device``, ``--fp32``,
    ``--threshold`` and ``--no-mirror``; with ``explain``, an ``ExplanationEngine`` (honouring
    ``--no-cache``) instead of the segmenter. Its ``.segmenter`` is then the segmenter."""
    from xnet_core.assets import demo_weights_path
    from xnet_core.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(args.weights or demo_weights_path())
    options = {"device": args.device, "fp32": args.fp32, "threshold": args.threshold, "mirror": args.mirror}
    if explain:
        from explain.engine import ExplanationEngine

        return checkpoint, ExplanationEngine(checkpoint, use_cache=not args.no_cache, **options)
    from xnet_core.inference import Segmenter

    return checkpoint, Segmenter(checkpoint.build_model(), normalisation=checkpoint.normalisation, **options)


def parse_methods(args: argparse.Namespace) -> tuple[str, ...]:
    """``--methods gradcam,gradcampp,hirescam,lime``: the distinct methods asked for, in order."""
    from explain.methods import check_methods

    return check_methods(m.strip() for m in args.methods.split(",") if m.strip())


def placed_scan(args: argparse.Namespace, device: str):
    """Load INPUT (file or DICOM folder) and register it when it is off the template grid; honours
    ``--series``, ``--volume``, ``--save-transform`` and ``--no-cache``. Shared by the scan commands."""
    from xnet_core.errors import XNetError
    from xnet_core.native import place
    from xnet_core.volume import load_volume

    if args.save_transform:
        from xnet_core.registration import check_transform_path

        check_output(args.save_transform, [args.input])
        check_transform_path(args.save_transform)
    volume = load_volume(args.input, args.volume, series=args.series)
    scan = place(volume, device=device, use_cache=not args.no_cache,
                 on_progress=ProgressBar(f"registering {volume.name} to the template", unit="steps"))
    if args.save_transform:
        if scan.registration is None:
            why = scan.not_registered or "it is already on the template grid"
            raise XNetError(f"--save-transform: {volume.name} was not registered ({why}); there is no "
                            "transform to save.")
        scan.registration.save_transform(args.save_transform, volume.name)
    return scan


def announce_lime(engine, scan, context, slices: list[int], samples: int, hint: str = "") -> None:
    """Before LIME on more than a few slices, say about how long it will take (timed on this machine)."""
    if len(slices) <= FEW_LIME_SLICES:
        return
    model_slices = len(scan.template_slices(slices))  # a registered scan's slice crosses several
    minutes = seconds_per_sample(engine, context) * samples * model_slices / 60
    print(f"LIME on {len(slices)} slices x {samples} samples: about {minutes:.0f} min on {engine.device.type} "
          f"(maps already in the cache are not recomputed{hint}).", flush=True)


def seconds_per_sample(engine, context) -> float:
    """Time a few forward passes on a real slice (the first pays for start-up, so it is not counted)."""
    import numpy as np

    z = int(np.argmax(context.segmentation.slice_area_mm2))
    batch = np.repeat(context.model_input.slices[z:z + 1], 4, axis=0)
    engine.network_predict(batch[:1])
    started = time.perf_counter()
    engine.network_predict(batch)
    return (time.perf_counter() - started) / len(batch)
