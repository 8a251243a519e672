"""mobile-vla-sim: closed-loop simulation evaluation of vision-language-action policies for a mobile robot.

The package's front door: importing it registers the Gymnasium environment (`MobileVLA/Nav-v0`).
"""

from mobile_vla_sim import envs as _envs  # noqa: F401  (registers the env id)
from mobile_vla_sim.moved import install as _install_moved
from mobile_vla_sim.version import __version__

_install_moved()  # import paths from before the reorganisation keep working

__all__ = ["__version__"]
