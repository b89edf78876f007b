"""Statistics as the paper shows them: the table of mean APoZ per group, and one APoZ
histogram per group."""

from __future__ import annotations

from pathlib import Path

from pytrim.core.files import together
from pytrim.stats.collect import Stats


def table(stats: Stats) -> str:
    """The paper's table form: mean APoZ per group."""
    lines = [f"{'layer':<20} {'width':>6} {'N':>7} {'M':>6} {'mean APoZ':>10} {'std':>8}  note"]
    for name, layer in stats.layers.items():
        note = "" if layer.relu else "no ReLU: outputs <= 0 counted"
        if len(layer.points) > 1:
            note = f"mean over {len(layer.points)} outputs ({', '.join(p.blob for p in layer.points)}) {note}"
        lines.append(
            f"{name:<20} {layer.width:>6} {layer.images:>7} {layer.positions:>6} "
            f"{layer.mean:>9.2%} {layer.std:>8.4f}  {note.strip()}"
        )
    return "\n".join(lines)


def histograms(stats: Stats, out_dir: str | Path) -> list[Path]:
    """One PNG histogram of APoZ per layer (the paper's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, layer in stats.layers.items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(layer.apoz * 100, bins=50, range=(0, 100), color="#4477aa")
        ax.axvline(layer.mean * 100, color="k", linestyle="--", label=f"mean {layer.mean:.1%}")
        ax.axvline((layer.mean + layer.std) * 100, color="#cc3311", linestyle=":", label="mean + 1 std")
        ax.set(
            xlabel="APoZ (%)", ylabel="neurons", title=f"{name}: {stats.widths[name]} neurons, {layer.images} images"
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"apoz_{name.replace('/', '_')}.png"
        with together([path]) as (partial,):
            fig.savefig(partial, dpi=90, format="png")
        plt.close(fig)
        written.append(path)
    return written
