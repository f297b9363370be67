"""The grid of linked panels: segmentation and three or four maps (Grad-CAM and LIME, Grad-CAM++ and
HiResCAM by choice) on one section, plus the side-by-side mode's second sequence. One zoom and pan for
all; ``draw`` paints what a ``ViewState`` and a ``Study`` say, and shares one displayed copy of the
scan and of each outline between panels.

A map is drawn only inside the brain the model's input holds (the template's brain on its grid, the
scan's own brain mask on a registered scan): the model saw nothing beyond its 224x192 window, and
drawing its edge would show a hard rectangle that means nothing. Where a visible share of a map's
energy lies outside, the panel says how much.

While one finding is explained alone (``focus``, an ``app.study.FindingMaps``), the map panels draw its
maps, outline that lesion alone and say "finding K" in their titles and captions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QWidget

from app.drawing import (MODEL_COLOUR, OUTSIDE_SAID, PANEL_ORDER, TEMPLATE_COLOUR, displayed, inside_brain, mask_lut,
                         outline_image, plane_slice)
from app.slice_panel import SlicePanel, lookup_table
from app.study import FindingMaps, Study
from app.view_state import Event, ViewState
from explain.lime_quality import quality_sentence
from explain.methods import METHOD_NAMES, METHODS
from xnet_core.image import Volume


@dataclass
class Scene:
    """What a redraw needs besides the view state and the study."""

    background: Volume  # under the overlays
    side: Volume | None  # the side-by-side panel's sequence (None: no other sequence yet)
    side_levels: tuple[float, float]
    template_outline: np.ndarray | None  # the template's brain mask on the scan's grid, once placed
    has_model: bool


class PanelGrid(QWidget):
    """``hovered``: section coordinates under the mouse (or None); ``wheelSteps``: slices to step;
    ``windowDrag``: a right drag (dx, dy) in screen pixels; ``stroke``: a brush event in paint mode."""

    hovered = Signal(object)
    wheelSteps = Signal(int)
    windowDrag = Signal(float, float)
    stroke = Signal(object, str)  # section (column, row), "start" | "move" | "finish"

    def __init__(self, voxel_sizes: tuple[float, float, float], radiological: bool,
                 painting: Callable[[], bool]) -> None:
        super().__init__()
        self.painting = painting
        self.panels = {name: SlicePanel("Segmentation" if name == "segmentation" else METHOD_NAMES[name],
                                        voxel_sizes) for name in ("segmentation", *METHODS)}
        self.side_panel = SlicePanel("Second sequence", voxel_sizes)
        self.set_orientation(radiological, "axial")  # the saved display convention
        self.side_panel.setVisible(False)
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(3)
        self.shown: tuple[str, ...] = ()
        self.focus: FindingMaps | None = None  # the finding whose own maps the map panels show
        self.arrange(PANEL_ORDER[1:])
        self._grid.addWidget(self.side_panel, 0, 1)  # shown instead of the heatmap panels, side by side
        first = self.panels["segmentation"]
        for panel in self.all_panels():
            if panel is not first:
                panel.view_box.setXLink(first.view_box)
                panel.view_box.setYLink(first.view_box)
            panel.wheelSteps.connect(self.wheelSteps)
            panel.hovered.connect(self.hovered)
            self._install_mouse(panel)

    def arrange(self, methods: tuple[str, ...]) -> None:
        """The segmentation and the chosen methods' panels: two columns for up to four, else three."""
        self.shown = ("segmentation", *methods)
        columns = 2 if len(self.shown) <= 4 else 3
        for name, panel in self.panels.items():
            if name not in self.shown:
                self._grid.removeWidget(panel)
                panel.hide()
        for index, name in enumerate(self.shown):  # adding again moves a panel to its new cell
            self._grid.addWidget(self.panels[name], index // columns, index % columns)

    def all_panels(self) -> list[SlicePanel]:
        """The segmentation and map panels and the side-by-side mode's second-sequence panel."""
        return [*self.panels.values(), self.side_panel]

    @property
    def view_box(self) -> pg.ViewBox:
        """The first panel's view box; the others are linked to it."""
        return self.panels["segmentation"].view_box

    def _install_mouse(self, panel: SlicePanel) -> None:
        """Beyond pyqtgraph's pan and zoom (patched into the ViewBox): right drag sets window/level
        (pyqtgraph's right drag zooms), and in paint mode left drag and click paint."""
        view_box = panel.view_box
        original_drag, original_click = view_box.mouseDragEvent, view_box.mouseClickEvent

        def section_xy(ev) -> tuple[float, float]:
            return panel.image_to_section(panel.scan_item.mapFromScene(ev.scenePos()))

        def drag(ev, axis=None):
            left = ev.button() == Qt.MouseButton.LeftButton
            if left and self.painting():
                ev.accept()
                self.stroke.emit(section_xy(ev), "start" if ev.isStart() else "finish" if ev.isFinish() else "move")
            elif ev.button() == Qt.MouseButton.RightButton:
                ev.accept()
                delta = ev.screenPos() - ev.lastScreenPos()
                self.windowDrag.emit(delta.x(), -delta.y())
            else:
                original_drag(ev, axis)

        def click(ev):
            if ev.button() == Qt.MouseButton.LeftButton and self.painting():
                ev.accept()
                xy = section_xy(ev)
                self.stroke.emit(xy, "start")
                self.stroke.emit(xy, "finish")
            else:
                original_click(ev)

        view_box.mouseDragEvent, view_box.mouseClickEvent = drag, click

    # -- layout and geometry -------------------------------------------------------------------
    def follow(self, state: ViewState) -> None:
        """Orientation, panel mode and zoom follow the view state; the mouse's zoom goes into it."""
        state.events.plane.connect(lambda event: self.set_orientation(state.radiological, event.value))
        state.events.radiological.connect(lambda event: self.set_orientation(event.value, state.plane))
        for name in ("single_panel", "side_by_side"):
            getattr(state.events, name).connect(lambda _event: self.apply_mode(state.single_panel, state.side_by_side))
        for name in ("panel_gradcampp", "panel_hirescam"):
            getattr(state.events, name).connect(lambda _event: self._choose(state))
        self._choose(state)
        state.events.zoom.connect(self._show_zoom)
        self.view_box.sigRangeChanged.connect(
            lambda _box, view_range, *_changed: setattr(state, "zoom", (tuple(view_range[0]), tuple(view_range[1]))))

    def _show_zoom(self, event: Event) -> None:
        """A zoom set on the state (not by the mouse): show that rectangle."""
        current = self.view_box.viewRange()
        if event.value is not None and event.value != (tuple(current[0]), tuple(current[1])):
            self.view_box.setRange(xRange=event.value[0], yRange=event.value[1], padding=0)

    def set_orientation(self, radiological: bool, plane: str) -> None:
        for panel in self.all_panels():
            panel.set_orientation(radiological, plane)

    def set_voxel_sizes(self, voxel_sizes: tuple[float, float, float]) -> None:
        for panel in self.all_panels():
            panel.set_voxel_sizes(voxel_sizes)

    def _choose(self, state: ViewState) -> None:
        if ("segmentation", *state.heatmap_methods) != self.shown:
            self.arrange(state.heatmap_methods)
            self.apply_mode(state.single_panel, state.side_by_side)

    def apply_mode(self, single: bool, side_by_side: bool) -> None:
        """Every chosen panel, the segmentation alone, or two sequences next to each other."""
        for name, panel in self.panels.items():
            panel.setVisible(name == "segmentation" or (name in self.shown and not (single or side_by_side)))
        self.side_panel.setVisible(side_by_side and not single)

    def set_crosshair(self, xy: tuple[int, int] | None) -> None:
        for panel in self.all_panels():
            panel.set_crosshair(xy)

    def set_mouse_panning(self, on: bool) -> None:
        """Off while painting: no panning under the brush."""
        for panel in self.all_panels():
            panel.view_box.setMouseEnabled(x=on, y=on)

    def show_attention_guide(self) -> None:
        """Help → What each map shows: the measured attention shares and a reading guide per method."""
        from PySide6.QtWidgets import QMessageBox

        from app.attention_guide import guide_html

        QMessageBox.information(self, "What each map shows", guide_html())

    def fit(self) -> None:
        self.view_box.autoRange(padding=0.02)

    # -- drawing -------------------------------------------------------------------------------
    def draw_reader(self, rgba: np.ndarray | None) -> None:
        """Only the reader's layer: a brush stroke repaints this, not the scan or the heatmaps."""
        image = None if rgba is None else displayed(rgba, self.panels["segmentation"].flip)  # one copy for all
        for panel in self.all_panels():
            panel.show_image(panel.reader_item, image)

    def draw(self, state: ViewState, study: Study, scene: Scene) -> None:
        """Every layer of every panel for the section the view state shows."""
        z, index, plane = state.slice, state.plane_index, state.plane
        focus = self.focus if self.focus is not None and self.focus.study is study else None
        section = lambda volume: plane_slice(volume, plane, index)  # noqa: E731
        axial = plane == "axial"
        pending_rows = None if axial else ~study.segmented  # rows of the section are axial slices
        if axial:
            mask = study.mask_slice(z) if study.segmented[z] else None
        else:
            mask = (section(study.probabilities) >= study.threshold).astype(np.uint8)
        lut = lookup_table(state.colour_map)
        # The panels share one displayed copy of the scan and of each outline (all panels flip alike).
        flip, background = self.panels["segmentation"].flip, section(scene.background.data)
        scan_image = displayed(background, flip)
        shown_template = state.show_template and scene.template_outline is not None
        template = section(scene.template_outline) if shown_template else None
        template_image = outline_image(template, TEMPLATE_COLOUR, flip, background.shape)
        outlines: dict = {}

        def model_outline(outline_mask, rows, whose="mask"):
            key = (whose, outline_mask is None, None if rows is None else rows.tobytes())
            if key not in outlines:
                outlines[key] = outline_image(outline_mask, MODEL_COLOUR, flip, background.shape, rows)
            return outlines[key]

        brain = section(study.model_input.brain_mask) > 0
        own = section(focus.mask) if focus is not None else None  # the finding alone, on the map panels
        for name, panel in self.panels.items():
            if name not in self.shown:
                continue
            panel.show_scan_image(scan_image, state.levels, background.shape)
            panel.show_image(panel.template_item, template_image)
            outlined = state.show_segmentation and (state.outline_mode or name != "segmentation")
            outline_mask = mask if outlined else None
            if name == "segmentation":
                panel.show_image(panel.model_outline_item, model_outline(outline_mask, pending_rows))
                self._draw_segmentation(panel, state, study, scene.has_model, mask, focus)
            else:
                hatched = None if axial else (focus or study).unexplained_slices(name)
                if focus is not None:
                    outline_mask = own if state.show_segmentation else None
                whose = "mask" if focus is None else "finding"
                panel.show_image(panel.model_outline_item, model_outline(outline_mask, hatched, whose))
                panel.title.setText(METHOD_NAMES[name] + ("" if focus is None else f" · finding {focus.number}"))
                self._draw_heatmap(panel, name, state, study, scene.has_model, lut, section, brain, focus)
        if state.side_by_side:
            self._draw_side(scene, section, mask if state.show_segmentation else None, pending_rows, template)

    @staticmethod
    def _draw_segmentation(panel: SlicePanel, state: ViewState, study: Study, has_model: bool,
                           mask: np.ndarray | None, focus: FindingMaps | None = None) -> None:
        panel.show_scale(None, 0, 0, False)
        z = state.slice
        if not has_model:
            panel.show_status("no model")
        elif state.plane == "axial" and not study.segmented[z]:
            panel.show_status("segmenting…")
        elif focus is not None:
            panel.show_status(f"finding {focus.number}: {focus.area_mm2(z):.0f} mm² on slice z {z} of its "
                              f"{focus.row['volume_ml']:.2f} ml · the maps explain this lesion alone "
                              "(Esc: the whole mask)")
        else:
            where = f"lesion {study.lesion_area_per_slice_mm2()[z]:.0f} mm² on slice z {z}"
            done = "" if study.segmentation_complete else " so far"
            panel.show_status(f"{where} · {study.lesion_volume_ml():.2f} ml{done} (threshold {study.threshold:.2f})")
        if mask is None or not state.show_segmentation or state.outline_mode:
            panel.overlay_item.clear()
            return
        panel.show_overlay(mask.astype(np.float32), mask_lut(), (0.0, 1.0), state.mask_opacity)

    @staticmethod
    def _draw_heatmap(panel: SlicePanel, method: str, state: ViewState, study: Study, has_model: bool,
                      lut: np.ndarray, section: Callable[[np.ndarray], np.ndarray], brain: np.ndarray,
                      focus: FindingMaps | None = None) -> None:
        """``focus``: the maps of that finding alone instead of the whole mask's, said in the caption."""
        source = focus or study
        scale = source.scale(method)
        panel.show_scale(lut, scale.low, scale.high, scale.provisional)
        z, axial = state.slice, state.plane == "axial"
        status = source.status(method, z) if axial else "ok"
        if focus is not None and axial and status is None and z not in focus.slices:
            status = "it does not reach this slice"
        if status is None:
            waiting = "press L for LIME" if method == "lime" else "computing…"
            if not has_model:
                waiting = "no model"
            elif not study.segmented[z]:
                waiting = "waiting for segmentation"
            panel.show_status(finding_caption(focus, waiting))
            panel.overlay_item.clear()
            return
        if status != "ok" or not state.show_heatmaps:
            panel.show_status(finding_caption(focus, "" if status == "ok" else status))
            panel.overlay_item.clear()
            return
        values, outside = inside_brain(section(source.maps[method]), brain)
        notes = [f"{outside:.0%} of this map lies outside the brain (not drawn)" if outside >= OUTSIDE_SAID else ""]
        if method == "lime" and axial:
            notes.append(quality_sentence(source.details["lime"].get(z, {})))
        panel.show_status(finding_caption(focus, " · ".join(note for note in notes if note)))
        panel.show_overlay(values, lut, (scale.low, scale.high), state.opacity)

    def _draw_side(self, scene: Scene, section, mask, pending_rows, template) -> None:
        panel, other = self.side_panel, scene.side
        if other is None:
            panel.title.setText("Second sequence")
            panel.scan_item.clear()
            panel.show_status("add another sequence of this patient: File → Add sequence…")
            return
        panel.title.setText(f"{other.name} ({other.sequence})")
        panel.show_scan(section(other.data), scene.side_levels)
        panel.show_outline(panel.model_outline_item, mask, MODEL_COLOUR, pending_rows)
        panel.show_outline(panel.template_item, template, TEMPLATE_COLOUR)
        panel.show_status("")


def finding_caption(focus: FindingMaps | None, text: str) -> str:
    """A map panel's caption: while a finding is explained alone, it says which one."""
    return text if focus is None else f"finding {focus.number}: {text or 'this lesion alone'}"
