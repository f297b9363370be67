"""Fuzz the readers (issue 29, item 1): damaged scans, series, weights, sidecars and caches, in-process.

Hypothesis draws each case from valid seeds (``benchmarks/fuzz_mutations.py``: bit flips, truncation,
field-aware NIfTI/DICOM/JSON edits, inconsistent series) and a worker process runs it through the
entry point the CLI and the viewer call (``benchmarks/fuzz_cases.py``: ``load_volume`` for NIfTI files
and DICOM folders, ``ReaderRead.load`` for a reader's mask and its notes, ``load_checkpoint`` and the
card, the recovery copy, the registration and explanation caches, and the viewer's start-up reads of
its settings file: the view state, the brush radius, the recent files and the PACS settings). Every
outcome must be a success that keeps the reader's contract or an ``XNetError`` with a message. Findings: any other exception, a case
running past ``--timeout`` (a hang: the worker is killed and replaced), a case whose peak memory grows
past ``--memory-mb`` (measured per case from the kernel's peak-RSS counter, which is reset before each
case; the worker's address space is also capped so that a runaway allocation fails instead of taking
the machine), or a worker that dies. Each finding's files and traceback are written under
``--findings`` so it can be replayed and copied into ``tests/fuzz_corpus/``.

Prints one line per finding, then one JSON line (last line): cases, findings, hangs, max_rss_mb,
seconds, by_target, device, torch, cpu_bf16.
Usage: python benchmarks/fuzz_inputs.py [--cases 20000] [--workers 2] [--timeout 10] [--memory-mb 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from benchmarks.fuzz_cases import Case, checkpoint_seed, run_case, save_case, seed_volume  # noqa: E402
from benchmarks.fuzz_mutations import any_case  # noqa: E402

CHUNK = 250  # hypothesis examples per run; each chunk has its own seed, so a run is reproducible


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux: ``5`` to ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _worker(conn, memory_mb: int) -> None:
    """Run cases sent over ``conn``; answer (outcome, detail, peak_mb, rss_mb) for each."""
    import torch

    torch.set_num_threads(1)
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    import app.reader, explain.engine, xnet_core.checkpoint, xnet_core.registration  # noqa: E401, F401
    import app.controls, app.files, app.pacs_settings, app.reader_tools  # noqa: E401, F401 - the settings' readers

    seed_volume(), checkpoint_seed()  # imports and seeds before the memory cap (explain.engine takes seconds)
    headroom = (_status_kb("VmSize") // 1024 + 4 * memory_mb + 1024) * 1024**2
    resource.setrlimit(resource.RLIMIT_AS, (headroom, headroom))
    conn.send("ready")  # the per-case clock starts after the imports
    scratch = Path(tempfile.mkdtemp(prefix="xnet-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        while True:
            case = conn.recv()
            if case is None:
                break
            folder = scratch / "case"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            _reset_peak_rss()
            before = _status_kb("VmRSS")
            try:
                outcome, detail = "ok", run_case(case, folder)
            except MemoryError:
                outcome, detail = "memory", traceback.format_exc(limit=-8)
            except Exception:  # noqa: BLE001 - the fuzzer's purpose: every other exception is a finding
                outcome, detail = "exception", traceback.format_exc(limit=-8)
            growth = (_status_kb("VmHWM") - before) / 1024
            if outcome == "ok" and growth > memory_mb:  # refused after allocating too much counts too
                outcome, detail = "memory", f"peak memory grew by {growth:.0f} MB (bound {memory_mb} MB)"
            conn.send((outcome, detail, growth, _status_kb("VmRSS") / 1024))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class _Worker:
    process: multiprocessing.Process
    conn: object
    case: Case | None = None  # the case it is running, None when idle
    since: float = 0.0


class Runner:
    """``workers`` worker processes fed round the clock; a case that hangs or kills its worker is recorded
    and the worker replaced."""

    def __init__(self, timeout: float, memory_mb: int, findings: Path, workers: int = 1) -> None:
        self.timeout, self.memory_mb, self.findings_dir = timeout, memory_mb, findings
        self.context = multiprocessing.get_context("fork")
        self.pool = [self._start() for _ in range(workers)]
        self.cases = self.hangs = 0
        self.findings: list[dict] = []
        self.by_target: Counter = Counter()
        self.outcomes: Counter = Counter()
        self.max_rss_mb = 0.0

    def _start(self) -> _Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child, self.memory_mb), daemon=True)
        process.start()
        child.close()
        if not parent.poll(300) or parent.recv() != "ready":
            raise RuntimeError("a fuzz worker did not start within 5 minutes")
        return _Worker(process, parent)

    def _replace(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join(10)
        self.pool[self.pool.index(worker)] = self._start()

    def run(self, case: Case) -> None:
        """Hand ``case`` to an idle worker (waiting for one to finish when all are busy)."""
        while not any(w.case is None for w in self.pool):
            self._collect()
        worker = next(w for w in self.pool if w.case is None)
        self.cases += 1
        self.by_target[case.target] += 1
        worker.conn.send(case)
        worker.case, worker.since = case, time.perf_counter()

    def drain(self) -> None:
        while any(w.case is not None for w in self.pool):
            self._collect()
        for worker in self.pool:
            worker.conn.send(None)
            worker.process.join(10)

    def _collect(self) -> None:
        """Wait for the first busy worker to answer or run out of time, and record what it did."""
        busy = [w for w in self.pool if w.case is not None]
        deadline = min(w.since for w in busy) + self.timeout
        ready = multiprocessing.connection.wait([w.conn for w in busy], max(0.0, deadline - time.perf_counter()))
        for worker in busy:
            case = worker.case
            if worker.conn in ready:
                try:
                    outcome, detail, growth, rss = worker.conn.recv()
                except EOFError:
                    worker.process.join(5)
                    code = worker.process.exitcode
                    self._replace(worker)
                    self._finding(case, "crash", f"the worker died (exit code {code})")
                    continue
                worker.case = None
                self.max_rss_mb = max(self.max_rss_mb, rss)
                self.outcomes["ok" if detail == "ok" else "refused" if outcome == "ok" else outcome] += 1
                if outcome != "ok":
                    self._finding(case, outcome, detail)
            elif time.perf_counter() - worker.since >= self.timeout:
                self._replace(worker)
                self.hangs += 1
                self._finding(case, "hang", f"no answer within {self.timeout:g} s")

    def _finding(self, case: Case, kind: str, detail: str) -> None:
        number = len(self.findings) + 1
        last = detail.strip().splitlines()[-1] if detail.strip() else kind
        record = {"n": number, "target": case.target, "kind": kind, "error": last, "mutation": case.mutation}
        self.findings.append(record)
        save_case(case, self.findings_dir / f"{number:04d}-{case.target}", kind=kind, traceback=detail)
        print(f"FINDING {number} [{case.target}] {kind}: {last} <- {'; '.join(case.mutation)[:300]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop after this long (15 minutes)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--memory-mb", type=int, default=100, help="peak memory growth per case that is a finding")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="cases run at once, one process each")
    parser.add_argument("--targets", nargs="*", help="only these targets (default: all)")
    parser.add_argument("--findings", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz-findings")
    args = parser.parse_args()
    shutil.rmtree(args.findings, ignore_errors=True)
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    runner = Runner(args.timeout, args.memory_mb, args.findings, args.workers)
    started = time.perf_counter()
    strategy = any_case(args.targets)
    chunk = 0
    while runner.cases < args.cases and time.perf_counter() - started < args.max_seconds:
        n = min(CHUNK, args.cases - runner.cases)

        @seed(args.seed * 1_000_003 + chunk)
        @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def one_chunk(data) -> None:
            case = data.draw(strategy)  # drawn even when time is up: hypothesis checks that draws replay alike
            if time.perf_counter() - started < args.max_seconds:
                runner.run(case)

        one_chunk()
        chunk += 1
    runner.drain()
    seconds = time.perf_counter() - started
    import torch

    from xnet_core.inference import cpu_has_bf16

    print(f"{runner.cases} cases in {seconds:.0f} s ({runner.cases / seconds:.1f}/s): {dict(runner.outcomes)}")
    print(json.dumps({"cases": runner.cases, "findings": len(runner.findings), "hangs": runner.hangs,
                      "max_rss_mb": round(runner.max_rss_mb, 1), "seconds": round(seconds, 1),
                      "by_target": dict(runner.by_target), "device": "cpu (readers)", "torch": torch.__version__,
                      "cpu_bf16": cpu_has_bf16()}))


if __name__ == "__main__":
    main()
