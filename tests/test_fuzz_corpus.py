"""The input fuzzer's findings, replayed (issue 29): every saved case is used or refused with a message.

Each folder of ``tests/fuzz_corpus/`` is one input that once escaped a reader with an exception other
than ``XNetError`` (its ``case.json`` names what was found and why); ``benchmarks/fuzz_inputs.py`` made
it. A few dozen fresh cases drawn by the same hypothesis strategies keep the strategies and the
targets working between full fuzz runs.
"""

from __future__ import annotations

import gzip
import json
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import app.controls  # noqa: F401 - the targets' modules, imported before any case's time limit starts
import app.files  # noqa: F401
import app.pacs_settings  # noqa: F401
import app.reader  # noqa: F401
import app.reader_tools  # noqa: F401
import explain.engine  # noqa: F401
import xnet_core.checkpoint  # noqa: F401
import xnet_core.registration  # noqa: F401
from benchmarks.fuzz_cases import SCAN, Case, load_corpus_case, nifti_bytes, run_case
from benchmarks.fuzz_mutations import any_case

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
CASE_SECONDS = 30  # a case takes milliseconds; this only turns a hang into a failure


@contextmanager
def time_limit(seconds: int):
    def hang(signum, frame):
        raise TimeoutError(f"the case ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("folder", sorted(p for p in CORPUS.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_saved_finding_is_used_or_refused_with_a_message(folder: Path, tmp_path: Path) -> None:
    meta = json.loads((folder / "case.json").read_text())
    assert meta.get("cause"), "each corpus case says what it found and why"
    with time_limit(CASE_SECONDS):
        outcome = run_case(load_corpus_case(folder), tmp_path)  # any other exception fails the test
    assert outcome


@settings(max_examples=12, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(case=any_case())
def test_fresh_fuzz_cases_are_used_or_refused_with_a_message(case: Case, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("case")
    with time_limit(CASE_SECONDS):
        assert run_case(case, folder)


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-RSS reset")
def test_a_small_image_followed_by_a_gzip_bomb_is_not_read_into_memory(tmp_path: Path) -> None:
    """A 12x10x8 image with 100 MB of zeros after it, 100 kB compressed: the reader keeps what the
    header describes and only checks the rest (it read all 100 MB into memory when found)."""
    bomb = gzip.compress(nifti_bytes() + bytes(100 * 1024**2), compresslevel=9, mtime=0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # restart the peak-RSS counter from the current RSS
    before = _peak_rss_mb()
    assert run_case(Case("nifti", {SCAN + ".gz": bomb}, ["gzip bomb"]), tmp_path) == "ok"
    assert _peak_rss_mb() - before < 50
