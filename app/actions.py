"""Every command of the window in one table: it builds the toolbars, the menus and the Help's list
of shortcuts, so that a key shown in Help is the key bound, and no key is bound twice.

A row names its callback by attribute path on the window (``"reader.undo"``) or, for a toggle, the
``ViewState`` field it shows (bound both ways: the action follows the state, the state the action).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu, QToolBar

from app.drawing import PLANES
from app.view_state import ViewState

PAGE_STEP = 10  # PageUp / PageDown
WINDOW_PRESETS = ((1, 99.5), (0.5, 99.9), (5, 95), (0, 100))
MENUS = ("&File", "&Help", "&Reader", "&View")  # the menu bar's order
TOOLBARS = ("Overlays", "Reader")  # one row each


@dataclass(frozen=True)
class ActionSpec:
    """One row of the table. ``key``: a shortcut string or a ``QKeySequence.StandardKey``;
    ``menu``: "&File" or a submenu path "&View/Plane"; ``help``: its line in Help (default: the title)."""

    id: str
    title: str
    key: str | QKeySequence.StandardKey = ""
    menu: tuple[str, ...] = ()
    toolbar: str = ""
    callback: str = ""
    state: str = ""  # a ViewState field: a checkable action that shows and sets it
    checkable: bool = False
    args: tuple = ()
    help: str = ""
    tooltip: str = ""


@dataclass(frozen=True)
class Separator:
    menu: str


@dataclass(frozen=True)
class Submenu:
    """A menu the window fills itself (recent files, the model-input choice)."""

    id: str
    title: str
    menu: str


Row = ActionSpec | Separator | Submenu

# Keys that are not actions: the window's own key and mouse handling.
EXTRA_SHORTCUTS = (
    ("Up / Down, mouse wheel", "next / previous slice (Shift: 5 slices)"),
    ("PageUp / PageDown", f"{PAGE_STEP} slices"),
    ("Ctrl + wheel, left drag", "zoom, pan (all panels together)"),
    ("Right drag", "window / level (horizontal: width, vertical: level)"),
    ("Enter, double-click (lesion table)", "explain that finding alone (its largest cross-section)"),
)

_VIEW, _READER = "&View", "&Reader"
ACTIONS: tuple[Row, ...] = (
    ActionSpec("open", "Open scan…", QKeySequence.StandardKey.Open, ("&File",), callback="choose_scan",
               help="open a scan (NIfTI file)"),
    ActionSpec("open_folder", "Open DICOM folder…", "Ctrl+Shift+O", ("&File",), callback="choose_folder",
               help="open a DICOM folder"),
    ActionSpec("add_sequence", "Add sequence of this patient…", menu=("&File",), callback="choose_sequence"),
    ActionSpec("open_pacs", "Open from PACS…", menu=("&File",), callback="pacs.open_from_pacs",
               help="find a study on the PACS, retrieve a series and open it"),
    Submenu("recent", "Open recent", "&File"),
    ActionSpec("weights", "Choose weights…", menu=("&File",), callback="choose_weights"),
    Separator("&File"),
    ActionSpec("load_reader", "Load reader mask…", menu=("&File",), callback="choose_reader_mask"),
    ActionSpec("save_reader", "Save reader mask", "Ctrl+S", ("&File",), callback="reader.save",
               help="save the reader's mask (and notes)"),
    ActionSpec("save_reader_as", "Save reader mask as…", "Ctrl+Shift+S", ("&File",), callback="reader.save_as",
               help="save the reader's mask (and notes) as"),
    Separator("&File"),
    ActionSpec("report", "Export report (PDF)…", "Ctrl+P", ("&File",), callback="export_report",
               help="export the PDF report"),
    *(ActionSpec(f"png_{scale}", f"{scale}× ({scale} image pixels per screen pixel)",
                 menu=("&File/Export view as PNG",), callback="export_png", args=(None, scale)) for scale in (1, 2, 4)),
    ActionSpec("nifti", "Export mask, probabilities and maps as NIfTI…", menu=("&File",), callback="export_nifti"),
    ActionSpec("send_pacs", "Send results to PACS…", menu=("&File",), callback="pacs.send_results",
               help="send the mask as DICOM SEG (and a report PDF) to the PACS"),
    ActionSpec("pacs_settings", "PACS settings…", menu=("&File",), callback="pacs.edit_settings"),
    ActionSpec("bookmark", "Bookmark slice", "B", ("&File",), callback="state.toggle_bookmark",
               help="bookmark this slice for the report"),
    Separator("&File"),
    ActionSpec("quit", "Quit", QKeySequence.StandardKey.Quit, ("&File",), callback="close", help="quit"),
    ActionSpec("shortcuts", "Keyboard shortcuts", menu=("&Help",), callback="show_shortcuts"),
    ActionSpec("segmentation", "Segmentation", "S", (_VIEW,), "Overlays", state="show_segmentation",
               help="segmentation overlay on/off"),
    ActionSpec("outline", "Outline", "O", (_VIEW,), "Overlays", state="outline_mode", help="model mask filled / outline"),
    ActionSpec("heatmaps", "Heatmaps", "H", (_VIEW,), "Overlays", state="show_heatmaps", help="heatmaps on/off"),
    ActionSpec("radiological", "Radiological", "R", (_VIEW,), "Overlays", state="radiological",
               help="radiological / neurological display"),
    ActionSpec("single", "Single panel", "F", (_VIEW,), "Overlays", state="single_panel",
               help="single panel / four panels"),
    ActionSpec("opacity_down", "Opacity −", "-", toolbar="Overlays", callback="opacity_down",
               help="overlay opacity down"),
    ActionSpec("opacity_up", "Opacity +", "+", toolbar="Overlays", callback="opacity_up", help="overlay opacity up"),
    ActionSpec("lime", "LIME this slice", "L", toolbar="Overlays", callback="findings.request_lime",
               help="LIME on this slice (for the finding, when one is explained alone)"),
    ActionSpec("cancel", "Cancel LIME", "Esc", toolbar="Overlays", callback="findings.escape",
               help="cancel LIME; with none running, back from one finding to the whole mask's maps",
               tooltip="Cancel LIME (Esc); with no LIME running, back from one finding to the whole mask's maps"),
    ActionSpec("explain_all", "Explain all lesion slices", "E", toolbar="Overlays", callback="findings.explain_all",
               help="explain all lesion slices (Grad-CAM, Grad-CAM++, HiResCAM; of the finding explained alone)"),
    ActionSpec("explain_finding", "Explain selected finding alone", "K", ("&View/Findings",),
               callback="findings.explain_selected",
               help="explain the finding selected in the lesion table alone (also Enter or double-click)",
               tooltip="Maps of the selected finding alone, on its largest cross-section (K, Enter, double-click)"),
    ActionSpec("all_findings", "All findings (maps of the whole mask)", menu=("&View/Findings",),
               callback="findings.leave", tooltip="Back from one finding to the maps of the whole mask (Esc)"),
    ActionSpec("paint", "Paint", "P", (_READER,), "Reader", callback="set_paint_mode", checkable=True,
               help="paint the reader's mask (left drag; off: left drag pans)",
               tooltip="Paint the reader's lesion mask with the left button (P)"),
    ActionSpec("eraser", "Eraser", "X", (_READER,), "Reader", callback="set_eraser", checkable=True,
               help="eraser on/off while painting"),
    ActionSpec("brush_down", "Brush −", "[", (_READER,), "Reader", callback="reader.brush_smaller",
               help="brush smaller"),
    ActionSpec("brush_up", "Brush +", "]", (_READER,), "Reader", callback="reader.brush_larger", help="brush larger"),
    ActionSpec("fill", "Fill holes", "Shift+F", (_READER,), "Reader", callback="reader.fill_holes",
               help="fill the holes of the reader's mask on this section"),
    ActionSpec("clear", "Clear slice", "Shift+Del", (_READER,), "Reader", callback="reader.clear_section",
               help="clear the reader's mask on this section"),
    ActionSpec("undo", "Undo", "Ctrl+Z", (_READER,), "Reader", callback="reader.undo",
               help="undo a stroke, fill or clear"),
    ActionSpec("redo", "Redo", "Ctrl+Shift+Z", (_READER,), "Reader", callback="reader.redo",
               help="redo a stroke, fill or clear"),
    ActionSpec("reader_outline", "Reader outline", "M", (_READER, _VIEW), "Reader", state="show_reader",
               help="reader's mask outline on/off"),
    ActionSpec("template", "Template outline", "T", (_VIEW,), "Overlays", state="show_template",
               help="the template's brain outline (judge the registration)",
               tooltip="The template's brain outline, moved onto the scan by the registration: judge the alignment (T)"),
    ActionSpec("side", "Side by side", "D", (_VIEW,), "Overlays", state="side_by_side",
               help="two sequences side by side"),
    ActionSpec("panel_gradcampp", "Grad-CAM++ panel", menu=("&View/Maps shown",), state="panel_gradcampp",
               tooltip="Show the Grad-CAM++ map (Grad-CAM and LIME are always shown)"),
    ActionSpec("panel_hirescam", "HiResCAM panel", menu=("&View/Maps shown",), state="panel_hirescam",
               tooltip="Show the HiResCAM map: gradient x activation, faithful to a sum-of-logits target"),
    ActionSpec("attention_guide", "What each map shows", menu=("&Help",), callback="grid.show_attention_guide"),
    *(ActionSpec(f"plane_{plane}", plane.capitalize(), f"Ctrl+{n}", ("&View/Plane",), callback="set_plane",
                 args=(plane,), help=f"{plane} sections") for n, plane in enumerate(PLANES, start=1)),
    *(ActionSpec(f"preset_{low:g}_{high:g}", f"{low:g}–{high:g} % of brain intensities",
                 menu=("&View/Window/level presets",), callback="set_window_percentiles", args=(low, high))
      for low, high in WINDOW_PRESETS),
    ActionSpec("reset_window", "Reset window/level", menu=(_VIEW,), callback="reset_window"),
    Submenu("model_input", "Sequence that feeds the model", _VIEW),
)


def key_text(key: str | QKeySequence.StandardKey) -> str:
    """A key as Help shows it (a standard key as this platform binds it)."""
    return QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText) if key else ""


def shortcut_rows(table: tuple[Row, ...] = ACTIONS) -> list[tuple[str, str]]:
    """Help's list: the keys that are not actions, then every action that has a key."""
    rows = list(EXTRA_SHORTCUTS)
    for spec in table:
        key = key_text(spec.key) if isinstance(spec, ActionSpec) else ""
        if key:  # a standard key this platform leaves unbound has nothing to show
            rows.append((key, spec.help or spec.title))
    return rows


