"""Draw bertrt's layers and the imports between its packages, read from the code (docs/architecture.png).

    python scripts/architecture_picture.py docs/architecture.png

One row per layer of bertrt/layers.py (bottom layer at the bottom), one box per package (a stage folder, a
sub-package of bertrt, or a core module group), an arrow per package pair that imports, labelled with the number
of import statements. Drawn with matplotlib (no graphviz needed), from the same scan tests/test_layers.py checks.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a script that writes a file: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from bertrt.layers import LAYERS, bertrt_imports, layer_of, rank, source_modules  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def package_of(module: str) -> str:
    """The box a module is drawn in: bertrt.<sub> for sub-packages and stages, the layer name for core modules."""
    parts = module.split(".")
    layer = layer_of(module)
    if layer in ("core", "interface") or len(parts) < 2:
        return layer
    return ".".join(parts[:2])


def edges(root: Path) -> tuple[dict[str, str], Counter]:
    modules = source_modules(root)
    boxes: dict[str, str] = {}
    counts: Counter = Counter()
    for module, path in modules.items():
        src = package_of(module)
        boxes[src] = layer_of(module)
        for imp in bertrt_imports(path, modules):
            dst = package_of(imp.module)
            if dst != src and layer_of(imp.module) is not None:
                boxes.setdefault(dst, layer_of(imp.module))
                counts[(src, dst)] += 1
    return boxes, counts


def draw(output: Path, root: Path = ROOT) -> None:
    boxes, counts = edges(root)
    rows = {name: [b for b in sorted(boxes) if boxes[b] == name] for name, _, _ in LAYERS}
    fig, ax = plt.subplots(figsize=(13, 1.25 * len(LAYERS) + 1))
    where = {}
    for name, description, _ in LAYERS:
        y = rank(name)
        ax.text(-0.02, y, f"{name}\n{description}", ha="right", va="center", fontsize=8, color="0.35")
        members = rows[name]
        for i, box in enumerate(members):
            # a lone box off-centre on alternate rows, so arrows between rows do not all run down one line
            x = (i + 1) / (len(members) + 1) if len(members) > 1 else (0.42 if y % 2 else 0.58)
            where[box] = (x, y)
            label = box.removeprefix("bertrt.") if box not in LAYER_LABELS else LAYER_LABELS[box]
            ax.text(x, y, label, ha="center", va="center", fontsize=9, zorder=3,
                    bbox={"boxstyle": "round,pad=0.4", "fc": "#e8f0fb", "ec": "#4a6fa5"})
    for (src, dst), n in sorted(counts.items()):
        (x0, y0), (x1, y1) = where[src], where[dst]
        upward = y1 > y0
        ax.annotate("", xy=(x1, y1 + (0.18 if y1 < y0 else -0.18 if upward else 0)),
                    xytext=(x0, y0 + (-0.18 if y1 < y0 else 0.18 if upward else 0)),
                    arrowprops={"arrowstyle": "->", "color": "#c0392b" if upward else "0.55", "lw": 0.6 + 0.15 * n,
                                "shrinkA": 4, "shrinkB": 4, "connectionstyle": "arc3,rad=0.08", "alpha": 0.6},
                    zorder=1)
    ax.set_xlim(-0.35, 1.02)
    ax.set_ylim(-0.6, len(LAYERS) - 0.4)
    ax.axis("off")
    ax.set_title("bertrt: layers (bottom to top) and imports between packages (grey: down or sideways, "
                 "red: upward — there should be none)", fontsize=10)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


LAYER_LABELS = {"core": "bertrt core modules", "interface": "cli, api, arg_groups, stage CLIs"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    draw(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
