"""One exception family, so the CLI can turn any bad input into one clear line."""


class DifflabError(Exception):
    """Base class: the message is a single line naming the bad value and what is accepted."""


class DataError(DifflabError):
    """A missing, truncated or corrupt data file, or an unknown dataset name."""


class ConfigError(DifflabError):
    """An unknown or mistyped config key, or a value of the wrong type."""


class CheckpointError(DifflabError):
    """A missing or corrupt checkpoint, or one that does not match the requested model or flags."""


class DivergenceError(DifflabError):
    """Training produced a non-finite loss or an exploding gradient norm."""
