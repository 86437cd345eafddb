"""Small widgets and helpers shared by the HyperAdapt dialogs."""
from __future__ import annotations

import time
from functools import partial

from qgis.core import Qgis, QgsMessageLog
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPointF, QRectF, QSize, Qt, QTimer, QUrl, pyqtSlot
from qgis.PyQt.QtGui import (QColor, QDesktopServices, QFont, QIcon, QPainter, QPainterPath, QPen,
                             QPixmap)
from qgis.PyQt.QtWidgets import QDialog, QPushButton, QSizePolicy, QWidget

from .worker import JobRunner

LOG_TAG = "HyperAdapt"

# Distinct, colour-blind-friendly colours for classes that have no colour yet (Okabe & Ito's
# palette first, then a few more that stay apart from it).
DEFAULT_CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (120, 120, 120), (160, 82, 45), (148, 103, 189),
    (23, 190, 207), (188, 189, 34), (31, 119, 180), (255, 127, 14), (44, 160, 44),
    (214, 39, 40),
)


def default_class_color(index: int) -> tuple[int, int, int]:
    """The palette colour for the class at ``index`` (wraps round after the last one)."""
    return DEFAULT_CLASS_COLORS[index % len(DEFAULT_CLASS_COLORS)]


def color_icon(rgb: tuple[int, int, int], size: int = 14) -> QIcon:
    """A square swatch of the colour, with a thin dark border, for lists and combo boxes."""
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*rgb))
    painter = QPainter(pixmap)
    painter.setPen(QPen(QColor(60, 60, 60)))
    painter.drawRect(0, 0, size - 1, size - 1)
    painter.end()
    return QIcon(pixmap)


