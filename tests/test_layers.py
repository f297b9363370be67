"""The checked layers: import-linter's contracts in pyproject.toml hold (``make test`` runs this).

xnet_core and explain never import PySide6 or pyqtgraph, and app -> explain -> xnet_core. lint-imports
follows every import, chains through other project modules included, which a plain test cannot see.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # the venv's, next to its python


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    # Fails rather than skips without it, so that CI cannot pass with the layers unchecked.
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing; install the test extras: pip install -e '.[test]'"
    # --no-cache: nothing written into the working tree; the whole check takes about a second.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_are_kept() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout  # both contracts were read, none skipped


def test_broken_contracts_fail(tmp_path: Path) -> None:
    # Contracts of the same two kinds that the code breaks (the layers upside down; app does import Qt),
    # so a violation is reported, external packages included.
    config = tmp_path / "broken.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    app\n    xnet_core\n    explain\ninclude_external_packages = True\n\n"
        "[importlinter:contract:reversed]\nname = reversed layers\ntype = layers\n"
        "layers =\n    xnet_core\n    explain\n    app\n\n"
        "[importlinter:contract:qt]\nname = app without Qt\ntype = forbidden\n"
        "source_modules =\n    app\nforbidden_modules =\n    PySide6\n"
    )
    result = lint_imports(str(config))
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Contracts: 0 kept, 2 broken." in result.stdout, result.stdout + result.stderr
