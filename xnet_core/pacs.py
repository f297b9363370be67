"""Talking to a PACS over DICOM networking (DIMSE, through pynetdicom): C-ECHO, C-FIND and C-STORE.

Retrieval (C-GET, C-MOVE) lives in ``pacs_retrieve.py``; both share ``PacsSettings`` and
``association`` here. Every failure becomes a ``PacsError`` whose one-line message says what went
wrong in the user's terms (unreachable, wrong AE title, rejected, timed out, refused) and what to
check. Nothing identifying is logged: log lines name the PACS and count things, never a patient's
name, ID, birth date or accession number (pynetdicom's own debug output would; callers keep the
``pynetdicom`` logger at WARNING, see ``quiet_pynetdicom``).
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from xnet_core.errors import Cancelled, XNetError

log = logging.getLogger(__name__)

DEFAULT_CALLING_AET = "XNET"
MAX_CONTEXTS = 128  # presentation contexts one association may propose (DICOM PS3.8)
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 printable ASCII characters, no backslash
_DATE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")


class PacsError(XNetError):
    """The PACS cannot be reached, refused the association or the request, or answered incompletely."""


@dataclass(frozen=True)
class PacsSettings:
    """Where the PACS is and who we are. Refused at construction when a field cannot work.

    ``receive_port``: the port of our own Storage SCP for C-MOVE (the PACS must know our AE title at
    this host and port); 0 = retrieve with C-GET only. ``tls``: DICOM over TLS, checking the PACS
    certificate against ``tls_ca_file`` (system defaults when empty); ``tls_cert_file`` and
    ``tls_key_file`` present our own certificate where the PACS asks for one.
    """

    host: str
    port: int
    called_aet: str
    calling_aet: str = DEFAULT_CALLING_AET
    timeout_s: float = 30.0
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    receive_port: int = 0

    def __post_init__(self) -> None:
        if not str(self.host).strip():
            raise PacsError("the PACS host is empty; give its name or IP address.", parameter="host")
        # Normalised as checked (text fields give "104", " PACS "), so equal settings compare equal.
        object.__setattr__(self, "host", str(self.host).strip())
        object.__setattr__(self, "port", check_port(self.port, "port"))
        object.__setattr__(self, "receive_port", check_port(self.receive_port, "receive_port")
                           if str(self.receive_port).strip() not in ("", "0") else 0)
        object.__setattr__(self, "called_aet",
                           check_ae_title(self.called_aet, "called_aet", "the PACS's AE title (called AE)"))
        object.__setattr__(self, "calling_aet",
                           check_ae_title(self.calling_aet, "calling_aet", "our AE title (calling AE)"))
        try:
            timeout = float(self.timeout_s)
        except (TypeError, ValueError):
            timeout = 0.0
        object.__setattr__(self, "timeout_s", timeout)
        if not timeout > 0:
            raise PacsError(f"timeout {self.timeout_s}: must be a positive number of seconds.", parameter="timeout")
        if self.tls_cert_file and not self.tls_key_file:
            raise PacsError("a TLS client certificate needs its private key file too.", parameter="tls")

    @classmethod
    def from_address(cls, address: str, called_aet: str, **fields) -> PacsSettings:
        """Settings from ``HOST:PORT`` (an IPv6 host in brackets: ``[::1]:104``)."""
        host, sep, port = str(address).strip().rpartition(":")
        if not sep or not host:
            raise PacsError(f"{address!r}: give the PACS as HOST:PORT, e.g. pacs.example.org:104.", parameter="pacs")
        try:
            number = int(port)
        except ValueError:
            raise PacsError(f"{address!r}: the port {port!r} is not a number; give HOST:PORT.",
                            parameter="pacs") from None
        return cls(host=host.strip("[]"), port=number, called_aet=called_aet, **fields)

    def describe(self) -> str:
        """``ORTHANC at 127.0.0.1:4242``: how messages name the PACS (never a patient)."""
        return f"{self.called_aet} at {self.host}:{self.port}"

    def as_dict(self) -> dict:
        return asdict(self)


def check_port(port: object, parameter: str = "port") -> int:
    """A TCP port number 1..65535, or ``PacsError``."""
    try:
        number = int(str(port).strip())
    except ValueError:
        number = -1
    if not 1 <= number <= 65535 or str(port).strip() != str(number):
        raise PacsError(f"port {port!r}: must be a whole number from 1 to 65535.", parameter=parameter)
    return number


def check_ae_title(title: object, parameter: str, what: str = "AE title") -> str:
    """An AE title: 1 to 16 printable ASCII characters, not only spaces, no backslash."""
    text = str(title or "")
    if not text.strip():
        raise PacsError(f"{what} is empty; give the AE title configured on the PACS.", parameter=parameter)
    if not _AE_TITLE.match(text):
        raise PacsError(f"{what} {text!r}: an AE title has 1 to 16 letters, digits, spaces or punctuation "
                        "(no backslash, no accents).", parameter=parameter)
    return text.strip()


def quiet_pynetdicom() -> None:
    """Keep pynetdicom's logger at WARNING: its debug output dumps identifiers (patient name and ID)."""
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


