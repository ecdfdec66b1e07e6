"""What every chart of the package shares: matplotlib imported on demand, the legend font and one look per method."""

from __future__ import annotations

LEGEND_FONT = 9
# One look per method: colour, marker and line style all change, and markers are hollow, so curves
# that coincide still show every method.
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_LINES = ("-", "--", "-.", ":")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported when a plot is drawn (it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_styles(methods) -> dict[str, dict]:
    """Plot keyword arguments per method, by the method's position, so every chart of a report agrees."""
    return {m: dict(color=_COLOURS[i % len(_COLOURS)], marker=_MARKERS[i % len(_MARKERS)],
                    linestyle=_LINES[i % len(_LINES)], markerfacecolor="none", markersize=7, linewidth=1.6)
            for i, m in enumerate(dict.fromkeys(methods))}
