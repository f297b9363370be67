"""Opening files from the viewer: the series choice of a DICOM folder, the file dialogs and the
recent-files menu. Used by the window for scans and added sequences alike."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu, QWidget

from app.settings import read_str_list
from xnet_core.errors import SeriesChoiceError
from xnet_core.image import Volume
from xnet_core.volume import load_volume

MAX_RECENT = 8
NIFTI_FILTER = "NIfTI (*.nii *.nii.gz);;All files (*)"


def pick_series_dialog(parent: QWidget, series: list) -> str | None:
    """Which series of a DICOM folder to open (description, images, date); its UID, or None."""
    labels = [info.label() for info in series]
    choice, ok = QInputDialog.getItem(parent, "Open DICOM folder", "This folder holds several series; open:",
                                      labels, 0, False)
    return series[labels.index(choice)].uid if ok and choice in labels else None


def load_asking_series(parent: QWidget, path: str, series: str | None = None) -> Volume | None:
    """A scan from a file or a DICOM folder; a folder with several series asks which (None: the user
    cancelled). Unreadable input raises ``XNetError``."""
    try:
        return load_volume(path, series=series)
    except SeriesChoiceError as choice:
        picked = pick_series_dialog(parent, choice.series) if series is None else None
        return None if picked is None else load_asking_series(parent, path, picked)


def ask_open_path(parent: QWidget, title: str, folder: str = "", filters: str = NIFTI_FILTER) -> str:
    """A file to open ('' when cancelled)."""
    path, _ = QFileDialog.getOpenFileName(parent, title, folder, filters)
    return path


def recent_paths(store: QSettings | None = None) -> list[str]:
    """The scans opened last, newest first, as saved (a one-item list is saved as plain text)."""
    return read_str_list("recent_files", store, max_items=MAX_RECENT)


class RecentFiles:
    """File → Open recent: the last scans opened, kept in the settings, newest first."""

    def __init__(self, menu: QMenu, open_path: Callable[[str], object]) -> None:
        self.menu, self.open_path = menu, open_path
        self.fill()

    def remember(self, path: str) -> None:
        recent = [p for p in recent_paths() if p != path]
        QSettings().setValue("recent_files", [path, *recent][:MAX_RECENT])
        self.fill()

    def fill(self) -> None:
        self.menu.clear()
        for path in recent_paths():
            self.menu.addAction(path, lambda p=path: self.open_path(p))
