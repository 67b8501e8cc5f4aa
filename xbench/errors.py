"""Errors a user can cause, and the exit codes the CLI maps them to.

Every ``XbenchError`` carries a one-line message that names the file, key or
name at fault and says what to do. The CLI prints that line (never a
traceback) and exits with the error's ``exit_code``.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit status of the ``xbench`` command.

    OK: everything ran and passed.
    FAILURES: the command ran, but some jobs failed (``run``) or a regression
        was found (``compare``).
    USAGE_ERROR: bad flag, unknown name, malformed suite or record file.
    NOTHING_TO_COMPARE: ``compare`` found no runs present on both sides, or the accuracy
        metric cannot be read on either side.
    INCOMPLETE: ``compare`` found that NEW lost data: a BASE benchmark missing in
        NEW, fewer successful seeds than BASE, or failed jobs in NEW
        (``--allow-missing`` opts out). A regression (1) takes precedence.
    FOLDER_IN_USE: another ``xbench run`` is writing into the same results folder.
    INTERRUPTED: stopped with Ctrl-C; finished jobs are kept on disk.
    """

    OK = 0
    FAILURES = 1
    USAGE_ERROR = 2
    NOTHING_TO_COMPARE = 3
    INCOMPLETE = 4
    FOLDER_IN_USE = 5
    INTERRUPTED = 130


class XbenchError(Exception):
    """Base of every error a user can cause; its message is one line."""

    exit_code: ExitCode = ExitCode.USAGE_ERROR


class UsageError(XbenchError):
    """A bad command-line flag or argument value."""


class UnknownNameError(XbenchError, KeyError):
    """A method, task, suite or executor name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class RegistryClashError(XbenchError):
    """Two registrations claim the same name."""


class PluginError(XbenchError):
    """A plugin found through an entry point could not be loaded."""


class ConfigError(XbenchError):
    """A suite file or configuration value is malformed."""


class ProtocolError(XbenchError):
    """A method was asked to run under a protocol it does not support."""


class RecordsError(XbenchError):
    """A results folder or record file is missing or unreadable."""


class FolderInUseError(XbenchError):
    """Another ``xbench run`` holds the results folder's lock (one writer per folder)."""

    exit_code = ExitCode.FOLDER_IN_USE


class NothingToCompareError(XbenchError):
    """Two sets of records share no comparable runs."""

    exit_code = ExitCode.NOTHING_TO_COMPARE


class JobError(Exception):
    """A job failed inside the runner (the method raised or diverged).

    Not a user error: the runner turns it into a ``status: failed`` record
    and the run goes on.
    """


class NonFiniteError(JobError):
    """A method returned a NaN or infinite loss."""
