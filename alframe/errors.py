"""The error types of alframe. Imports nothing from alframe: every floor may raise them.

Each message names the key or value, what was found and what is allowed, in one line."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is out of its allowed range; the message names key, value and range."""


class StateMismatchError(RuntimeError):
    """A saved pool state does not belong to the current dataset or configuration."""


class DatasetError(ConfigError):
    """Data cannot be loaded: files missing (and not downloadable), unreadable or corrupt.

    A :class:`~alframe.errors.ConfigError`, so the ``alframe`` command prints the message
    (which names the folder, the expected files and how to get them) without a stack trace.
    """


class RunFolderError(ConfigError):
    """A run folder lacks a file it needs or does not match its data; the message names the file."""


class LabelImportError(ConfigError):
    """A filled labels file cannot be imported; the message lists every bad row. Nothing of
    the file was recorded."""


class ReportError(ValueError):
    """Nothing to report (unknown store or experiment, no matching runs); the message says why."""


class RunFolderBusy(ConfigError):
    """Another live process holds the run folder's lock; the message names the folder and that
    process (host, PID, since when), and nothing was changed."""