# -- the association -------------------------------------------------------------------------------
def new_ae(settings: PacsSettings) -> AE:
    """Our application entity with the settings' timeouts (connection, association, DIMSE, network)."""
    ae = AE(ae_title=settings.calling_aet)
    timeout = float(settings.timeout_s)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.maximum_pdu_size = 0  # no limit on what we receive
    return ae


def _tls_args(settings: PacsSettings) -> tuple[ssl.SSLContext, str] | None:
    if not settings.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
        if settings.tls_cert_file:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise PacsError(f"TLS: the certificate files cannot be used ({exc}); check the paths in the PACS "
                        "settings.", parameter="tls") from exc
    return context, settings.host


@contextmanager
def association(
    settings: PacsSettings, contexts: Iterable[tuple[str, list[str]]], ae: AE | None = None, **kwargs
) -> Iterator[Association]:
    """An established association proposing ``contexts`` (SOP class, transfer syntaxes); released (or
    aborted, after an error) on exit. ``kwargs`` go to ``AE.associate`` (``ext_neg``, ``evt_handlers``)."""
    ae = ae or new_ae(settings)
    for sop_class, syntaxes in list(contexts)[:MAX_CONTEXTS]:
        ae.add_requested_context(sop_class, syntaxes)
    started = time.monotonic()
    assoc = ae.associate(settings.host, settings.port, ae_title=settings.called_aet,
                         tls_args=_tls_args(settings), **kwargs)
    if not assoc.is_established:
        raise association_error(settings, assoc, time.monotonic() - started)
    log.info("association with %s established", settings.describe())
    try:
        yield assoc
    except BaseException:
        if assoc.is_established:
            assoc.abort()
        raise
    else:
        if assoc.is_established:
            assoc.release()
    finally:
        ae.shutdown()


def association_error(settings: PacsSettings, assoc: Association, elapsed_s: float) -> PacsError:
    """Why an association failed, told apart: rejected (and why), unreachable, or no answer in time."""
    where = settings.describe()
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        reason = str(getattr(primitive, "reason_str", "") or "no reason given")
        hint = _REJECT_HINTS.get(reason.lower(), "check the AE titles and that the PACS lists us as a modality")
        return PacsError(f"{where} rejected the association ({reason}); {hint}.")
    reachable = _reachable(settings)
    if reachable is not None:
        return PacsError(f"{where} cannot be reached ({reachable}); check the host, the port and that the PACS "
                         "is running.")
    if elapsed_s >= 0.9 * float(settings.timeout_s):
        return PacsError(f"{where} accepted the connection but did not answer within {settings.timeout_s:g} s; "
                         "check that the port is the PACS's DICOM port (not its web port), or raise the timeout.")
    tls = " (TLS: check that the PACS expects TLS and trusts our certificate)" if settings.tls else ""
    return PacsError(f"{where} closed the connection without an answer{tls}; check the port and the AE titles.")


_REJECT_HINTS = {
    "called ae title not recognised": "the called AE title does not match the PACS's own AE title; fix it in "
                                      "the settings",
    "calling ae title not recognised": "the PACS does not know our AE title; ask its administrator to add it, "
                                       "or fix our AE title in the settings",
    "temporary congestion": "the PACS is busy; try again in a minute",
    "local limit exceeded": "the PACS has too many connections open; try again in a minute",
}


