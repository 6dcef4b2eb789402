"""User-facing errors: each carries one line that the CLI and the TUI show as is."""


class CharRNNError(Exception):
    """An error caused by input or environment, not by a bug: shown without a traceback."""


class CorpusError(CharRNNError):
    """The training text cannot be read or is unusable."""


class CheckpointError(CharRNNError):
    """A checkpoint file is missing, corrupt, unsafe or from an incompatible version."""


class ConfigError(CharRNNError):
    """An option or a combination of options is invalid."""
