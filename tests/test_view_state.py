"""The viewer's view model (app/view_state.py): plain Python, change events like napari's layer model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.view_state import EventEmitter, ViewState


def _state() -> ViewState:
    state = ViewState()
    state.reset_grid((6, 5, 7), (10.0, 90.0))
    return state


def test_every_field_round_trips_and_announces_its_change() -> None:
    state = _state()
    values = {"plane": "coronal", "cursor": (1, 2, 3), "zoom": ((0.0, 10.0), (-5.0, 5.0)), "background": "FLAIR",
              "colour_map": "viridis", "opacity": 0.3, "mask_opacity": 0.8, "radiological": False,
              "show_segmentation": False, "outline_mode": True, "show_heatmaps": False, "show_template": True,
              "show_reader": False, "single_panel": True, "side_by_side": True, "bookmarks": frozenset({2, 5}),
              "min_lesion_ml": 0.25}
    for name, value in values.items():
        seen = []
        getattr(state.events, name).connect(seen.append)
        old = getattr(state, name)
        setattr(state, name, value)
        assert getattr(state, name) == value, name
        assert [(e.type, e.source, e.value, e.old) for e in seen] == [(name, state, value, old)], name
        setattr(state, name, value)  # the same value again: no event
        assert len(seen) == 1, name


def test_the_slice_event_comes_with_the_cursor_and_only_when_z_moves() -> None:
    state = _state()
    order = []
    state.events.slice.connect(lambda e: order.append(("slice", e.value, e.old)))
    state.events.cursor.connect(lambda e: order.append(("cursor", e.value)))
    assert state.cursor == (3, 2, 3) and state.slice == 3
    state.slice = 5
    state.move(0, 0)  # x only: no slice event
    assert order == [("slice", 5, 3), ("cursor", (3, 2, 5)), ("cursor", (0, 2, 5))]


def test_cursor_and_opacities_are_clamped() -> None:
    state = _state()
    state.slice = 99
    assert state.slice == 6
    state.move(1, -4)
    assert state.cursor == (3, 0, 6)
    state.opacity, state.mask_opacity = 1.7, -0.2
    assert (state.opacity, state.mask_opacity) == (1.0, 0.0)
    with pytest.raises(ValueError):
        state.plane = "oblique"


def test_plane_index_follows_the_plane() -> None:
    state = _state()
    state.cursor = (1, 2, 3)
    assert state.plane_index == 3
    state.plane = "coronal"
    assert (state.fixed_axis, state.plane_index) == (1, 2)
    state.move(state.fixed_axis, 4)
    assert state.cursor == (1, 4, 3)


def test_each_background_keeps_its_window() -> None:
    state = _state()
    seen = []
    state.events.levels.connect(seen.append)
    state.levels = (20, 80)
    assert state.levels == (20.0, 80.0) and state.initial_levels == (10.0, 90.0)
    assert state.remember_levels("FLAIR", lambda: (0.0, 1.0)) == ((0.0, 1.0), (0.0, 1.0))
    state.background = "FLAIR"
    state.adjust_window(200, 0)  # one initial width wider
    assert state.levels == pytest.approx((-0.5, 1.5))
    state.background = ""
    assert state.levels == (20.0, 80.0)
    assert [e.value for e in seen] == [(20.0, 80.0), pytest.approx((-0.5, 1.5))]
    state.levels = (20, 80)  # unchanged: no event
    assert len(seen) == 2


def test_bookmarks_toggle_and_reset_grid_is_silent() -> None:
    state = _state()
    seen = []
    for name in state.events.names:
        getattr(state.events, name).connect(seen.append)
    state.toggle_bookmark()
    state.toggle_bookmark(1)
    assert state.bookmarks == {3, 1}
    state.toggle_bookmark(3)
    assert state.bookmarks == {1} and len(seen) == 3
    state.reset_grid((4, 4, 4), (0.0, 2.0))
    assert len(seen) == 3 and state.cursor == (2, 2, 2) and state.levels == (0.0, 2.0) and state.background == ""
    assert state.min_lesion_ml == 0.1  # stored for now; nothing filters by it yet


def test_emitter_order_disconnect_and_first_position() -> None:
    emitter = EventEmitter(source="me", name="x")
    calls = []
    a = emitter.connect(lambda e: calls.append("a"))
    emitter.connect(lambda e: calls.append("b"))
    emitter.connect(lambda e: calls.append("first"), position="first")
    emitter(1)
    assert calls == ["first", "a", "b"]
    emitter.disconnect(a)
    calls.clear()
    event = emitter(2, old=1)
    assert calls == ["first", "b"] and (event.type, event.source, event.value, event.old) == ("x", "me", 2, 1)
    emitter.disconnect()
    assert emitter(3) and calls == ["first", "b"]
    with pytest.raises(ValueError):
        emitter.connect(print, position="middle")


def test_the_view_model_imports_no_qt() -> None:
    code = "import sys, app.view_state, app.drawing, app.backgrounds, app.readout; print(any(m.startswith(('PySide6', 'pyqtgraph')) for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
