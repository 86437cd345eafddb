"""The one error class the engine raises for problems a user can cause or fix."""


class HyperAdaptError(Exception):
    """A problem with the user's input or environment, stated in one sentence.

    The plugin shows the message as it is (message bar, Processing log); any other exception is a
    bug and is logged with its traceback.
    """


class JobCancelled(HyperAdaptError):
    """The user cancelled a job; whatever it was writing has been removed."""


def raise_if_cancelled(cancel) -> None:
    """Raise JobCancelled when the job's ``cancel()`` callback says so (None never cancels)."""
    if cancel is not None and cancel():
        raise JobCancelled("The job was cancelled.")


def os_error_sentence(error: OSError) -> str:
    """One sentence for a failed file operation (full disk, no permission, a folder for a file)."""
    import errno

    name = error.filename
    where = f" {name}" if name else ""
    if error.errno == errno.ENOSPC:
        return (f"The disk is full: HyperAdapt could not finish writing{where}; free some space "
                f"and run again.")
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        return f"HyperAdapt may not write{where} (permission denied); choose another folder."
    if isinstance(error, IsADirectoryError):
        return f"{name} is a folder; give a file name."
    if isinstance(error, FileNotFoundError):
        return f"{name} does not exist." if name else "A file or folder does not exist."
    return f"A file operation failed{where}: {error.strerror or error}."
