"""One finding of the lesion table explained alone, in the viewer (issue 26, docs/explanations.md).

A double-click or Enter on a finding's row, **K** on the selected row, or the table's context menu
jumps to the slice of that finding's largest cross-section and shows the maps of the lesion logit
summed over that lesion's voxels alone; the map panels say "finding K". **L** then runs LIME for that
finding, **E** explains every slice of it. **Esc** (when no LIME is left to cancel) or "All findings"
goes back to the maps of the whole predicted mask.

The model worker (``app.jobs``) does the work off the UI thread: it labels the mask to find the
finding's own voxels, then explains it slice by slice as the user moves through it, through the same
engine and cache as ``xnet explain --lesion K``. The window stays as it is: this module uses its
navigator, model session, view state, panel grid and a redraw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QMainWindow

from app.study import FindingMaps
from app.view_state import Event

if TYPE_CHECKING:
    from explain.engine import SliceExplanation


class FindingsView(QObject):
    """The window's finding explained alone: asks the worker, keeps its maps and hands them to the grid."""

    def __init__(self, window: QMainWindow, redraw: Callable[[], None]) -> None:
        """``window``: the ``app.window.ViewerWindow`` (not imported: it imports this module)."""
        super().__init__(window)
        self.window, self.redraw = window, redraw
        self.pending: int | None = None  # a finding asked for whose voxels the worker is still finding
        navigator, model = window.navigator, window.model
        navigator.explainFinding.connect(self.explain)
        navigator.allFindings.connect(self.leave)
        model.findingLocated.connect(self._on_located)
        model.findingExplained.connect(self._on_explained)
        model.findingFailed.connect(self._on_failed)
        model.started.connect(self.leave)  # another scan: its table numbers other lesions
        window.state.events.slice.connect(self._on_slice)
        # Another threshold labels another mask: finding K may be another lesion there.
        window.controls.threshold_box.valueChanged.connect(lambda _value: self.leave())
        for name in ("explain_finding", "all_findings"):
            navigator.table.addAction(window.actions_by_name[name])
        navigator.table.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)

    @property
    def focus(self) -> FindingMaps | None:
        """The finding whose maps the panels show (None: the whole mask's)."""
        focus = self.window.grid.focus
        return focus if focus is not None and focus.study is self.window.study else None

    # -- commands (app.actions) ------------------------------------------------------------------
    def explain(self, number: int) -> None:
        """Finding ``number`` of the lesion table alone, on the slice of its largest cross-section."""
        window = self.window
        if window.model.worker is None:
            self._say("No model is running, so no finding can be explained: choose weights with File → Choose "
                      "weights…")
            return
        if not window.study.segmentation_complete:
            self._say("The findings can be explained one by one once the model has segmented the whole scan "
                      "(progress in the status bar).")
            return
        if window.navigator.row(number) is None:
            self._say(f"There is no finding {number} in the lesion table at threshold {window.study.threshold:.2f}; "
                      "choose a row of the table.")
            return
        focus = self.focus
        if focus is not None and focus.number == number:
            window.state.slice = focus.largest_slice
            return
        self.leave()
        self.pending = number
        window.navigator.show_focus(f"Finding {number}: finding its largest cross-section…")
        window.model.worker.request_finding(number)

    def explain_selected(self) -> None:
        """K: the finding on the lesion table's current row."""
        number = self.window.navigator.selected_number()
        if number is None:
            self._say("Select a finding in the Lesions panel's table first, then press K (or Enter, or "
                      "double-click its row).")
            return
        self.explain(number)

    def leave(self) -> None:
        """Back to the maps of the whole predicted mask."""
        shown = self.window.grid.focus is not None or self.pending is not None
        self.pending = None
        self.window.grid.focus = None
        self.window.navigator.show_focus(None)
        if shown:
            self.redraw()

    def escape(self) -> None:
        """Esc: cancel a queued or running LIME; with none, leave the finding for the whole mask."""
        worker = self.window.model.worker
        if worker is not None and worker.lime_pending():
            self.window.cancel_lime()
        elif self.window.grid.focus is not None or self.pending is not None:
            self.leave()
        else:
            self.window.cancel_lime()

    def request_lime(self) -> None:
        """L: LIME of this slice, for the finding when one is explained alone."""
        focus, z = self.focus, self.window.current_slice
        if focus is None:
            self.window.request_lime()
            return
        if z not in focus.slices:
            self._say(f"Finding {focus.number} does not reach slice z {z}: go to one of its slices "
                      f"({focus.slices[0]}–{focus.slices[-1]}) for its LIME.")
            return
        self.window.model.worker.request_finding_maps(focus.number, [z], lime=True)
        self.window.controls.progress_label.setText(f"LIME z {z} (finding {focus.number}): queued")

    def explain_all(self) -> None:
        """E: every slice of the finding when one is explained alone, else every lesion slice."""
        focus = self.focus
        if focus is None:
            self.window.explain_all()
            return
        for z in focus.slices:
            self._ask(focus, z)

    # -- the worker's answers ---------------------------------------------------------------------
    def _on_located(self, number: int, threshold: float, own: np.ndarray, z: int) -> None:
        window = self.window
        row = window.navigator.row(number)
        if number != self.pending or threshold != window.study.threshold or row is None:
            return  # another finding was asked for since, or the threshold moved
        self.pending = None
        focus = window.grid.focus = FindingMaps(window.study, number, row, own, threshold)
        window.navigator.show_focus(
            f"The maps explain finding {number} alone ({row['volume_ml']:.2f} ml, slices {focus.slices[0]}–"
            f"{focus.slices[-1]}), shown on slice z {z}, its largest cross-section. Esc or the button below: "
            "the whole mask.")
        self._ask(focus, z)
        if window.state.slice != z:
            window.state.slice = z  # redrawn by the window
        else:
            self.redraw()

    def _on_explained(self, result: SliceExplanation) -> None:
        focus = self.focus
        if focus is None or result.params.get("lesion") != focus.number or \
                result.params.get("threshold") != focus.threshold:
            return  # another finding's (or a report's) map
        focus.add_explanation(result)
        self.redraw()

    def _on_failed(self, number: int, message: str) -> None:
        focus = self.focus
        if number == self.pending or (focus is not None and focus.number == number):
            self.leave()
            self._say(f"Finding {number} cannot be explained alone: {message}")

    def _on_slice(self, event: Event) -> None:
        focus = self.focus
        if focus is not None and event.value in focus.slices:
            self._ask(focus, event.value)

    def _ask(self, focus: FindingMaps, z: int) -> None:
        """The finding's CAMs on slice ``z`` unless they are here (the worker drops repeated requests)."""
        worker = self.window.model.worker
        if worker is not None and focus.status("gradcam", z) is None:
            worker.request_finding_maps(focus.number, [z])

    def _say(self, message: str) -> None:
        self.window.statusBar().showMessage(message, 10000)
