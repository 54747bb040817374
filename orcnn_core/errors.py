"""Exception types. Every error a user can cause derives from ``OrcnnError`` and names the file or
field at fault, so the command line prints it as one clear line instead of a traceback."""


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
