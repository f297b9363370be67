"""Retrieving series from a PACS into a per-study cache folder: C-GET, or C-MOVE where the PACS needs it.

Layout: ``<cache>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A series is first
received into ``<SeriesInstanceUID>.partial/`` and renamed to its final name only when every instance
the PACS listed (C-FIND at image level, before retrieving) has arrived, so a half-retrieved series never
sits where a complete one would and never opens as if it were complete. Each file is written under a
temporary name and renamed, so every file present is whole, also after a cancel or a dropped connection;
a retry overwrites instances one by one. ``.xnet-retrieve.json`` in each series folder records what
was expected and what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import AE, Association, build_role, evt
from pynetdicom.sop_class import (StudyRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)

from xnet_core.errors import Cancelled
from xnet_core.pacs import (MAX_CONTEXTS, UNCOMPRESSED, PacsError, PacsSettings, SeriesRecord, association,
                            find_instances_on, find_series_on, new_ae, status_text)

log = logging.getLogger(__name__)

MARKER = ".xnet-retrieve.json"
PARTIAL = ".partial"
MISSING_LISTED = 5  # missing instances named in a message; the marker file lists them all
# Offered for each SOP class we receive: uncompressed first, so that the PACS transcodes what it can.
RECEIVE_SYNTAXES = [*UNCOMPRESSED, "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90",
                    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"]


class PartialRetrieveError(PacsError):
    """Some instances of a series did not arrive; ``missing`` lists their SOPInstanceUIDs and ``folder``
    is where the ones that did arrive wait (valid files, under the ``.partial`` name)."""

    def __init__(self, message: str, folder: Path, missing: list[str]) -> None:
        super().__init__(message)
        self.folder = folder
        self.missing = list(missing)


@dataclass(frozen=True)
class RetrievedSeries:
    """A series received whole, in its final folder."""

    uid: str
    study_uid: str
    folder: Path
    n_instances: int
    method: str  # "C-GET" or "C-MOVE"

    def as_dict(self) -> dict:
        return {**self.__dict__, "folder": str(self.folder)}


@dataclass
class _Receiver:
    """The C-STORE handler: writes each instance whole into ``folder`` and counts it."""

    folder: Path
    expected: set[str]
    on_progress: Callable[[int, int], None] | None = None
    received: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid not in self.expected:
            log.warning("an instance that was not asked for arrived; it is ignored")
            return 0x0000
        target = self.folder / f"{uid}.dcm"
        tmp = self.folder / f".{uid}.tmp{threading.get_ident()}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(event.encoded_dataset())
            os.replace(tmp, target)
        except OSError as exc:
            log.error("an instance could not be written to the cache: %s", exc.strerror)
            tmp.unlink(missing_ok=True)
            return 0xA700  # out of resources
        with self.lock:
            self.received.add(uid)
            done = len(self.received)
        if self.on_progress is not None:
            self.on_progress(done, len(self.expected))
        return 0x0000


def series_folder(cache: Path, study_uid: str, series_uid: str) -> Path:
    return Path(cache) / study_uid / series_uid


def check_complete(folder: str | os.PathLike) -> None:
    """Refuse a retrieved series folder that its marker says is incomplete (or a ``.partial`` one)."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        return
    record = json.loads(marker.read_text(encoding="utf-8"))
    if folder.name.endswith(PARTIAL) or not record.get("complete", False):
        missing = record.get("missing", [])
        raise PartialRetrieveError(_missing_message(folder, missing, int(record.get("expected", 0))),
                                   folder, missing)


def _missing_message(folder: Path, missing: list[str], expected: int) -> str:
    shown = ", ".join(missing[:MISSING_LISTED]) + (f" and {len(missing) - MISSING_LISTED} more"
                                                   if len(missing) > MISSING_LISTED else "")
    return (f"{folder}: only {expected - len(missing)} of {expected} images of the series arrived; missing: "
            f"{shown}. The images received are kept there; retrieve the series again before opening it.")