def classes_icon(colors, size: int = 14, max_swatches: int = 6) -> QIcon:
    """A strip of small swatches, one per class colour (the first few), for lists."""
    colors = list(colors)[:max_swatches] or [(200, 200, 200)]
    width = max(size, len(colors) * (size // 2 + 1))
    pixmap = QPixmap(width, size)
    pixmap.fill(QColor(0, 0, 0, 0))
    painter = QPainter(pixmap)
    step = width / len(colors)
    for index, rgb in enumerate(colors):
        painter.fillRect(QRectF(index * step, 0, step, size), QColor(*rgb))
    painter.setPen(QPen(QColor(60, 60, 60)))
    painter.drawRect(0, 0, width - 1, size - 1)
    painter.end()
    return QIcon(pixmap)


def format_duration(seconds: float) -> str:
    """``75`` -> ``1 min 15 s``; ``3725`` -> ``1 h 02 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_bytes(num_bytes: int) -> str:
    """``350123`` -> ``342 KB``."""
    size = float(num_bytes)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("bytes", "KB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


class AccuracyPlot(QWidget):
    """A small line plot of an accuracy per epoch (validation, or training when nothing is held
    out), drawn with QPainter.

    The y axis is fixed to 0-100 % so successive runs compare at a glance; the x axis spans the
    planned number of epochs, so the line also shows how far training has come.
    """

    LINE_COLOR = QColor(0, 114, 178)
    GRID_COLOR = QColor(220, 220, 220)

    def __init__(self, *, parent: QWidget | None = None):
        """Args:
            parent: the owning widget.
        """
        super().__init__(parent)
        self.setObjectName("accuracy_plot")
        self.setMinimumSize(220, 110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self._points: list[tuple[int, float]] = []
        self._num_epochs = 1
        self.title = "Validation accuracy"

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(320, 130)

    def reset(self, num_epochs: int) -> None:
        self._points = []
        self._num_epochs = max(1, int(num_epochs))
        self.update()

    def plan(self, num_epochs: int) -> None:
        """Sets the planned number of epochs (the x axis) without clearing the line."""
        self._num_epochs = max(1, int(num_epochs), *(epoch for epoch, _ in self._points))
        self.update()

    def add_point(self, epoch: int, accuracy: float) -> None:
        """Adds (or replaces) the validation accuracy, in [0, 1], of an epoch counted from 1."""
        self._points = [p for p in self._points if p[0] != epoch] + [(int(epoch), float(accuracy))]
        self._points.sort()
        self._num_epochs = max(self._num_epochs, int(epoch))
        self.update()

    def points(self) -> list[tuple[int, float]]:
        return list(self._points)

    def paintEvent(self, event):  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.fillRect(self.rect(), self.palette().base())
        font = QFont(self.font())
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.85))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        left = metrics.horizontalAdvance("100%") + 8
        top, right, bottom = 8 + metrics.height(), 8, metrics.height() + 6
        plot = QRectF(left, top, max(10, self.width() - left - right),
                      max(10, self.height() - top - bottom))

        text_pen = QPen(self.palette().text().color())
        for fraction in (0.0, 0.5, 1.0):
            y = plot.bottom() - fraction * plot.height()
            painter.setPen(QPen(self.GRID_COLOR))
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            painter.setPen(text_pen)
            painter.drawText(QRectF(0, y - metrics.height() / 2, left - 4, metrics.height()),
                             Qt.AlignRight | Qt.AlignVCenter, f"{fraction:.0%}")
        painter.drawText(QRectF(plot.left(), 2, plot.width(), metrics.height()),
                         Qt.AlignLeft | Qt.AlignVCenter, self.title)
        painter.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), metrics.height()),
                         Qt.AlignRight | Qt.AlignVCenter, f"epoch {self._num_epochs}")
        painter.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), metrics.height()),
                         Qt.AlignLeft | Qt.AlignVCenter, "epoch 1")
        if not self._points:
            painter.end()
            return

        def position(epoch: int, accuracy: float) -> QPointF:
            span = max(1, self._num_epochs - 1)
            x = plot.left() + (epoch - 1) / span * plot.width()
            return QPointF(x, plot.bottom() - max(0.0, min(1.0, accuracy)) * plot.height())

        path = QPainterPath(position(*self._points[0]))
        for epoch, accuracy in self._points[1:]:
            path.lineTo(position(epoch, accuracy))
        painter.setPen(QPen(self.LINE_COLOR, 2))
        painter.drawPath(path)
        painter.setBrush(self.LINE_COLOR)
        for point in self._points:
            painter.drawEllipse(position(*point), 2.5, 2.5)
        epoch, accuracy = self._points[-1]
        painter.setPen(text_pen)
        painter.drawText(QRectF(plot.left(), 2, plot.width(), metrics.height()),
                         Qt.AlignRight | Qt.AlignVCenter, f"{accuracy:.1%} (epoch {epoch})")
        painter.end()


def push_message(iface, title: str, text: str, level, *, duration: int = 0,
                 link_path: str | None = None, link_text: str = "Open the report"):
    """Shows a message in QGIS's message bar, with a button that opens ``link_path`` when given.

    Returns the message bar item (None when the bar only takes plain messages).
    """
    bar = iface.messageBar()
    if link_path and isinstance(bar, QgsMessageBar):
        item = bar.createMessage(title, text)
        button = QPushButton(link_text, item)
        button.setObjectName("hyperadapt_open_link")
        url = QUrl.fromLocalFile(str(link_path))
        button.clicked.connect(partial(QDesktopServices.openUrl, url))
        item.layout().addWidget(button)
        bar.pushWidget(item, level, duration)
        return item
    bar.pushMessage(title, text, level, duration)
    return None


class JobDialog(QDialog):
    """A dialog that runs one background job at a time and shows its progress.

    Subclasses have ``progress_bar``, ``message_label``, ``time_label``, ``status_label``,
    ``start_button``, ``cancel_button`` and ``close_button`` (from their .ui form) and override
    ``job_progress``, ``job_done``, ``job_failed`` and ``job_cancelled``. Everything here runs on
    the GUI thread; the job runs on the runner's thread.
    """

    STOP_TIMEOUT_MS = 15000

    def __init__(self, iface, *, parent: QWidget | None = None):
        """Args:
            iface: QGIS's interface.
            parent: the owning widget (QGIS's main window).
        """
        super().__init__(parent)
        self.iface = iface
        self.runner: JobRunner | None = None
        self.job_kind: str | None = None
        # The last job's outcome for the status line: (text, is_error), or None.
        self.outcome: tuple[str, bool] | None = None
        self._job_started = 0.0
        self._job_fraction = 0.0
        self._clock = QTimer(self)
        self._clock.setInterval(500)
        self._clock.timeout.connect(self._show_time)

    # -- running ------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.runner is not None

    def start_job(self, job, *, kind: str, title: str) -> None:
        """Runs ``job(progress, cancel)`` on a new thread; ``kind`` tells the handlers what ran."""
        self.runner = JobRunner(job=job, name=f"HyperAdapt {kind}")
        self.job_kind = kind
        worker = self.runner.worker
        worker.progress.connect(self._on_progress)
        worker.done.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        self.runner.thread.finished.connect(self._on_thread_finished)
        self._job_started = time.monotonic()
        self._job_fraction = 0.0
        self.progress_bar.setValue(0)
        self.message_label.setText(title)
        self.time_label.setText("Elapsed 0 s")
        self._clock.start()
        self.update_buttons()
        self.runner.start()

    @pyqtSlot()
    def cancel_job(self) -> None:
        if self.runner is not None:
            self.runner.cancel()
            self.message_label.setText("Cancelling…")
            self.cancel_button.setEnabled(False)

    def stop_job(self, timeout_ms: int | None = None) -> bool:
        """Cancels the running job and waits for its thread; True when nothing runs any more."""
        if self.runner is None:
            return True
        stopped = self.runner.shutdown(timeout_ms or self.STOP_TIMEOUT_MS)
        if stopped:
            # Deliver the worker's last queued signals now, while the dialog still exists.
            QCoreApplication.sendPostedEvents(None, QEvent.MetaCall)
            self._on_thread_finished()
        return stopped

    # -- worker signals (queued onto the GUI thread) ------------------------------------------
    @pyqtSlot(float, str, object)
    def _on_progress(self, fraction: float, message: str, info) -> None:
        if fraction >= 0:
            self._job_fraction = fraction
            self.progress_bar.setValue(int(round(fraction * self.progress_bar.maximum())))
        if message:
            self.message_label.setText(message)
        self._show_time()
        self.job_progress(fraction, message, info or {})

    @pyqtSlot(object)
    def _on_done(self, result) -> None:
        self.progress_bar.setValue(self.progress_bar.maximum())
        self._finish_clock()
        self.job_done(self.job_kind, result)

    @pyqtSlot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        self._finish_clock()
        if details:
            QgsMessageLog.logMessage(details, LOG_TAG, Qgis.Critical)
        self.message_label.setText(message)
        self.show_outcome(message, is_error=True)
        self.job_failed(self.job_kind, message)

    @pyqtSlot()
    def _on_cancelled(self) -> None:
        self._finish_clock()
        self.progress_bar.setValue(0)
        self.message_label.setText("Cancelled.")
        self.job_cancelled(self.job_kind)

    @pyqtSlot()
    def _on_thread_finished(self) -> None:
        runner, self.runner = self.runner, None
        if runner is None:
            return
        runner.thread.wait()
        self._clock.stop()
        self.job_ended(self.job_kind)
        self.update_buttons()

    def _finish_clock(self) -> None:
        self._show_time()
        self._clock.stop()

    @pyqtSlot()
    def _show_time(self) -> None:
        elapsed = time.monotonic() - self._job_started
        text = f"Elapsed {format_duration(elapsed)}"
        if self.runner is not None and 0.02 <= self._job_fraction < 1.0 and elapsed > 2:
            remaining = elapsed * (1.0 - self._job_fraction) / self._job_fraction
            text += f", about {format_duration(remaining)} left"
        self.time_label.setText(text)

    def show_outcome(self, text: str, *, is_error: bool = False) -> None:
        """Shows what the last job did; it stays until the inputs have a problem or a job starts."""
        self.outcome = (text, is_error)
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #b00020;" if is_error else "")

    def show_activity(self, text: str) -> None:
        """Shows what is running now (clears the last outcome)."""
        self.outcome = None
        self.status_label.setText(text)
        self.status_label.setStyleSheet("")

    # -- for subclasses -----------------------------------------------------------------------
    def job_progress(self, fraction: float, message: str, info: dict) -> None:
        pass

    def job_done(self, kind: str, result) -> None:
        pass

    def job_failed(self, kind: str, message: str) -> None:
        pass

    def job_cancelled(self, kind: str) -> None:
        pass

    def job_ended(self, kind: str) -> None:
        """After the job's thread has stopped, whatever the outcome."""

    def update_buttons(self) -> None:
        running = self.is_running()
        self.cancel_button.setEnabled(running)
        self.start_button.setEnabled(not running)

    # -- closing ------------------------------------------------------------------------------
    def closeEvent(self, event):  # noqa: N802 (Qt's name)
        self.stop_job()
        super().closeEvent(event)

    def reject(self) -> None:
        self.stop_job()
        super().reject()

    def shutdown(self) -> None:
        """The plugin unloads: stop the job cleanly, then close and delete the dialog."""
        self.stop_job()
        self.close()
        self.deleteLater()
