"""PACS settings: where the PACS is, who we are, timeouts, optional TLS, and a "Test connection" (C-ECHO).

Kept in ``QSettings`` under ``pacs/``. The dialog refuses what cannot work (a port that is not 1..65535,
an empty or invalid AE title) when OK is pressed, naming the field, and stays open; the rules are
``xnet_core.pacs.PacsSettings``'s, shared with ``xnet pacs``.
"""

from __future__ import annotations

import logging
import threading

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget)

from app.settings import read_bool, read_float, read_int, read_str
from xnet_core.errors import XNetError
from xnet_core.pacs import DEFAULT_CALLING_AET, PacsError, PacsSettings

log = logging.getLogger(__name__)

GROUP = "pacs"
_FIELD_LABELS = {"host": "Host", "port": "Port", "called_aet": "PACS AE title", "calling_aet": "Our AE title",
                 "timeout": "Timeout", "receive_port": "Receive port (C-MOVE)", "tls": "TLS"}


def load_settings(store: QSettings | None = None) -> PacsSettings | None:
    """The saved settings, or None when none were saved (or they no longer pass the checks). A value
    of the wrong kind gives its default (``app.settings``) before the checks. ``store``: the settings to
    read (default: the application's)."""
    host = read_str(f"{GROUP}/host", "", store)
    if not host:
        return None
    try:
        return PacsSettings(
            host=host, port=read_int(f"{GROUP}/port", 104, 1, 65535, store),
            called_aet=read_str(f"{GROUP}/called_aet", "", store),
            calling_aet=read_str(f"{GROUP}/calling_aet", DEFAULT_CALLING_AET, store),
            timeout_s=read_float(f"{GROUP}/timeout_s", 30.0, 1.0, 600.0, store),
            tls=read_bool(f"{GROUP}/tls", False, store),
            tls_ca_file=read_str(f"{GROUP}/tls_ca_file", "", store),
            tls_cert_file=read_str(f"{GROUP}/tls_cert_file", "", store),
            tls_key_file=read_str(f"{GROUP}/tls_key_file", "", store),
            receive_port=read_int(f"{GROUP}/receive_port", 0, 0, 65535, store))
    except XNetError as exc:
        log.warning("the saved PACS settings are not usable (%s); set them again", exc)
        return None


def save_settings(settings: PacsSettings) -> None:
    store = QSettings()
    for key, value in settings.as_dict().items():
        store.setValue(f"{GROUP}/{key}", "true" if value is True else "false" if value is False else value)


class _EchoSignals(QObject):
    done = Signal(str, bool)  # message, success


class PacsSettingsDialog(QDialog):
    """The PACS settings; ``settings`` holds the accepted ones after OK."""

    def __init__(self, parent: QWidget | None = None, settings: PacsSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PACS settings")
        self.settings: PacsSettings | None = settings
        self.host = QLineEdit(settings.host if settings else "")
        self.port = QLineEdit(str(settings.port) if settings else "104")
        self.called_aet = QLineEdit(settings.called_aet if settings else "")
        self.calling_aet = QLineEdit(settings.calling_aet if settings else DEFAULT_CALLING_AET)
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(1.0, 600.0)
        self.timeout.setSuffix(" s")
        self.timeout.setValue(settings.timeout_s if settings else 30.0)
        self.receive_port = QLineEdit(str(settings.receive_port) if settings and settings.receive_port else "")
        self.receive_port.setPlaceholderText("empty: C-GET only")
        self.tls = QCheckBox("DICOM over TLS")
        self.tls.setChecked(bool(settings and settings.tls))
        self.tls_ca = QLineEdit(settings.tls_ca_file if settings else "")
        self.tls_ca.setPlaceholderText("CA certificates (PEM); empty: the system's")
        self.tls_cert = QLineEdit(settings.tls_cert_file if settings else "")
        self.tls_key = QLineEdit(settings.tls_key_file if settings else "")
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b00020")
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test_connection)
        self.test_result = QLabel("")
        self.test_result.setWordWrap(True)
        self._echo = _EchoSignals(self)
        self._echo.done.connect(self._echo_done)
        self._echo_thread: threading.Thread | None = None
        self._layout()

    def _layout(self) -> None:
        form = QFormLayout()
        for label, widget in (("Host", self.host), ("Port", self.port), ("PACS AE title", self.called_aet),
                              ("Our AE title", self.calling_aet), ("Timeout", self.timeout),
                              ("Receive port (C-MOVE)", self.receive_port), ("", self.tls),
                              ("TLS CA file", self.tls_ca), ("TLS certificate", self.tls_cert),
                              ("TLS key", self.tls_key)):
            form.addRow(label, widget)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.test_result, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(test_row)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    def entered(self) -> PacsSettings:
        """The settings as entered; ``PacsError`` (naming the field) when one cannot work."""
        receive = self.receive_port.text().strip()
        try:
            return PacsSettings(host=self.host.text().strip(), port=self.port.text(), called_aet=self.called_aet.text(),
                                calling_aet=self.calling_aet.text(), timeout_s=self.timeout.value(),
                                tls=self.tls.isChecked(), tls_ca_file=self.tls_ca.text().strip(),
                                tls_cert_file=self.tls_cert.text().strip(), tls_key_file=self.tls_key.text().strip(),
                                receive_port=receive or 0)
        except PacsError as exc:
            field = _FIELD_LABELS.get(exc.parameter or "", "")
            raise PacsError(f"{field}: {exc}" if field else str(exc), parameter=exc.parameter) from exc

    def accept(self) -> None:
        try:
            settings = self.entered()
        except PacsError as exc:
            self.error_label.setText(str(exc))
            return
        self.settings = settings
        self.error_label.setText("")
        super().accept()

    def test_connection(self) -> None:
        """C-ECHO with the settings as entered, off the UI thread; the answer appears beside the button."""
        from xnet_core.pacs import echo

        try:
            settings = self.entered()
        except PacsError as exc:
            self.error_label.setText(str(exc))
            return
        self.error_label.setText("")
        self.test_button.setEnabled(False)
        self.test_result.setText(f"calling {settings.describe()}…")

        def call() -> None:
            try:
                seconds = echo(settings)
            except XNetError as exc:
                self._echo.done.emit(str(exc), False)
            else:
                self._echo.done.emit(f"{settings.describe()} answers ({seconds * 1000:.0f} ms).", True)

        self._echo_thread = threading.Thread(target=call, name="pacs-echo", daemon=True)
        self._echo_thread.start()

    def _echo_done(self, message: str, success: bool) -> None:
        self.test_button.setEnabled(True)
        self.test_result.setStyleSheet("" if success else "color: #b00020")
        self.test_result.setText(message)

    def wait_for_test(self, timeout_s: float = 30.0) -> None:
        """Let a running Test connection finish (tests; closing the dialog)."""
        if self._echo_thread is not None:
            self._echo_thread.join(timeout_s)


def edit_settings(parent: QWidget | None = None) -> PacsSettings | None:
    """Show the settings dialog; the accepted settings are saved and returned (None: cancelled)."""
    dialog = PacsSettingsDialog(parent, load_settings())
    if dialog.exec() != QDialog.DialogCode.Accepted or dialog.settings is None:
        return None
    save_settings(dialog.settings)
    return dialog.settings
