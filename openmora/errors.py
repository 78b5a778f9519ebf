"""Errors that carry a one-line message meant for a person (or the planner LLM), not a traceback."""

from __future__ import annotations


class OpenMoraError(Exception):
    """Base of the errors OpenMora raises on purpose. ``str(err)`` is one line that names the problem and the fix."""


class InputError(OpenMoraError, ValueError):
    """The user's input (a file, an option, a profile, a prompt) cannot be used. The CLI exits 2 on it."""


class ToolArgumentError(OpenMoraError, ValueError):
    """A tool was called with arguments it cannot take (unknown artifact id, wrong kind, empty prompt).

    Inside a group chat this becomes a message the planner can react to, not a crash.
    """


class ModelLoadError(OpenMoraError, RuntimeError):
    """A pipeline named by a profile could not be loaded (missing weights, unknown class, no network)."""


class ArtifactWriteError(OpenMoraError, RuntimeError):
    """An image or clip could not be written to the run folder (disk full, an encoder failed). Raised at the next
    store operation after the background write failed; nothing half-written is left and the step is not recorded."""


def first_line(err: BaseException | str) -> str:
    """The first non-empty line of an error's message, for one-line reports (transcripts, chat, CLI); an exception
    without a message gives its class name.

    Example:
        >>> first_line(ValueError("bad size\\n  details the user does not need"))
        'bad size'
        >>> first_line(KeyboardInterrupt())
        'KeyboardInterrupt'
    """
    text = str(err).strip()
    if text:
        return text.splitlines()[0].strip()
    return "" if isinstance(err, str) else type(err).__name__
