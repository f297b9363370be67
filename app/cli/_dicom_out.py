"""DICOM outputs of ``xnet segment --seg`` and ``xnet report --dicom-pdf/--dicom-sc`` (docs/pacs.md):
the checks before any work starts, and the writing after it. The objects are made by
``xnet_core.dicom_results``; this module only ties them to the command-line arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _dicom_input(args: argparse.Namespace, flag: str) -> None:
    from xnet_core.errors import XNetError

    if not Path(args.input).is_dir():
        raise XNetError(f"{flag}: needs a DICOM folder as INPUT (the results go into its study); "
                        f"{args.input} is a file.")


def check_seg_args(args: argparse.Namespace) -> None:
    """``xnet segment``: -o, --seg or both; --seg needs DICOM input; --reader only with --seg."""
    from xnet_core.errors import XNetError

    if not (args.output or args.seg):
        raise XNetError("give -o MASK.nii.gz, --seg OUT.dcm or both: there is nothing to write.")
    if args.seg:
        _dicom_input(args, "--seg")
    if args.reader and not args.seg:
        raise XNetError("--reader: only used with --seg (the reader's segment of the DICOM SEG).")


def write_seg_from_args(args: argparse.Namespace, volume, mask, checkpoint) -> Path:
    """The SEG of ``mask`` (and of --reader's mask) referencing the source series of INPUT."""
    from xnet_core.dicom_results import Algorithm, source_series, write_seg
    from xnet_core.reader_mask import load_reader_mask

    reader = load_reader_mask(args.reader, volume).mask if args.reader else None
    source = source_series(volume, args.series, args.volume)
    return write_seg(volume, source, mask, args.seg, Algorithm.from_checkpoint(checkpoint, args.threshold),
                     reader_mask=reader)


def check_report_args(args: argparse.Namespace) -> None:
    """``xnet report``: --dicom-pdf and --dicom-sc need DICOM input and a place to go."""
    from app.cli._common import check_output
    from xnet_core.errors import XNetError

    if args.dicom_pdf:
        _dicom_input(args, "--dicom-pdf")
        check_output(args.dicom_pdf, [args.input])
    if args.dicom_sc:
        _dicom_input(args, "--dicom-sc")
        if not Path(args.dicom_sc).is_dir():
            raise XNetError(f"--dicom-sc: {args.dicom_sc} is not a folder; create it or choose another.")


def write_report_objects(args: argparse.Namespace, volume, inputs, pdf: Path) -> list[Path]:
    """The Encapsulated PDF (--dicom-pdf) and the slice pages as Secondary Captures (--dicom-sc)."""
    from app.report_capture import slice_page_images
    from xnet_core.dicom_results import source_series, write_encapsulated_pdf, write_secondary_captures

    source = source_series(volume, args.series, args.volume)
    written: list[Path] = []
    if args.dicom_pdf:
        written.append(write_encapsulated_pdf(pdf, source, args.dicom_pdf, f"X-Net report {volume.name}"))
    if args.dicom_sc:
        pages = slice_page_images(inputs)
        comments = [f"X-Net report, slice z {z}." for z in inputs.slices]
        written += write_secondary_captures(pages, source, args.dicom_sc, comments)
    return written
