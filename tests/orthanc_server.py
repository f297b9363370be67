"""A real PACS for the tests: Orthanc (the Debian package ``orthanc``) on free loopback ports, with its own
configuration and a temporary storage folder, stopped (and killed if it must be) whatever happens.

``running_orthanc`` is a context manager; the tests wrap it in fixtures. Without Orthanc the tests
that need it are skipped with ``INSTALL_HINT``; CI (``.ci/run``) installs it, so there they run.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = ("Orthanc is not installed, so the PACS round-trip tests are skipped; install it with "
                "`sudo apt-get install -y orthanc` (Debian/Ubuntu; CI's .ci/run does this) and run them again.")
ORTHANC_AET = "ORTHANCTEST"
OUR_AET = "XNET"


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its DICOM port and AE title, its REST URL, and the port our C-MOVE SCP uses."""

    dicom_port: int
    http_port: int
    aet: str
    receive_port: int
    storage: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def upload(self, paths) -> None:
        """Load files through the REST API (independent of our C-STORE)."""
        for path in paths:
            request = urllib.request.Request(f"{self.url}/instances", data=Path(path).read_bytes(), method="POST")
            with urllib.request.urlopen(request, timeout=30) as answer:
                answer.read()

    def get_json(self, route: str):
        with urllib.request.urlopen(f"{self.url}{route}", timeout=30) as answer:
            return json.loads(answer.read())


def _config(folder: Path, dicom_port: int, http_port: int, receive_port: int) -> dict:
    return {
        "Name": "xnet-tests", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "DicomAet": ORTHANC_AET, "DicomPort": dicom_port, "HttpPort": http_port, "HttpServerEnabled": True,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "SslEnabled": False,
        "DicomCheckCalledAet": True, "DicomCheckModalityHost": False,
        "DicomModalities": {"xnet": [OUR_AET, "127.0.0.1", receive_port]},
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
        "DicomScpTimeout": 30, "DicomScuTimeout": 10, "Plugins": [], "LuaScripts": [],
        "StableAge": 1, "SaveJobs": False, "ConcurrentJobs": 1, "HttpThreadsCount": 4,
        "StorageCompression": False, "OverwriteInstances": True,
    }


@contextmanager
def running_orthanc(folder: Path, start_timeout_s: float = 30.0) -> Iterator[Orthanc]:
    """Start Orthanc in ``folder``; always stopped on exit (terminate, then kill), never left behind."""
    binary = orthanc_binary()
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db").mkdir(exist_ok=True)
    dicom_port, http_port, receive_port = free_port(), free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(_config(folder, dicom_port, http_port, receive_port), indent=2))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        server = Orthanc(dicom_port, http_port, ORTHANC_AET, receive_port, folder / "db")
        _wait_until_up(process, server, folder, start_timeout_s)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


def _wait_until_up(process: subprocess.Popen, server: Orthanc, folder: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited at start (status {process.returncode}): "
                               f"{(folder / 'orthanc.log').read_text(errors='replace')[-2000:]}")
        try:
            server.get_json("/system")
            with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not start within {timeout_s:.0f} s; see {folder / 'orthanc.log'}")
