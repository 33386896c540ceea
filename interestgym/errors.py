"""Errors a user can act on.

Every error raised for bad input is an :class:`InterestGymError` whose message names the file, the
line or field, what was found and what was expected. The CLI prints it as one line (no traceback)
and exits with status 2.
"""

from __future__ import annotations


class InterestGymError(Exception):
    """A problem with the user's input, files or options, explained in the message."""


class DataError(InterestGymError):
    """A data file is missing, malformed, or has too many bad rows."""


class ArtifactError(InterestGymError):
    """A produced artifact (dataset, embeddings, model, export) is missing, corrupt or mismatched."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a command that has already said what it left and how to go on (``train``: the checkpoint to resume
    from; ``search``, ``quickstart``: what continues): the CLI adds no generic line of its own, which could contradict it
    (e.g. "run the command again" where only ``--resume`` continues)."""
