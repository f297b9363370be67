"""``xnet report``: the viewer's PDF report without a display (offscreen Qt)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from app.cli._common import (ProgressBar, add_common, add_min_lesion, add_scan, announce_lime, check_output,
                             load_model, parse_methods, placed_scan, provenance, write_json)
from xnet_core import DISCLAIMER

HELP = "PDF report: summary page and the four panels of each slice"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scan(parser)
    parser.add_argument("--pdf", required=True, metavar="OUT.pdf", help="the report to write")
    parser.add_argument("--reader", metavar="MASK", help="the reader's lesion mask: outlines and agreement")
    parser.add_argument("--notes", metavar="NOTES.json", help="the reader's notes (the viewer's sidecar)")
    parser.add_argument("--identify", action="store_true",
                        help="print patient identifiers (from DICOM headers only; never by default)")
    parser.add_argument("--dicom-pdf", metavar="OUT.dcm",
                        help="DICOM input: also write the PDF as a DICOM Encapsulated PDF in the source study")
    parser.add_argument("--dicom-sc", metavar="DIR",
                        help="DICOM input: also write each slice page as a DICOM Secondary Capture into DIR")
    parser.add_argument("--lesion", metavar="K[,K...]", default="",
                        help="add a page per finding K (1 = the largest) whose maps explain that lesion alone")
    add_min_lesion(parser)
    add_common(parser, slices_default="lesion", methods=True)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed, even on a desktop
    from PySide6.QtGui import QGuiApplication

    from app.reader import Notes, load_notes
    from app.report import ReportInputs, finding_numbers, model_summary, report_precision, write_report
    from app.study import Study, grey_window
    from xnet_core.native import segment
    from xnet_core.reader_mask import load_reader_mask
    from xnet_core.slices import LESION, parse_slices

    from app.cli._dicom_out import check_report_args, write_report_objects

    from xnet_core.metrics import split_findings

    methods = parse_methods(args)
    numbers = finding_numbers(args.lesion)
    split_findings([], args.min_lesion_ml)  # a bad --min-lesion-ml fails before the model runs
    check_report_args(args)
    for out in filter(None, (args.pdf, args.json)):
        check_output(out, [args.input, args.reader or "", args.notes or "", args.weights or ""])
    started = time.perf_counter()
    checkpoint, engine = load_model(args, explain=True)
    scan = placed_scan(args, str(engine.device))
    volume = scan.volume
    reader = load_reader_mask(args.reader, volume) if args.reader else None
    notes = load_notes(args.notes) if args.notes else Notes()
    if args.identify and not volume.identifiers:
        print("xnet report: --identify: this scan carries no patient identifiers (NIfTI files have none); "
              "none are printed.", file=sys.stderr)
    chosen = parse_slices(args.slices, volume.shape[2])
    segmentation, on_template = segment(engine.segmenter, scan,
                                        on_progress=ProgressBar(f"segmenting {volume.name}"))
    study = Study(volume, scan.display_input(checkpoint.normalisation), threshold=args.threshold)
    for z in segmentation.computed_slices:
        study.set_probabilities(z, segmentation.probabilities[:, :, z])
    slices = [int(z) for z in segmentation.lesion_slices] if chosen == LESION else chosen
    if not slices:
        print(f"{volume.name}: no lesion predicted on any slice; the report has its summary page only "
              "(use --slices to choose slices).")
    context = engine.context(scan.model_volume, on_template)
    _explain(engine, scan, context, study, slices, methods, segmentation)
    findings = [_finding_page(engine, scan, context, study, segmentation, methods, k) for k in numbers]
    application = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # fonts and painting need one
    inputs = ReportInputs(
        study=study, slices=slices, methods=methods, levels=grey_window(volume.data),
        model=model_summary(checkpoint), device=str(engine.device), precision=report_precision(engine),
        reader_mask=reader.mask if reader else None, reader_name=os.path.basename(args.reader or ""), notes=notes,
        registration=scan.registration_summary(),
        identifiers=volume.identifiers if args.identify else None, min_lesion_ml=args.min_lesion_ml,
        findings=findings)
    path = write_report(inputs, args.pdf, on_progress=ProgressBar("writing the report", unit="pages"))
    dicom_objects = write_report_objects(args, volume, inputs, path) if args.dicom_pdf or args.dicom_sc else []
    application.processEvents()
    if args.json:
        write_json(args.json, {"pdf": str(path), "pages": 1 + len(slices) + len(findings), "slices": slices,
                               "findings_explained": numbers, "methods": methods, "min_lesion_ml": args.min_lesion_ml,
                               "registration": scan.registration_summary(), "warnings": scan.warnings(),
                               "wall_s": round(time.perf_counter() - started, 2), **provenance(checkpoint)})
    print(f"{volume.name}: report of {1 + len(slices) + len(findings)} page(s) written to {path}"
          f"{f' (and {len(dicom_objects)} DICOM object(s))' if dicom_objects else ''}. {DISCLAIMER}")
    return 0


def _explain(engine, scan, context, study, slices: list[int], methods, segmentation) -> None:
    """The maps the report's pages need, into the study: Grad-CAM methods first, then LIME (timed first)."""
    from app.report import maps_needed
    from explain.engine import ExplainParams
    from explain.native import explain_slices

    needed = maps_needed(study, slices, methods)
    if "lime" in methods:
        announce_lime(engine, scan, context, slices, ExplainParams().lime_samples,
                      hint="; --methods gradcam,gradcampp,hirescam leaves LIME out")
    for group in ([m for m in methods if m != "lime"], [m for m in methods if m == "lime"]):
        if group:
            for result in explain_slices(engine, scan, context, needed[group[0]], group, ExplainParams(),
                                         on_progress=ProgressBar(f"explaining {scan.volume.name}", unit="model passes"),
                                         native_mask=segmentation.mask):
                study.add_explanation(result)


def _finding_page(engine, scan, context, study, segmentation, methods, number: int):
    """Lesion ``number`` explained alone on the slice of its largest cross-section."""
    from app.report import FindingPage
    from explain.engine import ExplainParams
    from explain.native import explain_slices, lesion_target
    from xnet_core.metrics import largest_cross_section

    target, own, _ = lesion_target(scan, segmentation.mask, number)
    z = largest_cross_section(own)
    results = explain_slices(engine, scan, context, [z], methods, ExplainParams(), native_mask=own, target=target,
                             on_progress=ProgressBar(f"explaining finding {number}", unit="model passes"))
    return FindingPage.from_results(number, study.lesion_rows()[number - 1], z, own[:, :, z], results)
