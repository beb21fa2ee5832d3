"""Typed errors with messages a user can act on. Adapters catch these, report, and go on."""


class FastDriveError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(FastDriveError, ValueError):
    """A parameter or configuration value is invalid."""


class CheckpointError(FastDriveError):
    """A model or pruner checkpoint cannot (or must not) be loaded."""


class InputError(FastDriveError, ValueError):
    """A camera image, ego state or other per-frame input is unusable."""


class MissingInputError(InputError):
    """A pruner needs per-frame side data that was not given (mask_oracle's foreground masks)."""


class DataError(FastDriveError):
    """A dataset, bag or file on disk is missing or malformed."""


def require_extra(module: str, extra: str, what: str):
    """Import and return `module`, or raise ConfigError naming the pip extra that installs it
    (the core install leaves out what only some commands need)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs {module.split('.')[0]}, which is not installed: "
                          f'pip install "fastdrivevla_ros[{extra}]"') from None
