"""Damaged settings never stop the viewer (issue 29): each unusable value gives its default and a warning.

The settings file (QSettings, INI on Linux) is read at start-up by ``app.settings``' checked readers:
the view state (opacities, colour map, display convention), the brush radius, the recent files and
the PACS settings. Values of the wrong type, NaN, enormous or negative numbers, unknown names and
Qt's typed values (``@Variant(...)``, ``@Size(...)``) are written into a file at a temporary path;
the viewer itself is started on garbage in Qt's test settings. The fuzzer's ``settings`` target
(``benchmarks/fuzz_cases.py``) is replayed on freshly drawn cases too.
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from PySide6.QtCore import QSettings, QStandardPaths

from app.controls import saved_view_state
from app.files import recent_paths
from app.pacs_settings import load_settings
from app.reader_tools import DEFAULT_BRUSH, saved_brush_radius
from benchmarks.fuzz_cases import SETTINGS, SETTINGS_SEED, Case, run_case
from benchmarks.fuzz_mutations import _set_ini, settings_case
from tests.conftest import write_nifti
from xnet_core.volume import load_volume

READ = {  # setting -> (what the viewer makes of it, its default)
    "brush_radius": (saved_brush_radius, DEFAULT_BRUSH),
    "heatmap_opacity": (lambda store: saved_view_state(store).opacity, 0.5),
    "mask_opacity": (lambda store: saved_view_state(store).mask_opacity, 0.45),
    "colour_map": (lambda store: saved_view_state(store).colour_map, "inferno"),
    "radiological": (lambda store: saved_view_state(store).radiological, True),
    "recent_files": (recent_paths, []),
    "pacs/port": (lambda store: load_settings(store).port, 104),
    "pacs/timeout_s": (lambda store: load_settings(store).timeout_s, 30.0),
    "pacs/tls": (lambda store: load_settings(store).tls, False),
}
NAN_DOUBLE = r"@Variant(\0\0\0\x6\x7f\xf8\0\0\0\0\0\0)"
INT_5 = r"@Variant(\0\0\0\x2\0\0\0\x5)"
GARBAGE = [
    ("brush_radius", "-5"), ("brush_radius", "0"), ("brush_radius", "abc"), ("brush_radius", "nan"),
    ("brush_radius", "1e400"), ("brush_radius", "99999999999999999999999"), ("brush_radius", "2.5"),
    ("brush_radius", "@Size(1 2)"), ("brush_radius", "a, b"), ("brush_radius", "true"), ("brush_radius", NAN_DOUBLE),
    ("heatmap_opacity", "nan"), ("heatmap_opacity", "inf"), ("heatmap_opacity", "1e300"), ("heatmap_opacity", "-0.5"),
    ("heatmap_opacity", NAN_DOUBLE), ("heatmap_opacity", "@ByteArray(0.5)"), ("mask_opacity", "true"),
    ("mask_opacity", "abc"), ("colour_map", "rainbow"), ("colour_map", "Inferno"), ("colour_map", "@ByteArray(jet)"),
    ("colour_map", "jet, viridis"), ("colour_map", INT_5), ("radiological", "maybe"), ("radiological", INT_5),
    ("radiological", "@Invalid()"), ("recent_files", INT_5), ("recent_files", "@Rect(1 2 3 4)"),
    ("pacs/port", "abc"), ("pacs/port", "-1"), ("pacs/port", "70000"), ("pacs/port", "104.5"),
    ("pacs/timeout_s", "inf"), ("pacs/timeout_s", "nan"), ("pacs/timeout_s", "0"), ("pacs/tls", "perhaps"),
]


_names = itertools.count()


def settings_file(folder: Path, edits: dict[str, str | None]) -> QSettings:
    """The seed settings with ``edits`` (raw INI values; None removes the line), as the viewer's store.
    Each file gets a name of its own: Qt keeps a settings file it has read, by name."""
    lines = SETTINGS_SEED.splitlines()
    for key, value in edits.items():
        lines = _set_ini(lines, key, value)
    path = folder / f"{next(_names)}-{SETTINGS}"
    path.write_text("\n".join(lines) + "\n")
    return QSettings(str(path), QSettings.Format.IniFormat)


@pytest.mark.parametrize(("key", "raw"), GARBAGE, ids=[f"{k}={v}" for k, v in GARBAGE])
def test_an_unusable_value_gives_its_default_and_a_warning(tmp_path: Path, caplog, key: str, raw: str) -> None:
    read, default = READ[key]
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        got = read(settings_file(tmp_path, {key: raw}))
    assert got == default and type(got) is type(default)
    assert any(key in record.getMessage() and "default" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("key", sorted(READ))
def test_good_and_missing_values_are_read_without_a_warning(tmp_path: Path, caplog, key: str) -> None:
    read, default = READ[key]
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        assert read(settings_file(tmp_path, {})) is not None
        assert read(settings_file(tmp_path, {} if key.startswith("pacs/") else {key: None})) == default
    assert not caplog.records


def test_saved_values_in_range_are_kept(tmp_path: Path) -> None:
    store = settings_file(tmp_path, {"brush_radius": "7", "heatmap_opacity": "0.8", "colour_map": "jet",
                                     "radiological": "false", "pacs/port": "11112", "pacs/tls": "true"})
    state = saved_view_state(store)
    assert (saved_brush_radius(store), state.opacity, state.colour_map, state.radiological) == (7, 0.8, "jet", False)
    assert (load_settings(store).port, load_settings(store).tls) == (11112, True)


def test_a_one_item_recent_files_list_is_one_path(tmp_path: Path) -> None:
    """Qt's INI format saves a one-item list as plain text; read back, it was one menu entry per character."""
    store = QSettings(str(tmp_path / "recent.conf"), QSettings.Format.IniFormat)
    store.setValue("recent_files", ["/data/sub-01_T1w.nii.gz"])
    store.sync()
    again = QSettings(str(tmp_path / "recent.conf"), QSettings.Format.IniFormat)
    assert recent_paths(again) == ["/data/sub-01_T1w.nii.gz"]


