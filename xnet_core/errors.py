"""One error hierarchy for everything a user can get wrong.

Messages are written for the person at the keyboard: they name the file and say what to do, in the
terms of the problem, never in those of one caller (no command-line flags, no menu items). An error
about one argument of a library call names it in ``parameter`` (``"threshold"``, ``"slices"``...);
the CLI puts its flag before the message, the viewer may name its control. The CLI turns any
``XNetError`` into exit status 2 and one line on stderr.
"""

from __future__ import annotations


class XNetError(Exception):
    """Base class of every user-facing error of X-Net Viewer; ``parameter``: the argument at fault."""

    def __init__(self, *args: object, parameter: str | None = None) -> None:
        super().__init__(*args)
        self.parameter = parameter


class VolumeError(XNetError):
    """A scan file cannot be used (missing, unreadable, corrupt, wrong shape, no content)."""


class CheckpointError(XNetError):
    """A weights file cannot be used (truncated, foreign, wrong architecture)."""


class AssetError(XNetError):
    """A bundled asset (template, demo scan, demo weights) cannot be found."""


class DeviceError(XNetError):
    """The requested compute device is not available."""


class Cancelled(XNetError):
    """Long work stopped because the caller asked it to."""


class DatasetError(XNetError):
    """A dataset folder cannot be used (no known layout, a mask on another grid)."""


class SaveError(XNetError, OSError):
    """A file could not be written (full disk, read-only folder, no permission); the previous file under
    that name is unchanged. Also an ``OSError`` with the system's ``errno``, so code that treats a failed
    write as a lost cache entry (and catches ``OSError``) still does."""

    def __init__(self, message: str, errno: int | None = None, parameter: str | None = None) -> None:
        OSError.__init__(self, errno, message)
        self.parameter = parameter

    def __str__(self) -> str:
        return str(self.strerror)


class SeriesChoiceError(VolumeError):
    """A DICOM folder holds several series and none was chosen; ``series`` lists them for a picker."""

    def __init__(self, message: str, series: list | tuple = (), parameter: str | None = "series") -> None:
        super().__init__(message, parameter=parameter)
        self.series = list(series)
