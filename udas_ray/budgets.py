"""The data-dependency experiment: how much labeled target data the method saves.

For each labeled-target budget the supervised baseline (SL: labeled target only) and UDAS
(teacher + rounds with that many labels) are trained; mIoU against the number of labeled
images gives two curves. Budgets are counts, "all", or fractions in (0, 1) of the target
train split (proportional budgets for the embedded benchmark).
"""

from __future__ import annotations

from pathlib import Path

from udas_ray import atomic
from udas_ray.errors import UdasError


def resolve_budgets(budgets: list, available: int) -> list[int]:
    """Budgets as image counts, largest first, duplicates dropped; too large -> UdasError."""
    counts = []
    for b in budgets:
        if isinstance(b, str):
            if b.strip().lower() != "all":
                raise UdasError(f"data_dependency.budgets: {b!r} is neither a count, a fraction nor 'all'")
            n = available
        elif isinstance(b, float) and not b.is_integer():
            if not 0 < b < 1:
                raise UdasError(f"data_dependency.budgets: fraction {b} must be in (0, 1)")
            n = max(1, round(b * available))
        else:
            n = int(b)
            if n < 0:
                raise UdasError(f"data_dependency.budgets: {n} is negative")
            if n > available:
                raise UdasError(f"data_dependency.budgets: {n} labeled images asked for but the target train "
                                f"split holds {available}; lower it or use 'all'")
        counts.append(n)
    return sorted(set(counts), reverse=True)


def plot(table: list[dict], path: str | Path, title: str) -> Path:
    """mIoU against labeled images, one curve for SL and one for UDAS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, marker in (("supervised", "SL (labeled target only)", "o"), ("udas", "UDAS", "s")):
        points = sorted((r["labeled"], r[key]) for r in table if r.get(key) is not None)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=label)
    ax.set_xlabel("labeled target images")
    ax.set_ylabel("target-val mIoU (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_table(table: list[dict], path: str | Path) -> Path:
    return atomic.write_json(path, {"budgets": table})


def format_table(table: list[dict]) -> str:
    lines = [f"{'labeled':>8}  {'SL mIoU':>8}  {'UDAS mIoU':>9}  UDAS stage", "-" * 44]
    for r in table:
        sl = "-" if r.get("supervised") is None else f"{r['supervised']:8.2f}"
        lines.append(f"{r['labeled']:>8}  {sl:>8}  {r['udas']:9.2f}  {r['udas_stage']}")
    return "\n".join(lines)