@settings(max_examples=40, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=settings_case())
def test_fuzzed_settings_files_are_read(case: Case, tmp_path_factory) -> None:
    assert run_case(case, tmp_path_factory.mktemp("settings")) == "ok"


def test_the_viewer_starts_on_garbage_settings(qtbot, caplog, tmp_path: Path) -> None:
    """The window, the reader's tools, the recent-files menu and the PACS settings all start from the
    defaults when Qt's (test) settings hold garbage of every kind."""
    from app.window import ViewerWindow

    QStandardPaths.setTestModeEnabled(True)
    store = QSettings()
    store.clear()
    garbage = {"brush_radius": "abc", "heatmap_opacity": math.nan, "mask_opacity": 1e300, "colour_map": "rainbow",
               "radiological": "maybe", "recent_files": {"not": "a list"}, "pacs/host": "pacs.example.org",
               "pacs/port": "abc", "pacs/timeout_s": -3}
    for key, value in {**garbage, "pacs/called_aet": "ORTHANC"}.items():
        store.setValue(key, value)
    store.sync()
    caplog.set_level(logging.WARNING, logger="app.settings")
    try:
        grid = np.linspace(0, 1, 8 * 9 * 6, dtype=np.float32).reshape(8, 9, 6)
        window = ViewerWindow(load_volume(write_nifti(tmp_path / "tiny.nii.gz", grid)), None)
        qtbot.addWidget(window)
        window.show()
        state = window.state
        assert (state.opacity, state.mask_opacity, state.colour_map, state.radiological) == (0.5, 0.45, "inferno", True)
        assert window.controls.colour_box.currentText() == "inferno"
        assert window.reader.brush_radius == DEFAULT_BRUSH
        assert window.recent.menu.actions() == []
        assert (load_settings().port, load_settings().timeout_s) == (104, 30.0)
        warned = " ".join(record.getMessage() for record in caplog.records)
        assert all(key in warned for key in garbage if key != "pacs/host")
        window.reader.set_brush(5)  # a change saves a good value again
        assert saved_brush_radius() == 5
    finally:
        QSettings().clear()
