"""Bundled assets are found from a checkout and from an installed copy."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from xnet_core import assets
from xnet_core.errors import AssetError


def test_checkout_assets_hold_the_template_and_its_licence() -> None:
    root = assets.assets_dir()
    assert (root / assets.TEMPLATE_T1).is_file()
    assert (root / assets.TEMPLATE_GM).is_file() and (root / assets.TEMPLATE_WM).is_file()
    assert "McGill University" in (root / "template" / "LICENSE").read_text()


def test_demo_scan_falls_back_to_the_template_until_the_demo_case_exists() -> None:
    root = assets.assets_dir()
    expected = root / assets.DEMO_SCAN if (root / assets.DEMO_SCAN).is_file() else root / assets.TEMPLATE_T1
    assert assets.demo_scan_path() == expected


def test_installed_copy_is_found_under_the_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = tmp_path / "share" / "xnet-viewer" / "assets"
    (installed / "template").mkdir(parents=True)
    shutil.copy(assets.assets_dir() / assets.TEMPLATE_T1, installed / assets.TEMPLATE_T1)
    monkeypatch.delenv("XNET_ASSETS", raising=False)
    monkeypatch.setattr(assets, "__file__", str(tmp_path / "site-packages" / "xnet_core" / "assets.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert assets.assets_dir() == installed


def test_environment_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "template").mkdir()
    shutil.copy(assets.assets_dir() / assets.TEMPLATE_T1, tmp_path / assets.TEMPLATE_T1)
    monkeypatch.setenv("XNET_ASSETS", str(tmp_path))
    assert assets.assets_dir() == tmp_path


def test_missing_assets_and_weights_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XNET_ASSETS", str(tmp_path))
    monkeypatch.setattr(assets, "__file__", str(tmp_path / "x" / "xnet_core" / "assets.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    with pytest.raises(AssetError, match="reinstall X-Net Viewer or set XNET_ASSETS"):
        assets.assets_dir()
    monkeypatch.undo()
    if not (assets.assets_dir() / assets.DEMO_WEIGHTS).is_file():
        with pytest.raises(AssetError, match="use your own weights file"):
            assets.demo_weights_path()
