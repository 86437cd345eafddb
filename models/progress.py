"""The progress callbacks every job takes: ``progress(fraction, message)``."""
from __future__ import annotations


def scaled(progress, start: float, end: float):
    """A progress callback mapping 0..1 onto start..end of the caller's."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * float(fraction), message)


def report(progress, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)
