"""The loss curves of every stage, one panel per stage, drawn with matplotlib's Agg backend.

Values come from the ``progress`` events' ``losses`` (:attr:`JobRecord.losses`). A panel uses a
logarithmic y axis when every value in it is positive and they span more than a factor of 100
(the fit's loss falls by orders of magnitude; PSNR and samples per ray sit beside it).
"""

from __future__ import annotations

import io

Curves = dict[str, dict[str, list[tuple[int, float]]]]
"""Stage -> loss name -> [(step, value)]."""


def plot_losses(losses: Curves, *, width_in: float = 5.0, height_in: float = 3.0, dpi: int = 100) -> bytes | None:
    """PNG bytes of the curves (panels side by side, ``width_in`` x ``height_in`` inches each);
    None when no stage reported a loss."""
    stages = [(stage, curves) for stage, curves in losses.items() if any(curves.values())]
    if not stages:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display: never a GUI backend in the backend process
    from matplotlib.figure import Figure  # a Figure without pyplot: no global state, no window

    figure = Figure(figsize=(width_in * len(stages), height_in), dpi=dpi)  # no layout engine: it doubles the cost
    figure.subplots_adjust(left=0.08 / len(stages), right=1 - 0.02 / len(stages), bottom=0.16, top=0.9, wspace=0.2)
    axes = figure.subplots(1, len(stages), squeeze=False)[0]
    for ax, (stage, curves) in zip(axes, stages):
        values = [v for points in curves.values() for _, v in points]
        for name, points in sorted(curves.items()):
            if points:
                steps, ys = zip(*points)
                ax.plot(steps, ys, label=name, linewidth=1.2, marker="." if len(points) < 20 else None)
        if min(values) > 0 and max(values) / min(values) > 100:
            ax.set_yscale("log")
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
