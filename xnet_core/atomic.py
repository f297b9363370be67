"""Files that appear whole or not at all: written beside their target, flushed, then renamed over it."""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from xnet_core.errors import SaveError


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` (one per process and thread) to write to: renamed over ``path`` when the
    block ends without error, removed otherwise. ``suffix`` ends the temporary name, for writers that
    pick the format by it (nibabel, ITK, numpy).

    A write or rename that fails (full disk, read-only folder, no permission) raises ``SaveError`` naming
    ``path`` rather than the temporary file; it is an ``OSError`` too, with the same ``errno``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except SaveError:
        raise
    except OSError as error:
        raise SaveError(f"{path}: could not be saved ({error.strerror or error}); any previous file of that "
                        "name is unchanged. Free some space or choose another folder.", error.errno) from error
    finally:
        with suppress(OSError):  # a folder gone read-only must not hide why the write failed
            tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    """Write to a temporary file in the same folder, flush it to disk, then rename over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)
