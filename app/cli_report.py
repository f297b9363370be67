"""``xnet report``: the viewer's PDF report without a display (offscreen Qt)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from xnet_core import DISCLAIMER, __version__


def run(args: argparse.Namespace, progress_bar, write_json, check_output) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed, even on a desktop
    from PySide6.QtGui import QGuiApplication

    from app.cli_explain import FEW_LIME_SLICES, seconds_per_sample
    from app.reader import Notes, load_notes
    from app.report import ReportInputs, maps_needed, model_summary, report_precision, write_report
    from app.study import Study, grey_window
    from explain.engine import ExplainParams, ExplanationEngine
    from explain.methods import check_methods
    from xnet_core.assets import demo_weights_path
    from xnet_core.checkpoint import load_checkpoint
    from xnet_core.reader_mask import load_reader_mask
    from xnet_core.slices import LESION, parse_slices
    from app.cli import placed_scan
    from explain.native import explain_slices
    from xnet_core.native import segment

    methods = check_methods(m.strip() for m in args.methods.split(",") if m.strip())
    check_output(args.pdf, [args.input, args.reader or "", args.notes or "", args.weights or ""])
    if args.json:
        check_output(args.json, [args.input, args.reader or "", args.notes or "", args.weights or ""])
    started = time.perf_counter()
    checkpoint = load_checkpoint(args.weights or demo_weights_path())
    engine = ExplanationEngine(checkpoint, device=args.device, fp32=args.fp32, threshold=args.threshold,
                               use_cache=not args.no_cache, mirror=args.mirror)
    scan = placed_scan(args, str(engine.device))
    volume = scan.volume
    reader = load_reader_mask(args.reader, volume) if args.reader else None
    notes = load_notes(args.notes) if args.notes else Notes()
    if args.identify and not volume.identifiers:
        print("xnet report: --identify: this scan carries no patient identifiers (NIfTI files have none); "
              "none are printed.", file=sys.stderr)
    chosen = parse_slices(args.slices, volume.shape[2])
    segmentation, on_template = segment(engine.segmenter, scan,
                                        on_progress=progress_bar(f"segmenting {volume.name}"))
    context = engine.context(scan.model_volume, on_template)
    study = Study(volume, scan.display_input(checkpoint.normalisation), threshold=args.threshold)
    for z in segmentation.computed_slices:
        study.set_probabilities(z, segmentation.probabilities[:, :, z])
    slices = [int(z) for z in segmentation.lesion_slices] if chosen == LESION else chosen
    if not slices:
        print(f"{volume.name}: no lesion predicted on any slice; the report has its summary page only "
              "(use --slices to choose slices).")
    needed = maps_needed(study, slices, methods)
    if "lime" in methods and len(slices) > FEW_LIME_SLICES:
        model_slices = len(scan.template_slices(slices))  # a registered scan's slice crosses several
        minutes = seconds_per_sample(engine, context) * ExplainParams().lime_samples * model_slices / 60
        print(f"LIME on {len(slices)} slices: about {minutes:.0f} min on {engine.device.type} (maps already in "
              "the cache are not recomputed; --methods gradcam,gradcampp leaves LIME out).", flush=True)
    for group in ([m for m in methods if m != "lime"], [m for m in methods if m == "lime"]):
        if group:
            for result in explain_slices(engine, scan, context, needed[group[0]], group, ExplainParams(),
                                         on_progress=progress_bar(f"explaining {volume.name}", unit="model passes"),
                                         native_mask=segmentation.mask):
                study.add_explanation(result)
    application = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # fonts and painting need one
    inputs = ReportInputs(
        study=study, slices=slices, methods=methods, levels=grey_window(volume.data),
        model=model_summary(checkpoint), device=str(engine.device), precision=report_precision(engine),
        reader_mask=reader.mask if reader else None, reader_name=os.path.basename(args.reader or ""), notes=notes,
        registration=scan.registration_summary(),
        identifiers=volume.identifiers if args.identify else None)
    path = write_report(inputs, args.pdf, on_progress=progress_bar("writing the report", unit="pages"))
    application.processEvents()
    if args.json:
        write_json(args.json, {"pdf": str(path), "pages": 1 + len(slices), "slices": slices, "methods": methods,
                               "registration": scan.registration_summary(), "warnings": scan.warnings(),
                               "wall_s": round(time.perf_counter() - started, 2), "disclaimer": DISCLAIMER,
                               **checkpoint.provenance(), "version": __version__})
    print(f"{volume.name}: report of {1 + len(slices)} page(s) written to {path}. {DISCLAIMER}")
    return 0

