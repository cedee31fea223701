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


def _mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return mean, std


def table_rows(results: dict[tuple[int, int], dict]) -> tuple[list[dict], dict]:
    """Per budget, SL and UDAS (the final stage) and UDAS - SL, as mean and sample std over the
    seeds run (``results[(labeled, seed)]`` = a pipeline's summary); and the budget-free
    baselines (source-only, oracle) over every run that trained them."""
    from udas_ray.summary import final_stage

    rows, baselines = [], {}
    for n in sorted({n for n, _ in results}, reverse=True):
        per_seed = [results[key] for key in sorted(results) if key[0] == n]
        sl, udas, delta, stages = [], [], [], set()
        for result in per_seed:
            by_name = {r["name"]: r["miou"] for r in result["stages"]}
            final = final_stage(result["stages"])
            stages.add(final)
            udas.append(by_name[final])
            sl.append(by_name.get("supervised"))
            delta.append(None if sl[-1] is None else udas[-1] - sl[-1])
            for name in ("source_only", "oracle"):
                if name in by_name:
                    baselines.setdefault(name, []).append(by_name[name])
        row = {"labeled": n, "seeds": len(per_seed), "udas_stage": "/".join(sorted(stages)),
               "run_dirs": [r["run_dir"] for r in per_seed]}
        for key, values in (("supervised", sl), ("udas", udas), ("delta", delta)):
            row[key], row[f"{key}_std"] = _mean_std(values)
        rows.append(row)
    return rows, {name: dict(zip(("mean", "std"), _mean_std(v))) for name, v in baselines.items()}


def plot(table: list[dict], baselines: dict, path: str | Path, title: str) -> Path:
    """mIoU against labeled images: SL and UDAS (± std over seeds), source-only and oracle as
    lines; below, UDAS - SL per budget. The budgets are evenly spaced, smallest first (20 and
    101 labels would overlap on a linear axis that reaches 600)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["labeled"] for r in table})
    at = {n: i for i, n in enumerate(budgets)}
    fig, (ax, ax_delta) = plt.subplots(2, 1, figsize=(6, 6), sharex=True, height_ratios=(3, 1.4))
    for key, label, marker in (("supervised", "SL (labeled target only)", "o"), ("udas", "UDAS", "s")):
        points = sorted((r["labeled"], r[key], r.get(f"{key}_std") or 0.0) for r in table if r.get(key) is not None)
        if points:
            ax.errorbar([at[p[0]] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                        marker=marker, capsize=3, label=label)
    for name, style in (("oracle", "--"), ("source_only", ":")):
        if baselines.get(name, {}).get("mean") is not None:
            ax.axhline(baselines[name]["mean"], linestyle=style, color="grey", label=name.replace("_", "-"))
    ax.set_ylabel("target-val mIoU (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    deltas = sorted((r["labeled"], r["delta"], r.get("delta_std") or 0.0) for r in table if r.get("delta") is not None)
    if deltas:
        ax_delta.bar([at[d[0]] for d in deltas], [d[1] for d in deltas], yerr=[d[2] for d in deltas],
                     color=["tab:green" if d[1] >= 0 else "tab:red" for d in deltas], capsize=3, width=0.5)
        ax_delta.axhline(0, color="black", linewidth=0.8)
    ax_delta.set_xticks(range(len(budgets)), [str(n) for n in budgets])
    ax_delta.set_xlim(-0.5, len(budgets) - 0.5)
    ax_delta.set_xlabel("labeled target images")
    ax_delta.set_ylabel("UDAS - SL")
    ax_delta.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_table(table: list[dict], baselines: dict, path: str | Path) -> Path:
    return atomic.write_json(path, {"budgets": table, "baselines": baselines})


def _cell(row: dict, key: str) -> str:
    mean, std = row.get(key), row.get(f"{key}_std")
    if mean is None:
        return "-"
    return f"{mean:.1f} ± {std:.1f}" if std is not None else f"{mean:.1f}"


def format_table(table: list[dict], baselines: dict) -> str:
    lines = [f"{'labeled':>8}  {'seeds':>5}  {'SL mIoU':>12}  {'UDAS mIoU':>12}  {'UDAS - SL':>12}  UDAS stage",
             "-" * 72]
    for r in table:
        lines.append(f"{r['labeled']:>8}  {r['seeds']:>5}  {_cell(r, 'supervised'):>12}  {_cell(r, 'udas'):>12}  "
                     f"{_cell(r, 'delta'):>12}  {r['udas_stage']}")
    for name, stats in baselines.items():
        lines.append(f"{name}: {_cell({'v': stats['mean'], 'v_std': stats['std']}, 'v')}")
    return "\n".join(lines)