def retrieve(settings: PacsSettings, cache: str | os.PathLike, study_uid: str = "", series_uid: str = "",
             method: str = "auto", on_progress: Callable[[int, int], None] | None = None,
             should_cancel: Callable[[], bool] | None = None) -> list[RetrievedSeries]:
    """Retrieve one series (``series_uid``) or every series of a study (``study_uid``) into ``cache``.

    ``method``: ``"get"``, ``"move"`` or ``"auto"`` (C-GET, and C-MOVE when the PACS refuses C-GET and
    ``settings.receive_port`` is set). ``on_progress(done, total)`` counts instances over all series.
    Raises ``PartialRetrieveError`` listing missing instances, ``Cancelled``, or ``PacsError``.
    """
    if not (study_uid or series_uid):
        raise PacsError("name the study or the series to retrieve.", parameter="study")
    if method not in ("auto", "get", "move"):
        raise PacsError(f"retrieve method {method!r}: choose get, move or auto.", parameter="method")
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    plan = _plan(settings, study_uid, series_uid)
    total = sum(len(expected) for _, expected in plan)
    offset = 0
    results = []
    for series, expected in plan:
        def progress(done: int, _total: int, offset=offset) -> None:
            if on_progress is not None:
                on_progress(offset + done, total)

        results.append(_retrieve_series(settings, cache, series, expected, method, progress, should_cancel))
        offset += len(expected)
    return results


def _plan(settings: PacsSettings, study_uid: str, series_uid: str) -> list[tuple[SeriesRecord, dict[str, str]]]:
    """Each series to retrieve with its instances (SOPInstanceUID: SOPClassUID), from C-FIND."""
    with association(settings, [(StudyRootQueryRetrieveInformationModelFind, UNCOMPRESSED)]) as assoc:
        series = find_series_on(assoc, study_uid, series_uid)
        if not series:
            what = f"series {series_uid}" if series_uid else f"study {study_uid}"
            raise PacsError(f"{settings.describe()} holds no {what}; check the UID (xnet pacs find lists them).")
        plan = [(s, find_instances_on(assoc, s.study_uid, s.uid)) for s in series]
    return [(s, expected) for s, expected in plan if expected]


def _retrieve_series(settings: PacsSettings, cache: Path, series: SeriesRecord, expected: dict[str, str],
                     method: str, on_progress, should_cancel) -> RetrievedSeries:
    final = series_folder(cache, series.study_uid, series.uid)
    staging = final.with_name(final.name + PARTIAL)
    staging.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(staging, set(expected), on_progress)
    used = "C-GET"
    try:
        if method == "move" or not _c_get(settings, series, expected, receiver, should_cancel, method == "auto"):
            used = "C-MOVE"
            _c_move(settings, series, expected, receiver, should_cancel)
    finally:
        missing = sorted(set(expected) - receiver.received)
        _write_marker(staging, expected, missing, used)
    if missing:
        raise PartialRetrieveError(_missing_message(staging, missing, len(expected)), staging, missing)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    log.info("retrieved a series of %d instances with %s", len(expected), used)
    return RetrievedSeries(series.uid, series.study_uid, final, len(expected), used)


def _write_marker(folder: Path, expected: dict[str, str], missing: list[str], method: str) -> None:
    from xnet_core.atomic import write_json_atomic

    write_json_atomic(folder / MARKER, {"complete": not missing, "expected": len(expected), "missing": missing,
                                        "method": method})


def _identifier(series: SeriesRecord) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = series.uid
    return ds


def _storage_classes(expected: dict[str, str], limit: int) -> list[str]:
    classes = sorted(set(expected.values()))
    if len(classes) > limit:
        raise PacsError(f"the series holds {len(classes)} kinds of DICOM object, more than one retrieval can "
                        "negotiate; retrieve it with another tool.")
    return classes