def _reachable(settings: PacsSettings) -> str | None:
    """None when a TCP connection to the PACS opens; otherwise why it does not."""
    try:
        with socket.create_connection((settings.host, settings.port), timeout=min(5.0, settings.timeout_s)):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def status_text(status: Dataset | None) -> str:
    """``0xA700 (Out of resources)``-like text of a DIMSE status, for messages."""
    from pynetdicom.status import code_to_category

    if status is None or "Status" not in status:
        return "no answer"
    code = int(status.Status)
    comment = str(status.get("ErrorComment", "") or "").strip()
    return f"0x{code:04X} ({code_to_category(code).lower()}{': ' + comment if comment else ''})"


def echo(settings: PacsSettings) -> float:
    """C-ECHO: the round trip in seconds; ``PacsError`` when the PACS does not answer success."""
    started = time.perf_counter()
    with association(settings, [(Verification, UNCOMPRESSED)]) as assoc:
        status = assoc.send_c_echo()
    if status is None or "Status" not in status or int(status.Status) != 0:
        raise PacsError(f"{settings.describe()} answered the echo with {status_text(status)}.")
    elapsed = time.perf_counter() - started
    log.info("C-ECHO to %s: %.3f s", settings.describe(), elapsed)
    return elapsed


# -- C-FIND ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyQuery:
    """What to look for; empty fields match everything. ``study_date``: ``YYYYMMDD`` or a range
    ``YYYYMMDD-YYYYMMDD`` (either end may be left open). ``patient_name`` may use ``*`` wildcards."""

    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    accession: str = ""
    modality: str = ""

    def __post_init__(self) -> None:
        date = _clean_date(self.study_date)
        if not _DATE.match(date) or date == "-":
            raise PacsError(f"study date {self.study_date!r}: give YYYYMMDD or a range YYYYMMDD-YYYYMMDD.",
                            parameter="study_date")

    def identifier(self) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for keyword in _STUDY_KEYS:
            setattr(ds, keyword, "")
        ds.PatientID = self.patient_id.strip()
        ds.PatientName = self.patient_name.strip()
        ds.StudyDate = _clean_date(self.study_date)
        ds.AccessionNumber = self.accession.strip()
        ds.ModalitiesInStudy = self.modality.strip().upper()
        return ds


def _clean_date(text: str) -> str:
    """``2024-05-01`` or ``2024.05.01`` as DICOM's ``20240501``; ranges keep their one hyphen."""
    text = text.strip().replace("/", "").replace(".", "").replace(" ", "")
    iso = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text)
    return "".join(iso.groups()) if iso else text


_STUDY_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "StudyDate", "StudyTime",
               "StudyDescription", "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
               "NumberOfStudyRelatedInstances")
_SERIES_KEYS = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "SeriesDate",
                "NumberOfSeriesRelatedInstances")


@dataclass(frozen=True)
class SeriesRecord:
    """One series as the PACS lists it."""

    uid: str
    study_uid: str
    number: int | None
    description: str
    modality: str
    date: str
    n_images: int | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StudyRecord:
    """One study as the PACS lists it, with its series when they were asked for."""

    uid: str
    patient_id: str
    patient_name: str
    date: str
    description: str
    accession: str
    modalities: str
    n_series: int | None
    n_images: int | None
    series: tuple[SeriesRecord, ...] = field(default=())

    def as_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "series"},
                "series": [s.as_dict() for s in self.series]}


def _c_find(assoc: Association, identifier: Dataset, what: str) -> list[Dataset]:
    """The identifiers a C-FIND returns; ``PacsError`` on failure or silence."""
    found: list[Dataset] = []
    for status, answer in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
        if status is None or "Status" not in status:
            raise PacsError(f"the PACS stopped answering the {what} query (no answer within the timeout, or the "
                            "connection was closed); try again or raise the timeout.")
        code = int(status.Status)
        if code in (0xFF00, 0xFF01):
            if answer is not None:
                found.append(answer)
        elif code != 0:
            raise PacsError(f"the PACS refused the {what} query: {status_text(status)}.")
    return found


def _int_or_none(value) -> int | None:
    try:
        return int(str(value).strip()) if value not in (None, "") else None
    except ValueError:
        return None


