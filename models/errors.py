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
