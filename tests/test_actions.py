"""The window's one table of actions (app/actions.py): Help lists every key, no key is bound twice,
and the menus, toolbars and callbacks the table names exist."""

from __future__ import annotations

from collections import Counter

import pytest
from PySide6.QtCore import QSettings, QStandardPaths
from PySide6.QtGui import QKeySequence

from app.actions import ACTIONS, ActionSpec, key_text, shortcut_rows
from app.view_state import ViewState

SPECS = [row for row in ACTIONS if isinstance(row, ActionSpec)]


def test_every_key_is_in_the_help_list(qapp) -> None:
    help_keys = {key for key, _ in shortcut_rows()}
    for spec in SPECS:
        if spec.key and key_text(spec.key):
            assert key_text(spec.key) in help_keys, f"{spec.id}: {key_text(spec.key)} missing from Help"
    for key in ("T", "D", "Shift+F", "Shift+Del"):  # those Help had lost
        assert key in help_keys


def test_no_key_is_bound_twice(qapp) -> None:
    keys = [QKeySequence(spec.key).toString() for spec in SPECS if spec.key]
    keys = [key for key in keys if key]
    twice = [key for key, n in Counter(keys).items() if n > 1]
    assert not twice, f"bound twice: {twice}"
    assert len({spec.id for spec in SPECS}) == len(SPECS), "action ids are unique"


def test_toggles_name_view_state_fields() -> None:
    fields = set(ViewState().events.names)
    for spec in SPECS:
        assert not (spec.state and spec.callback), spec.id
        if spec.state:
            assert spec.state in fields, spec.id
        else:
            assert spec.callback, f"{spec.id} does nothing"


@pytest.fixture
def window(qtbot, tmp_path):
    import nibabel as nib
    import numpy as np

    from app.window import ViewerWindow
    from xnet_core.volume import load_volume

    QStandardPaths.setTestModeEnabled(True)
    QSettings().clear()
    path = tmp_path / "tiny.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(6 * 5 * 7, dtype=np.float32).reshape(6, 5, 7), np.eye(4)), path)
    win = ViewerWindow(load_volume(path), None)
    qtbot.addWidget(win)
    return win


def test_the_window_gets_every_action_with_its_key_menu_and_toolbar(window) -> None:
    from functools import reduce

    for spec in SPECS:
        action = window.actions_by_name[spec.id]
        assert action.shortcut() == QKeySequence(spec.key) if spec.key else action.shortcut().isEmpty()
        if spec.callback:
            assert callable(reduce(getattr, spec.callback.split("."), window)), spec.callback
        for menu in spec.menu:
            assert action.associatedObjects(), f"{spec.id} is in no menu ({menu})"
    toolbar_ids = [spec.id for spec in SPECS if spec.toolbar == "Overlays"]
    assert toolbar_ids[:5] == ["segmentation", "outline", "heatmaps", "radiological", "single"]


def test_a_toggle_and_its_view_state_field_follow_each_other(window) -> None:
    action = window.actions_by_name["heatmaps"]
    assert action.isChecked() and window.state.show_heatmaps
    action.trigger()
    assert not window.state.show_heatmaps
    window.state.show_heatmaps = True
    assert action.isChecked()
