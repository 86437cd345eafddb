"""Background jobs for the dialogs: a QObject worker moved to a QThread, talking only through signals.

The job itself is a plain function ``job(progress, cancel)`` that receives file paths and plain
values through a closure, so nothing in the worker thread touches a widget or a layer; the GUI
thread reacts to the ``progress``, ``failed``, ``cancelled`` and ``done`` signals.
"""
from __future__ import annotations

import os
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from qgis.PyQt.QtCore import QObject, Qt, QThread, pyqtSignal, pyqtSlot

from ..models.errors import HyperAdaptError, JobCancelled, os_error_sentence

Job = Callable[[Callable[..., None], Callable[[], bool]], Any]

OUTPUT_FOLDER_ENV = "HYPERADAPT_OUTPUT"


def kept_output_folder() -> Path:
    """Where results go when the user names no output folder: a temporary folder that is kept.

    It is not QGIS's per-session processing folder (deleted when QGIS closes), because the layers
    added to the project point to these files. ``HYPERADAPT_OUTPUT`` overrides it.
    """
    override = os.environ.get(OUTPUT_FOLDER_ENV)
    return Path(override) if override else Path(tempfile.gettempdir()) / "hyperadapt"


def job_thread_count() -> int:
    """Threads a job's PyTorch may use: all cores but one, which stays with QGIS's GUI thread."""
    return max(1, (os.cpu_count() or 2) - 1)


def limit_torch_threads() -> int | None:
    """Caps PyTorch's CPU threads for a job; returns the previous count (None without torch).

    With as many busy PyTorch threads as cores, the GUI thread waits for a core and QGIS
    stutters; on a loaded machine the threads also wait on each other, and training slows down
    several times over.
    """
    try:
        import torch
    except ImportError:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, job_thread_count()))
    return previous


def restore_torch_threads(previous: int | None) -> None:
    if previous is not None:
        import torch
        torch.set_num_threads(previous)


class JobWorker(QObject):
    """Runs one job in the thread it was moved to and reports through signals.

    ``progress(fraction, message, info)``: info is a dict of the numbers the engine reported with
    the message (epoch, loss, validation accuracy...), empty when it gave none; a negative
    fraction means "unchanged" (a report of numbers only).
    ``failed(message, details)``: message is one sentence for the user; details holds the
    traceback of an unexpected error, and is empty for a problem the user can fix.
    """

    progress = pyqtSignal(float, str, object)
    failed = pyqtSignal(str, str)
    cancelled = pyqtSignal()
    done = pyqtSignal(object)
    ended = pyqtSignal()

    def __init__(self, *, job: Job):
        """Args:
            job: ``job(progress, cancel) -> result``, called once in the worker thread.
        """
        super().__init__()
        self._job = job
        # An Event rather than a queued slot: the worker's thread is busy in the job, so a queued
        # call would only run after the job ends.
        self._cancel_requested = threading.Event()

    def request_cancel(self) -> None:
        """Asks the job to stop at its next check; safe to call from any thread."""
        self._cancel_requested.set()

    def cancel_requested(self) -> bool:
        return self._cancel_requested.is_set()

    def _report_progress(self, fraction: float, message: str = "", *args, **info) -> None:
        if args and isinstance(args[0], dict):
            info = {**args[0], **info}
        fraction = -1.0 if fraction < 0 else min(1.0, float(fraction))
        self.progress.emit(fraction, str(message), dict(info))

    @pyqtSlot()
    def run(self) -> None:
        previous_threads = limit_torch_threads()
        try:
            result = self._job(self._report_progress, self.cancel_requested)
        except HyperAdaptError as error:
            if isinstance(error, JobCancelled) or self.cancel_requested():
                self.cancelled.emit()
            else:
                self.failed.emit(str(error), "")
        except OSError as error:    # a full disk or a folder taken away while the job ran
            if self.cancel_requested():
                self.cancelled.emit()
            else:
                self.failed.emit(os_error_sentence(error), traceback.format_exc())
        except Exception as error:  # a bug: the dialog shows one line and logs the traceback
            if self.cancel_requested():
                self.cancelled.emit()
            else:
                self.failed.emit(f"Unexpected error ({type(error).__name__}: {error}); "
                                 "the details are in the HyperAdapt log.", traceback.format_exc())
        else:
            self.done.emit(result)
        finally:
            restore_torch_threads(previous_threads)
            self.ended.emit()


class JobRunner:
    """One job on its own QThread: start it, cancel it, and stop it cleanly on shutdown.

    Connect to ``runner.worker``'s signals with bound methods of GUI-thread QObjects (not lambdas),
    so Qt queues the calls onto the GUI thread. Keep the runner referenced until the thread has
    stopped: a QThread destroyed while running takes the application down.
    """

    def __init__(self, *, job: Job, name: str = "HyperAdapt job"):
        """Args:
            job: ``job(progress, cancel) -> result``, run in the background thread.
            name: the thread's object name (shown by debuggers and in logs).
        """
        self.thread = QThread()
        self.thread.setObjectName(name)
        self.worker = JobWorker(job=job)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        # QThread.quit is thread-safe, so the worker's last signal stops the loop directly, without
        # waiting for the GUI thread (which may itself be waiting for this thread to end).
        self.worker.ended.connect(self.thread.quit, Qt.DirectConnection)

    def start(self) -> None:
        self.thread.start()

    def is_running(self) -> bool:
        return self.thread.isRunning()

    def cancel(self) -> None:
        self.worker.request_cancel()

    def shutdown(self, timeout_ms: int = 15000) -> bool:
        """Requests cancel, then quits and waits for the thread; True when it has stopped."""
        self.worker.request_cancel()
        self.thread.quit()
        return self.thread.wait(timeout_ms)
