"""Figures without pyplot: reports draw on `matplotlib.figure.Figure` objects and save them as files.

pyplot would select (or, forced to Agg, switch) the process-wide backend, which changes a notebook user's backend
and keeps every figure in global state until closed. A bare `Figure` needs no backend to save a PNG.
"""

from __future__ import annotations

from typing import Any


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
             constrained_layout: bool = False, **kwargs: Any) -> tuple[Any, Any]:
    """(figure, axes) as `pyplot.subplots` returns them, touching no backend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, constrained_layout=constrained_layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def colormap(name: str) -> Any:
    """A registered colormap by name."""
    import matplotlib

    return matplotlib.colormaps[name]
