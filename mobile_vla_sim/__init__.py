"""mobile-vla-sim: closed-loop simulation evaluation of vision-language-action policies for a mobile robot."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mobile-vla-sim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

# Importing the package registers the Gymnasium environments.
from mobile_vla_sim import envs as _envs  # noqa: E402,F401
