"""The installed package version, recorded in every dataset, checkpoint and results file."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mobile-vla-sim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
