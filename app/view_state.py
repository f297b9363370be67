"""What the viewer shows, as plain Python (no Qt): plane, cursor, zoom, window/level per background,
colour map, opacities, display convention, show flags, bookmarks and the minimum finding size.

Every field announces its changes the way napari's layer model does: ``state.events.opacity.connect(cb)``
calls ``cb(event)`` with ``event.value`` (and ``event.old``) after each assignment that changes it.
The window subscribes and draws; tests and exports read and set the state without a display.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from app.drawing import PLANE_AXES, PLANES
from xnet_core import DEFAULT_MIN_LESION_ML

Levels = tuple[float, float]


@dataclass(frozen=True)
class Event:
    """One change: which field (``type``), of which object (``source``), its new and old values."""

    type: str
    source: Any
    value: Any
    old: Any = None


class EventEmitter:
    """Callbacks of one kind of event, called in the order they connected (``position="first"``
    puts one ahead: a subscriber that must see the change before anyone redraws)."""

    def __init__(self, source: Any, name: str) -> None:
        self.source, self.name = source, name
        self.callbacks: list[Callable[[Event], Any]] = []

    def connect(self, callback: Callable[[Event], Any], position: str = "last") -> Callable[[Event], Any]:
        if position not in ("first", "last"):
            raise ValueError(f"position must be 'first' or 'last', not {position!r}")
        if callback not in self.callbacks:
            self.callbacks.insert(0 if position == "first" else len(self.callbacks), callback)
        return callback

    def disconnect(self, callback: Callable[[Event], Any] | None = None) -> None:
        """Drop one callback, or every one when None."""
        if callback is None:
            self.callbacks.clear()
        elif callback in self.callbacks:
            self.callbacks.remove(callback)

    def __call__(self, value: Any = None, old: Any = None) -> Event:
        event = Event(self.name, self.source, value, old)
        for callback in list(self.callbacks):  # a callback may disconnect itself
            callback(event)
        return event


class EmitterGroup:
    """One ``EventEmitter`` per name, as attributes: ``group.slice.connect(...)``."""

    def __init__(self, source: Any, names: Iterable[str]) -> None:
        self._emitters = {name: EventEmitter(source, name) for name in names}

    def __getattr__(self, name: str) -> EventEmitter:
        try:
            return self.__dict__["_emitters"][name]
        except KeyError:
            raise AttributeError(f"no event {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._emitters

    @property
    def names(self) -> list[str]:
        return list(self._emitters)


@lru_cache(maxsize=1)
def _emitting_fields() -> tuple[str, ...]:
    """The fields whose assignment emits an event of the same name."""
    return tuple(f.name for f in fields(ViewState) if f.name != "levels_by_background")


@dataclass(eq=False)
class ViewState:
    """``cursor``: the RAS voxel ``(x, y, z)`` whose sections are shown; ``slice`` is its axial ``z``
    (the user-facing slice number). ``background`` names the sequence under the overlays ("" = the
    model input); each background keeps its own window/level. ``zoom``: the panels' shown rectangle
    ``((x0, x1), (y0, y1))`` in mm, None until the panels report one."""

    shape: tuple[int, int, int] = (1, 1, 1)
    plane: str = "axial"
    cursor: tuple[int, int, int] = (0, 0, 0)
    zoom: tuple[tuple[float, float], tuple[float, float]] | None = None
    background: str = ""
    colour_map: str = "inferno"
    opacity: float = 0.5  # the heatmaps'
    mask_opacity: float = 0.45  # the filled model mask's
    radiological: bool = True
    show_segmentation: bool = True
    outline_mode: bool = False
    show_heatmaps: bool = True
    show_template: bool = False
    show_reader: bool = True
    single_panel: bool = False
    side_by_side: bool = False
    bookmarks: frozenset[int] = frozenset()  # axial slices marked for the report
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML  # the lesion table's smallest finding; masks keep every component
    panel_gradcampp: bool = True  # the map panels: Grad-CAM and LIME always, Grad-CAM++ and HiResCAM by choice
    panel_hirescam: bool = False
    levels_by_background: dict[str, tuple[Levels, Levels]] = field(default_factory=dict)  # (current, initial)

    def __post_init__(self) -> None:
        self.events = EmitterGroup(self, [*_emitting_fields(), "slice", "levels"])

    def __setattr__(self, name: str, value: Any) -> None:
        events = self.__dict__.get("events")
        if events is None or name not in _emitting_fields():  # properties (slice, levels) emit themselves
            super().__setattr__(name, value)
            return
        value = self._checked(name, value)
        old = self.__dict__.get(name)
        super().__setattr__(name, value)
        if old != value:
            if name == "cursor" and old[2] != value[2]:
                events.slice(value[2], old[2])  # first: the model worker hears of the slice at once
            getattr(events, name)(value, old)

    def _checked(self, name: str, value: Any) -> Any:
        if name == "plane" and value not in PLANES:
            raise ValueError(f"plane must be one of {', '.join(PLANES)}, not {value!r}")
        if name == "cursor":
            return tuple(min(max(int(v), 0), n - 1) for v, n in zip(value, self.shape))
        if name in ("opacity", "mask_opacity"):
            return float(min(max(value, 0.0), 1.0))
        if name == "bookmarks":
            return frozenset(int(z) for z in value)
        if name == "min_lesion_ml":
            return max(float(value), 0.0)
        return value

    @property
    def heatmap_methods(self) -> tuple[str, ...]:
        """The methods whose map panels are shown, in the panels' order."""
        chosen = {"gradcampp": self.panel_gradcampp, "hirescam": self.panel_hirescam}
        return tuple(m for m in ("gradcam", "gradcampp", "hirescam", "lime") if chosen.get(m, True))

    # -- slices ------------------------------------------------------------------------------
    @property
    def slice(self) -> int:
        """The axial slice z, whatever plane is shown."""
        return self.cursor[2]

    @slice.setter
    def slice(self, z: int) -> None:
        self.move(2, z)

    @property
    def fixed_axis(self) -> int:
        """The axis the shown plane holds fixed (z for axial)."""
        return PLANE_AXES[self.plane][2]

    @property
    def plane_index(self) -> int:
        """The index of the shown section along the plane's fixed axis."""
        return self.cursor[self.fixed_axis]

    def move(self, axis: int, index: int) -> None:
        """The cursor to ``index`` on ``axis`` (clamped to the grid)."""
        cursor = list(self.cursor)
        cursor[axis] = index
        self.cursor = tuple(cursor)

    def reset_grid(self, shape: tuple[int, int, int], levels: Levels) -> None:
        """Another scan: its grid, the cursor at its centre, the model input as background with
        ``levels``. Silent (no events): the window redraws everything after a new scan."""
        self.__dict__.update(shape=tuple(int(n) for n in shape), cursor=tuple(int(n) // 2 for n in shape),
                             background="", levels_by_background={"": (levels, levels)})

    def toggle_bookmark(self, z: int | None = None) -> None:
        """Mark or unmark axial slice ``z`` (default: the current one)."""
        self.bookmarks = self.bookmarks ^ {self.slice if z is None else int(z)}

    # -- window / level --------------------------------------------------------------------
    @property
    def levels(self) -> Levels:
        """The current background's window (low, high)."""
        return self.levels_by_background[self.background][0]

    @levels.setter
    def levels(self, value: Levels) -> None:
        old, initial = self.levels_by_background[self.background]
        value = (float(value[0]), float(value[1]))
        self.levels_by_background[self.background] = (value, initial)
        if value != old:
            self.events.levels(value, old)

    @property
    def initial_levels(self) -> Levels:
        return self.levels_by_background[self.background][1]

    def remember_levels(self, background: str, initial: Callable[[], Levels]) -> tuple[Levels, Levels]:
        """(current, initial) window of a background, ``initial()`` computing it the first time."""
        if background not in self.levels_by_background:
            window = initial()
            self.levels_by_background[background] = (window, window)
        return self.levels_by_background[background]

    def adjust_window(self, dx: float, dy: float) -> None:
        """Right drag: ``dx`` widens the window, ``dy`` raises the level (in 1/200 of the initial width)."""
        low, high = self.levels
        width, level = high - low, (high + low) / 2
        span = self.initial_levels[1] - self.initial_levels[0]
        width = max(width + dx * span / 200, span / 1000)
        level = level + dy * span / 200
        self.levels = (level - width / 2, level + width / 2)
