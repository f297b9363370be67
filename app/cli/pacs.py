"""``xnet pacs echo|find|get|send``: talk to a PACS (C-ECHO, C-FIND, C-GET/C-MOVE, C-STORE).

Every subcommand takes ``--pacs HOST:PORT --called-aet AET [--calling-aet XNET]``. A PACS that cannot
be reached, refuses us, times out or returns part of a series: exit status 2 and one line on stderr;
files already retrieved stay valid (a partial series stays under ``<series>.partial``).
"""

from __future__ import annotations

import argparse
import sys

from app.cli._common import ProgressBar, check_output, write_json

HELP = "query, retrieve from and send to a PACS (DICOM networking)"
_FLAGS = {"pacs": "--pacs", "host": "--pacs", "port": "--pacs", "called_aet": "--called-aet",
          "calling_aet": "--calling-aet", "timeout": "--timeout", "study_date": "--study-date",
          "receive_port": "--receive-port", "tls": "--tls-ca", "study": "--study", "method": "--method"}


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pacs", required=True, metavar="HOST:PORT", help="the PACS's DICOM address")
    parser.add_argument("--called-aet", required=True, metavar="AET", help="the PACS's AE title")
    parser.add_argument("--calling-aet", default="XNET", metavar="AET", help="our AE title (default XNET)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds to wait for the PACS at each step (default 30)")
    parser.add_argument("--tls", action="store_true", help="DICOM over TLS")
    parser.add_argument("--tls-ca", default="", metavar="CA.pem", help="CA certificates that sign the PACS's")
    parser.add_argument("--tls-cert", default="", metavar="CERT.pem", help="our client certificate")
    parser.add_argument("--tls-key", default="", metavar="KEY.pem", help="the private key of --tls-cert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="pacs_command", required=True, metavar="ACTION")
    echo = commands.add_parser("echo", help="check the connection (C-ECHO)")
    _connection(echo)
    find = commands.add_parser("find", help="list studies and their series (C-FIND)")
    _connection(find)
    find.add_argument("--patient-id", default="", metavar="ID")
    find.add_argument("--patient-name", default="", metavar="NAME", help="DICOM style, * wildcards: 'DOE^J*'")
    find.add_argument("--study-date", default="", metavar="YYYYMMDD[-YYYYMMDD]", help="a date or a range")
    find.add_argument("--accession", default="", metavar="NUMBER")
    find.add_argument("--modality", default="", metavar="MR", help="a modality in the study")
    find.add_argument("--json", metavar="OUT", help="write the studies with their series here")
    get = commands.add_parser("get", help="retrieve a study or a series into a folder (C-GET, else C-MOVE)")
    _connection(get)
    what = get.add_mutually_exclusive_group(required=True)
    what.add_argument("--study", metavar="UID", help="every series of this study")
    what.add_argument("--series", metavar="UID", help="this series")
    get.add_argument("--out", required=True, metavar="DIR", help="cache folder: DIR/<study UID>/<series UID>/")
    get.add_argument("--method", default="auto", choices=("auto", "get", "move"),
                     help="auto: C-GET, C-MOVE where the PACS refuses C-GET (needs --receive-port)")
    get.add_argument("--receive-port", type=int, default=0, metavar="PORT",
                     help="our Storage SCP port for C-MOVE (the PACS must know our AE title at this port)")
    get.add_argument("--json", metavar="OUT", help="write the retrieved series and their folders here")
    send = commands.add_parser("send", help="store DICOM files or folders on the PACS (C-STORE)")
    _connection(send)
    send.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders (searched recursively)")
    send.add_argument("--json", metavar="OUT", help="write each instance's status here")


def run(args: argparse.Namespace) -> int:
    from xnet_core.errors import XNetError
    from xnet_core.pacs import quiet_pynetdicom

    quiet_pynetdicom()  # its debug output would print patient identifiers
    try:
        settings = _settings(args)
        return {"echo": _echo, "find": _find, "get": _get, "send": _send}[args.pacs_command](args, settings)
    except XNetError as exc:
        flag = _FLAGS.get(exc.parameter or "")
        if flag is None:
            raise
        raise XNetError(f"{flag}: {exc}") from exc


def _settings(args: argparse.Namespace):
    from xnet_core.pacs import PacsSettings

    return PacsSettings.from_address(args.pacs, args.called_aet, calling_aet=args.calling_aet,
                                     timeout_s=args.timeout, tls=args.tls or bool(args.tls_ca or args.tls_cert),
                                     tls_ca_file=args.tls_ca, tls_cert_file=args.tls_cert, tls_key_file=args.tls_key,
                                     receive_port=getattr(args, "receive_port", 0) or 0)


def _echo(args: argparse.Namespace, settings) -> int:
    from xnet_core.pacs import echo

    seconds = echo(settings)
    print(f"{settings.describe()}: answers (C-ECHO in {seconds * 1000:.0f} ms).")
    return 0


def _find(args: argparse.Namespace, settings) -> int:
    from xnet_core.pacs import StudyQuery, find

    query = StudyQuery(patient_id=args.patient_id, patient_name=args.patient_name, study_date=args.study_date,
                       accession=args.accession, modality=args.modality)
    if args.json:
        check_output(args.json, [])
    studies = find(settings, query)
    for study in studies:
        print(f"study {study.uid}  {study.date or '????????'}  {study.patient_id}  {study.patient_name}  "
              f"{study.description or '(no description)'}  accession {study.accession or '-'}")
        for series in study.series:
            images = series.n_images if series.n_images is not None else "?"
            print(f"  series {series.uid}  s{series.number if series.number is not None else '?'}  "
                  f"{series.modality}  {series.description or '(no description)'}  ({images} images)")
    print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} found on {settings.describe()}.")
    if args.json:
        write_json(args.json, {"pacs": settings.describe(), "studies": [s.as_dict() for s in studies]})
    return 0


def _get(args: argparse.Namespace, settings) -> int:
    from xnet_core.pacs_retrieve import retrieve

    if args.json:
        check_output(args.json, [])
    retrieved = retrieve(settings, args.out, study_uid=args.study or "", series_uid=args.series or "",
                         method=args.method, on_progress=ProgressBar("retrieving", unit="images"))
    for series in retrieved:
        print(f"series {series.uid}: {series.n_instances} images ({series.method}) in {series.folder}")
    if args.json:
        write_json(args.json, {"pacs": settings.describe(), "series": [s.as_dict() for s in retrieved]})
    return 0


def _send(args: argparse.Namespace, settings) -> int:
    from xnet_core.pacs import PacsError, send

    if args.json:
        check_output(args.json, [])
    report = send(settings, args.paths, on_progress=ProgressBar("sending", unit="instances"))
    for instance in report.instances:
        print(f"{'ok    ' if instance.ok else 'FAILED'} {instance.path}  {instance.sop_class}: {instance.message}")
    if args.json:
        write_json(args.json, {"pacs": settings.describe(), "instances": [i.as_dict() for i in report.instances],
                               "failed": len(report.failed)})
    if report.failed:
        raise PacsError(f"{settings.describe()}: {report.summary()}.")
    print(f"{settings.describe()}: {report.summary()}.", file=sys.stderr)
    return 0
