"""Where the bundled assets live, for a source checkout and for an installed copy.

Lookup order for the assets folder:
1. ``$XNET_ASSETS`` when set (a folder laid out like ``assets/``);
2. ``assets/`` next to the package (a source checkout or an editable install);
3. ``<sys.prefix>/share/xnet-viewer/assets`` (where a wheel install puts them, see pyproject.toml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from xnet_core.errors import AssetError

TEMPLATE_T1 = "template/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_GM = "template/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_WM = "template/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
DEMO_WEIGHTS = "weights/xnet-demo.pt"
DEMO_SCAN = "demo/demo_T1w.nii.gz"
DEMO_LESION = "demo/demo_lesion_mask.nii.gz"


def _candidates() -> list[Path]:
    found = []
    if os.environ.get("XNET_ASSETS"):
        found.append(Path(os.environ["XNET_ASSETS"]))
    found.append(Path(__file__).resolve().parent.parent / "assets")
    found.append(Path(sys.prefix) / "share" / "xnet-viewer" / "assets")
    return found


def assets_dir() -> Path:
    """The first assets folder that holds the template."""
    for candidate in _candidates():
        if (candidate / TEMPLATE_T1).is_file():
            return candidate
    searched = ", ".join(str(c) for c in _candidates())
    raise AssetError(f"bundled assets not found (searched {searched}); reinstall X-Net Viewer or set XNET_ASSETS.")


def asset_path(relative: str) -> Path:
    """Path of one bundled asset; ``AssetError`` when it is missing."""
    path = assets_dir() / relative
    if not path.is_file():
        raise AssetError(f"bundled asset {relative} is missing from {path.parent}; reinstall X-Net Viewer.")
    return path


def demo_scan_path() -> Path:
    """The demo case when it exists, else the template T1 (until the demo case is trained)."""
    root = assets_dir()
    demo = root / DEMO_SCAN
    return demo if demo.is_file() else root / TEMPLATE_T1


def demo_weights_path() -> Path:
    """The shipped demo weights; ``AssetError`` with what to do when they are not there yet."""
    path = assets_dir() / DEMO_WEIGHTS
    if not path.is_file():
        raise AssetError(
            f"the demo weights {path} are not bundled in this build; use your own weights file "
            "(see README.md, 'Your own weights').", parameter="weights"
        )
    return path


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/xnet-viewer/...`` (default ``~/.cache``): state and caches, never the repository."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base.joinpath("xnet-viewer", *parts)