def _multi(value) -> str:
    """A value of multiplicity 1..n (``MR`` or ``['MR', 'SEG']``) as ``MR\\SEG``."""
    if value in (None, ""):
        return ""
    return str(value) if isinstance(value, str) else "\\".join(str(v) for v in value)


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def find_studies_on(assoc: Association, query: StudyQuery) -> list[StudyRecord]:
    records = [StudyRecord(uid=_text(ds, "StudyInstanceUID"), patient_id=_text(ds, "PatientID"),
                           patient_name=_text(ds, "PatientName"), date=_text(ds, "StudyDate"),
                           description=_text(ds, "StudyDescription"), accession=_text(ds, "AccessionNumber"),
                           modalities=_multi(ds.get("ModalitiesInStudy")),
                           n_series=_int_or_none(ds.get("NumberOfStudyRelatedSeries")),
                           n_images=_int_or_none(ds.get("NumberOfStudyRelatedInstances")))
               for ds in _c_find(assoc, query.identifier(), "study")]
    return sorted((r for r in records if r.uid), key=lambda r: (r.date, r.uid), reverse=True)


def find_series_on(assoc: Association, study_uid: str = "", series_uid: str = "") -> list[SeriesRecord]:
    """The series of a study (or the one series ``series_uid``, whichever study holds it)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    for keyword in _SERIES_KEYS:
        setattr(ds, keyword, "")
    ds.SeriesInstanceUID = series_uid
    records = [SeriesRecord(uid=_text(a, "SeriesInstanceUID"), study_uid=_text(a, "StudyInstanceUID") or study_uid,
                            number=_int_or_none(a.get("SeriesNumber")), description=_text(a, "SeriesDescription"),
                            modality=_text(a, "Modality"), date=_text(a, "SeriesDate"),
                            n_images=_int_or_none(a.get("NumberOfSeriesRelatedInstances")))
               for a in _c_find(assoc, ds, "series")]
    return sorted((r for r in records if r.uid), key=lambda r: (r.number is None, r.number or 0, r.uid))


def find_instances_on(assoc: Association, study_uid: str, series_uid: str) -> dict[str, str]:
    """``{SOPInstanceUID: SOPClassUID}`` of every instance of a series: what a retrieval must bring."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = ""
    ds.SOPClassUID = ""
    return {_text(a, "SOPInstanceUID"): _text(a, "SOPClassUID") for a in _c_find(assoc, ds, "image")
            if _text(a, "SOPInstanceUID")}


def find(settings: PacsSettings, query: StudyQuery, with_series: bool = True) -> list[StudyRecord]:
    """The studies matching ``query``, newest first, each with its series when ``with_series``."""
    with association(settings, [(StudyRootQueryRetrieveInformationModelFind, UNCOMPRESSED)]) as assoc:
        studies = find_studies_on(assoc, query)
        if with_series:
            studies = [StudyRecord(**{**study.__dict__, "series": tuple(find_series_on(assoc, study.uid))})
                       for study in studies]
    log.info("C-FIND on %s: %d studies", settings.describe(), len(studies))
    return studies


def find_series(settings: PacsSettings, study_uid: str) -> list[SeriesRecord]:
    with association(settings, [(StudyRootQueryRetrieveInformationModelFind, UNCOMPRESSED)]) as assoc:
        return find_series_on(assoc, study_uid)


# -- C-STORE ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceStatus:
    """What the PACS answered for one file sent."""

    path: Path
    sop_instance_uid: str
    sop_class: str  # its name, e.g. "Segmentation Storage"
    ok: bool
    message: str  # "stored", "stored with warning 0xB000 ...", or why not

    def as_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


@dataclass
class SendReport:
    """Every instance sent and its status; ``failed`` lists the ones the PACS does not hold now."""

    instances: list[InstanceStatus] = field(default_factory=list)

    @property
    def failed(self) -> list[InstanceStatus]:
        return [i for i in self.instances if not i.ok]

    def summary(self) -> str:
        failed = self.failed
        text = f"{len(self.instances) - len(failed)} of {len(self.instances)} instance(s) stored"
        if failed:
            text += "; not stored: " + "; ".join(f"{i.path.name} ({i.message})" for i in failed)
        return text


