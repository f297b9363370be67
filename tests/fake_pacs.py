"""Small misbehaving PACSes for the fault tests (pynetdicom SCPs in this process, on free loopback ports):
one that loses an instance in C-GET, refuses a SOP class or fails some stores, rejects our AE title,
or accepts a connection and never answers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import (MRImageStorage, StudyRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelGet, Verification)

from tests.orthanc_server import free_port

FAKE_AET = "FAKEPACS"


@dataclass
class FakePacs:
    """What the fake holds and how it misbehaves."""

    files: list[Path] = field(default_factory=list)
    lose_in_get: set[str] = field(default_factory=set)  # SOPInstanceUIDs it lists but never sends
    fail_store: set[str] = field(default_factory=set)  # SOPInstanceUIDs whose C-STORE fails (0xA700)
    storage_classes: tuple[str, ...] = (MRImageStorage,)
    stored: list[str] = field(default_factory=list)
    port: int = 0

    def datasets(self) -> list[Dataset]:
        return [dcmread(path) for path in self.files]

    def on_find(self, event):
        query = event.identifier
        level = str(query.QueryRetrieveLevel)
        seen = set()
        datasets = self.datasets()
        counts = {"NumberOfSeriesRelatedInstances": lambda d: sum(x.SeriesInstanceUID == d.SeriesInstanceUID
                                                                   for x in datasets),
                  "NumberOfStudyRelatedInstances": lambda d: sum(x.StudyInstanceUID == d.StudyInstanceUID
                                                                  for x in datasets),
                  "NumberOfStudyRelatedSeries": lambda d: len({x.SeriesInstanceUID for x in datasets
                                                               if x.StudyInstanceUID == d.StudyInstanceUID})}
        for ds in datasets:
            if query.get("StudyInstanceUID") and query.StudyInstanceUID != ds.StudyInstanceUID:
                continue
            if query.get("SeriesInstanceUID") and query.SeriesInstanceUID != ds.SeriesInstanceUID:
                continue
            key = {"STUDY": ds.StudyInstanceUID, "SERIES": ds.SeriesInstanceUID}.get(level, ds.SOPInstanceUID)
            if key in seen:
                continue
            seen.add(key)
            answer = Dataset()
            answer.QueryRetrieveLevel = level
            for keyword in query.dir():
                if keyword in ds and keyword != "QueryRetrieveLevel":
                    setattr(answer, keyword, ds[keyword].value)
            for keyword, count in counts.items():
                if keyword in query:
                    setattr(answer, keyword, count(ds))
            answer.StudyInstanceUID = ds.StudyInstanceUID
            if level != "STUDY":
                answer.SeriesInstanceUID = ds.SeriesInstanceUID
            yield 0xFF00, answer

    def on_get(self, event):
        query = event.identifier
        chosen = [ds for ds in self.datasets() if ds.SeriesInstanceUID == query.SeriesInstanceUID
                  and ds.SOPInstanceUID not in self.lose_in_get]
        yield len(chosen)
        for ds in chosen:
            yield 0xFF00, ds

    def on_store(self, event):
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in self.fail_store:
            return 0xA700
        self.stored.append(uid)
        return 0x0000


@contextmanager
def running_fake(pacs: FakePacs, **ae_options) -> Iterator[FakePacs]:
    """Serve ``pacs`` on a free port until the block ends. ``ae_options`` set AE attributes
    (``require_calling_aet=["OTHER"]`` rejects us)."""
    ae = AE(ae_title=FAKE_AET)
    for name, value in ae_options.items():
        setattr(ae, name, value)
    ae.add_supported_context(Verification)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in pacs.storage_classes:
        ae.add_supported_context(sop_class, scu_role=True, scp_role=True)
    pacs.port = free_port()
    handlers = [(evt.EVT_C_FIND, pacs.on_find), (evt.EVT_C_GET, pacs.on_get), (evt.EVT_C_STORE, pacs.on_store)]
    server = ae.start_server(("127.0.0.1", pacs.port), block=False, evt_handlers=handlers)
    try:
        yield pacs
    finally:
        server.shutdown()
        ae.shutdown()


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a web port, a hung PACS)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()
