"""Exception types, and the per-cause counter of skipped inputs.

Every error a user can cause derives from ``OrcnnError`` and names the file or field at fault, so the
command line prints it as one clear line instead of a traceback. Long runs (the node, replay,
``orcnn predict``) skip a bad input instead: ``CauseCounter`` counts the skips per short cause key.
"""

import collections


class OrcnnError(Exception):
    """Base class of all user-facing errors of the project."""


class ConfigError(OrcnnError, ValueError):
    """A config file or value that is unknown, missing or out of range."""


class WeightsError(OrcnnError, ValueError):
    """A weights file that is missing, corrupt, non-finite or made for another model."""


class InputError(OrcnnError, ValueError):
    """An image or other runtime input of the wrong type, shape, size or encoding."""


class DatasetError(OrcnnError, ValueError):
    """An annotation file or record that is malformed or contradicts itself."""


class CauseCounter(collections.Counter):
    """Counts events (skipped frames or images, unreadable messages) per cause; only the first of each
    cause is worth a log line, the rest are only counted: ``add`` says which one it was."""

    def add(self, cause: str) -> bool:
        """Count one event of ``cause``; True when it is the first of its cause (log it)."""
        self[cause] += 1
        return self[cause] == 1

    def format(self) -> str:
        """``cause n, cause n`` sorted by cause (empty when nothing was counted)."""
        return ", ".join(f"{cause} {n}" for cause, n in sorted(self.items()))