def dicom_files(paths: Iterable[str | Path]) -> list[tuple[Path, Dataset]]:
    """Every DICOM file among ``paths`` (folders searched recursively) with its header; others skipped."""
    found: list[tuple[Path, Dataset]] = []
    for path in map(Path, paths):
        if not path.exists():
            raise PacsError(f"{path}: no such file or folder; check the path.")
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for candidate in candidates:
            try:
                found.append((candidate, dcmread(candidate, stop_before_pixels=True)))
            except (InvalidDicomError, OSError, ValueError, EOFError):
                if not path.is_dir():
                    raise PacsError(f"{candidate}: not a DICOM file; give DICOM files or folders.") from None
    if not found:
        raise PacsError("no DICOM files to send among " + ", ".join(map(str, paths)) + ".")
    return found


def _store_contexts(files: list[tuple[Path, Dataset]]) -> list[tuple[str, list[str]]]:
    """One uncompressed context per SOP class, and one per compressed transfer syntax the files use: a
    PACS given the choice in one context may pick uncompressed, and a compressed file then has no home."""
    contexts: dict[tuple[str, str], list[str]] = {}
    for _, ds in files:
        sop_class = str(ds.SOPClassUID)
        contexts.setdefault((sop_class, ""), list(UNCOMPRESSED))
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
        if syntax not in UNCOMPRESSED:
            contexts.setdefault((sop_class, syntax), [syntax])
    if len(contexts) > MAX_CONTEXTS:
        raise PacsError(f"{len(contexts)} kinds of DICOM object in one send, more than one association can "
                        f"carry ({MAX_CONTEXTS}); send them in parts.")
    return [(sop_class, syntaxes) for (sop_class, _), syntaxes in contexts.items()]


def send(settings: PacsSettings, paths: Iterable[str | Path],
         on_progress: Callable[[int, int], None] | None = None,
         should_cancel: Callable[[], bool] | None = None) -> SendReport:
    """C-STORE every DICOM file among ``paths``; the report holds each instance's status. A SOP class the
    PACS refuses, or a store it fails, marks those instances only; the others are still sent."""
    files = dicom_files(paths)
    report = SendReport()
    with association(settings, _store_contexts(files)) as assoc:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        for done, (path, header) in enumerate(files, 1):
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"send cancelled after {done - 1} of {len(files)} instance(s); "
                                f"{report.summary()}")
            report.instances.append(_store_one(assoc, path, header, accepted))
            if on_progress is not None:
                on_progress(done, len(files))
            if not assoc.is_established:
                report.instances += [_status(p, h, False, "not sent: the PACS closed the connection")
                                     for p, h in files[done:]]
                break
    log.info("C-STORE to %s: %d of %d stored", settings.describe(), len(files) - len(report.failed), len(files))
    return report


def _status(path: Path, header: Dataset, ok: bool, message: str) -> InstanceStatus:
    sop_class = UID(str(header.get("SOPClassUID", "")))
    return InstanceStatus(path=path, sop_instance_uid=str(header.get("SOPInstanceUID", "")),
                          sop_class=sop_class.name or str(sop_class), ok=ok, message=message)


def _as_accepted(assoc: Association, path: Path, header: Dataset) -> Path | Dataset:
    """The file itself, or decompressed when the PACS accepted its SOP class only uncompressed."""
    syntax = str(header.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    accepted = {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
                if str(cx.abstract_syntax) == str(header.SOPClassUID)}
    if syntax in accepted or not accepted & set(UNCOMPRESSED) or syntax in UNCOMPRESSED:
        return path
    ds = dcmread(path)
    ds.decompress()  # lossless: the PACS gets the same pixels, uncompressed
    return ds


def _store_one(assoc: Association, path: Path, header: Dataset, accepted: set[str]) -> InstanceStatus:
    sop_class = str(header.SOPClassUID)
    if sop_class not in accepted:
        return _status(path, header, False, f"the PACS refuses {UID(sop_class).name or sop_class} objects")
    try:
        status = assoc.send_c_store(_as_accepted(assoc, path, header))
    except (ValueError, RuntimeError, OSError) as exc:  # no context for its transfer syntax, unreadable file
        return _status(path, header, False, f"not sent: {' '.join(str(exc).split())[:160]}")
    if status is None or "Status" not in status:
        return _status(path, header, False, "no answer from the PACS (timeout or connection closed)")
    code = int(status.Status)
    if code == 0:
        return _status(path, header, True, "stored")
    if code in (0xB000, 0xB006, 0xB007):
        return _status(path, header, True, f"stored with warning {status_text(status)}")
    return _status(path, header, False, f"refused: {status_text(status)}")
