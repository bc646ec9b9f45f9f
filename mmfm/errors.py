"""Typed errors that tell the user what is wrong with their input and how to fix it.

Every error mmfm raises on purpose derives from :class:`MMFMError`; the CLI prints it as one readable message
(no traceback) and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class MMFMError(Exception):
    """Base class: ``problem`` says what is wrong, ``hint`` how to fix it."""

    def __init__(self, problem: str, hint: str = "") -> None:
        if problem.startswith("Caught ") and "Original Traceback" in problem:
            # re-raised by torch from a DataLoader worker as ``Type(traceback text)``: keep the original message
            tail = problem.rsplit(f"{type(self).__module__}.{type(self).__name__}: ", 1)[-1].strip()
            problem, _, hint = tail.partition("\n  hint: ")
        self.problem, self.hint = problem, hint
        super().__init__(f"{problem}" + (f"\n  hint: {hint}" if hint else ""))


class InputFileError(MMFMError):
    """A user file (image, mask, report, table) is missing, unreadable or holds invalid content."""

    def __init__(self, path: str | Path, problem: str, hint: str = "") -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}", hint)
        self.what = problem   # the problem without the path (for listings that name the file themselves)


class SampleError(MMFMError):
    """A sample is inconsistent: image and mask disagree, NaN/Inf pixels, a missing modality, a bad report."""


class UnknownNameError(MMFMError):
    """A name (modality, dataset, preset, encoder, ...) that mmfm does not know."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3)
        hint = (f"did you mean {', '.join(close)}? " if close else "") + f"known {kind}s: {', '.join(known)}"
        super().__init__(f"unknown {kind} '{name}'", hint)


class ConfigError(MMFMError):
    """A configuration file or command-line override that cannot be applied."""


def unknown_option(label: str, key: str, valid: Iterable[str], owner: str) -> ConfigError:
    """The error for an option ``label`` (e.g. ``objective.mask_raito``) that ``owner`` does not take, with the
    closest valid option as a hint. Every option check in mmfm raises through this."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    return ConfigError(f"unknown option '{label}' for {owner}",
                       (f"did you mean '{close[0]}'? " if close else "") + f"valid: {valid}")


class CheckpointError(MMFMError):
    """A checkpoint that is missing, corrupt, or does not match the model it is loaded into."""
