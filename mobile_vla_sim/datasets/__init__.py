"""Demonstrations on disk in the real project's HDF5 layout: format, `generate`, reader and training windows.

Light imports only here; `datasets.generate` (PyBullet) and `datasets.windows` (torch) are imported explicitly.
"""

from mobile_vla_sim.errors import ConfigMismatchError, CorruptEpisodeError, DatasetError, NoEpisodesError
from mobile_vla_sim.datasets.hdf5_format import (Episode, instruction_from_episode_name, parse_episode_name,
                                                 read_episode, write_episode)
from mobile_vla_sim.datasets.reader import EpisodeDataset

__all__ = ["ConfigMismatchError", "CorruptEpisodeError", "DatasetError", "Episode", "EpisodeDataset",
           "NoEpisodesError", "instruction_from_episode_name", "parse_episode_name", "read_episode", "write_episode"]