def _c_get(settings: PacsSettings, series: SeriesRecord, expected: dict[str, str], receiver: _Receiver,
           should_cancel, may_fall_back: bool) -> bool:
    """C-GET; False (nothing received) when the PACS refuses C-GET and C-MOVE may be tried instead."""
    classes = _storage_classes(expected, MAX_CONTEXTS - 1)
    contexts = [(StudyRootQueryRetrieveInformationModelGet, UNCOMPRESSED)]
    contexts += [(sop_class, RECEIVE_SYNTAXES) for sop_class in classes]
    roles = [build_role(sop_class, scp_role=True) for sop_class in classes]
    with association(settings, contexts, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, receiver)]) as assoc:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        if str(StudyRootQueryRetrieveInformationModelGet) not in accepted:
            if may_fall_back and settings.receive_port:
                log.info("%s refuses C-GET; retrieving with C-MOVE", settings.describe())
                return False
            raise PacsError(f"{settings.describe()} does not offer C-GET; set our receive port (C-MOVE) in the "
                            "PACS settings and ask the PACS administrator to register our AE title there.")
        refused = [UID(c).name or c for c in classes if c not in accepted]
        if refused:
            log.warning("the PACS would not send %s to us", ", ".join(refused))
        responses = assoc.send_c_get(_identifier(series), StudyRootQueryRetrieveInformationModelGet)
        _follow(assoc, responses, should_cancel, receiver, "C-GET")
    return True


def _follow(assoc: Association, responses, should_cancel, receiver: _Receiver, what: str) -> None:
    """Read a C-GET/C-MOVE's responses to the end; cancel by aborting (files received stay whole)."""
    for status, _ in responses:
        if should_cancel is not None and should_cancel():
            assoc.abort()
            raise Cancelled(f"retrieval cancelled; {len(receiver.received)} of {len(receiver.expected)} images "
                            f"kept in {receiver.folder}.")
        if status is None or "Status" not in status:
            raise PacsError(f"the PACS stopped answering the {what} (no answer within the timeout, or the "
                            f"connection was closed) after {len(receiver.received)} of {len(receiver.expected)} "
                            f"images; those are kept in {receiver.folder}. Try again.")
        code = int(status.Status)
        if code in (0xFF00, 0xFF01, 0x0000, 0xB000):  # pending, success, some sub-operations failed
            continue
        if code == 0xA801:
            raise PacsError("the PACS does not know our AE title as a C-MOVE destination (status 0xA801); ask its "
                            "administrator to add our AE title with this computer's address and our receive port, "
                            "or retrieve with C-GET.")
        if code == 0xFE00:
            raise Cancelled(f"the PACS cancelled the {what}; {len(receiver.received)} images kept.")
        raise PacsError(f"the PACS refused the {what}: {status_text(status)}.")


def _c_move(settings: PacsSettings, series: SeriesRecord, expected: dict[str, str], receiver: _Receiver,
            should_cancel) -> None:
    """C-MOVE to our own Storage SCP on ``settings.receive_port`` (the PACS must know us there)."""
    if not settings.receive_port:
        raise PacsError("C-MOVE needs our receive port; set it in the PACS settings (and register our AE title "
                        "with that port on the PACS).", parameter="receive_port")
    scp = AE(ae_title=settings.calling_aet)
    scp.network_timeout = scp.acse_timeout = scp.dimse_timeout = float(settings.timeout_s)
    for sop_class in _storage_classes(expected, MAX_CONTEXTS):
        scp.add_supported_context(sop_class, RECEIVE_SYNTAXES)
    try:
        server = scp.start_server(("", settings.receive_port), block=False,
                                  evt_handlers=[(evt.EVT_C_STORE, receiver)])
    except OSError as exc:
        raise PacsError(f"cannot listen on port {settings.receive_port} for C-MOVE ({exc.strerror}); choose a "
                        "free receive port in the PACS settings.", parameter="receive_port") from exc
    try:
        with association(settings, [(StudyRootQueryRetrieveInformationModelMove, UNCOMPRESSED)],
                         ae=new_ae(settings)) as assoc:
            if not assoc.accepted_contexts:
                raise PacsError(f"{settings.describe()} offers neither C-GET nor C-MOVE; it cannot send images.")
            responses = assoc.send_c_move(_identifier(series), settings.calling_aet,
                                          StudyRootQueryRetrieveInformationModelMove)
            _follow(assoc, responses, should_cancel, receiver, "C-MOVE")
    finally:
        server.shutdown()
        scp.shutdown()