@dataclass
class BuiltActions:
    """The window's actions by id, its toolbars by name and the submenus it fills itself."""

    actions: dict[str, QAction] = field(default_factory=dict)
    toolbars: dict[str, QToolBar] = field(default_factory=dict)
    submenus: dict[str, QMenu] = field(default_factory=dict)


def _resolve(target: Any, path: str) -> Callable:
    return reduce(getattr, path.split("."), target)


def _make_action(window: QMainWindow, spec: ActionSpec, state: ViewState) -> QAction:
    action = QAction(spec.title, window)
    if spec.key:
        action.setShortcut(QKeySequence(spec.key))
    if spec.tooltip:
        action.setToolTip(spec.tooltip)
    if spec.state:
        action.setCheckable(True)
        action.setChecked(bool(getattr(state, spec.state)))
        action.toggled.connect(lambda on, name=spec.state: setattr(state, name, on))
        getattr(state.events, spec.state).connect(lambda event, a=action: a.setChecked(bool(event.value)))
    elif spec.checkable:
        action.setCheckable(True)
        action.toggled.connect(lambda on, path=spec.callback: _resolve(window, path)(on))
    else:
        # The callback is looked up when triggered: it may be replaced after the table is built.
        action.triggered.connect(lambda _checked=False, path=spec.callback, args=spec.args: _resolve(window, path)(*args))
    if spec.key:
        window.addAction(action)  # the key works wherever the focus is, menus and toolbars hidden or not
    return action


def build(window: QMainWindow, state: ViewState, table: tuple[Row, ...] = ACTIONS) -> BuiltActions:
    """The actions, menus and toolbars of ``table`` on ``window``; toolbars are returned unattached
    (the window adds its own widgets to them first)."""
    built = BuiltActions()
    menus = {name: window.menuBar().addMenu(name) for name in MENUS}

    def menu(path: str) -> QMenu:
        if path not in menus:
            parent, _, title = path.rpartition("/")
            menus[path] = menu(parent).addMenu(title)
        return menus[path]

    for name in TOOLBARS:
        toolbar = QToolBar(name.replace("&", ""))
        toolbar.setMovable(False)
        built.toolbars[name] = toolbar
    for row in table:
        if isinstance(row, Separator):
            menu(row.menu).addSeparator()
        elif isinstance(row, Submenu):
            built.submenus[row.id] = menu(row.menu).addMenu(row.title)
        else:
            action = built.actions[row.id] = _make_action(window, row, state)
            for path in row.menu:
                menu(path).addAction(action)
            if row.toolbar:
                built.toolbars[row.toolbar].addAction(action)
    return built
