"""``xnet segment``: the lesion mask (and optionally the probability map) as NIfTI on the input's grid."""

from __future__ import annotations

import argparse
import sys
import time

from app.cli._common import (ProgressBar, add_common, add_min_lesion, add_scan, check_output, load_model,
                             placed_scan, provenance, write_json)
from xnet_core import DISCLAIMER

HELP = "segment a scan slice by slice"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scan(parser)
    parser.add_argument("-o", "--output", metavar="MASK.nii.gz", help="lesion mask to write (this, --seg or both)")
    parser.add_argument("--prob", metavar="PROB.nii.gz", help="also write the probability map")
    parser.add_argument("--seg", metavar="OUT.dcm", help="DICOM input: also write the mask as a DICOM SEG that "
                                                        "references the source series (docs/pacs.md)")
    parser.add_argument("--reader", metavar="MASK", help="with --seg: the reader's mask, as the SEG's second segment")
    add_min_lesion(parser)
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from xnet_core.metrics import split_findings
    from xnet_core.native import segment
    from xnet_core.slices import LESION, parse_slices
    from xnet_core.volume import save_like

    from app.cli._dicom_out import check_seg_args, write_seg_from_args

    check_seg_args(args)
    split_findings([], args.min_lesion_ml)  # a bad --min-lesion-ml fails before the model runs
    for out in filter(None, (args.output, args.prob, args.json, args.seg)):
        check_output(out, [args.input, args.weights or "", args.reader or ""])
    started = time.perf_counter()
    checkpoint, segmenter = load_model(args)
    scan = placed_scan(args, str(segmenter.device))
    volume = scan.volume
    load_s = time.perf_counter() - started
    chosen = parse_slices(args.slices, volume.shape[2])
    result, _ = segment(segmenter, scan, slices=None if chosen == LESION else chosen,
                        on_progress=ProgressBar(f"segmenting {volume.name}"))
    started = time.perf_counter()
    if args.output:
        save_like(result.mask, volume, args.output, checkpoint.nifti_descrip, np.uint8)
    if args.seg:
        write_seg_from_args(args, volume, result.mask, checkpoint)
    if args.prob:
        save_like(result.probabilities, volume, args.prob, checkpoint.nifti_descrip, np.float32)
    write_s = time.perf_counter() - started
    findings = split_findings(result.lesions, args.min_lesion_ml)
    summary = {
        "input": str(args.input),
        "mask": args.output,
        "seg": args.seg,
        "probabilities": args.prob,
        "lesion_volume_ml": round(result.lesion_volume_ml, 4),
        "n_lesions": result.n_lesions,
        "lesion_slices": result.lesion_slices,
        # every component, largest first; "finding" says which the lesion table and the report list
        "lesions": [{**lesion.as_dict(), "finding": lesion.volume_ml >= args.min_lesion_ml}
                    for lesion in result.lesions],
        **findings.summary(),
        "slices_requested": len(result.requested_slices),
        "slices_computed": len(result.computed_slices),
        "threshold": result.threshold,
        "mirror": result.mirror,
        "device": result.device,
        "precision": result.precision,
        "batch_size": result.batch_size,
        "normalisation": checkpoint.normalisation,
        "registration": scan.registration_summary(),
        "timings_s": {"load": round(load_s, 4),  # registration included (see "registration")
                      **{k: round(v, 4) for k, v in result.timings_s.items()}, "write": round(write_s, 4)},
        "warnings": volume.warnings + scan.warnings() + result.warnings,
        **provenance(checkpoint),
    }
    if args.json:
        summary["timings_s"]["write"] = round(time.perf_counter() - started, 4)
        write_json(args.json, summary)
    for warning in scan.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    smaller = f" ({findings.smaller_line()})" if findings.smaller else ""
    print(f"{volume.name}: {len(findings.findings)} finding(s) of at least {args.min_lesion_ml:g} ml{smaller}, "
          f"{result.lesion_volume_ml:.2f} ml on {len(result.lesion_slices)} slice(s); written to "
          f"{' and '.join(filter(None, (args.output, args.seg)))}. {DISCLAIMER}")
    return 0
