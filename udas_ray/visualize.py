"""Pictures for people: prediction grids, confusion matrices, plots (uint8 RGB arrays).

Grids of label maps are drawn with PIL, pixel for pixel: one row per image, a title over each
column, small images enlarged by a whole factor (nearest) so a 64-pixel-wide test image is
still legible, and a legend strip naming the 19 classes in their Cityscapes colours (black is
"ignored" everywhere). Plots with axes (confusion matrix, mIoU per stage) use matplotlib.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np

from udas_ray import classes

PREDICTIONS_FILE = "predictions.png"  # written into each segmentation stage's folder
CONFUSION_FILE = "confusion_matrix.png"
STAGE_MIOU_FILE = "miou_per_stage.png"  # written into the run folder at the end of a run

WHITE, BLACK, RED = (255, 255, 255), (0, 0, 0), (220, 30, 30)
GAP = 4  # pixels between tiles
SWATCH = 14  # legend colour squares


@functools.lru_cache(maxsize=None)
def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font (needs FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_width(text: str, font) -> int:
    return int(math.ceil(font.getlength(text)))


def _pad_width(picture: np.ndarray, width: int) -> np.ndarray:
    extra = width - picture.shape[1]
    if extra <= 0:
        return picture
    return np.concatenate([picture, np.full((picture.shape[0], extra, 3), 255, np.uint8)], axis=1)


def stack(pictures: list[np.ndarray]) -> np.ndarray:
    """Pictures one under the other, padded on the right with white to the widest."""
    width = max(p.shape[1] for p in pictures)
    return np.concatenate([_pad_width(p, width) for p in pictures], axis=0)


def legend(width: int, names=classes.CLASS_NAMES, palette=classes.PALETTE, note: str | None = None) -> np.ndarray:
    """A white strip of ``width`` pixels (wider if one entry needs it): a colour square and the
    name of each class, in as many columns as fit, then ``note`` as a line of text."""
    from PIL import Image, ImageDraw

    font, row_h, pad = _font(13), 20, 6
    col_w = SWATCH + 6 + max(_text_width(n, font) for n in names) + 16
    cols = max(1, min(len(names), (width - 2 * pad) // col_w))
    rows = math.ceil(len(names) / cols)
    note_lines = [] if not note else note.split("\n")
    height = 2 * pad + rows * row_h + len(note_lines) * row_h
    width = max(width, 2 * pad + col_w, 2 * pad + max([_text_width(n, font) for n in note_lines], default=0))
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    for i, (name, colour) in enumerate(zip(names, palette)):
        r, c = divmod(i, cols)  # row by row, as text is read
        x, y = pad + c * col_w, pad + r * row_h
        draw.rectangle([x, y + 2, x + SWATCH - 1, y + 2 + SWATCH - 1], fill=tuple(int(v) for v in colour))
        draw.text((x + SWATCH + 6, y + 1), name, fill=BLACK, font=font)
    for j, line in enumerate(note_lines):
        draw.text((pad, pad + (rows + j) * row_h + 1), line, fill=BLACK, font=font)
    return np.asarray(canvas)


def _enlarge(tiles: np.ndarray, min_width: int) -> np.ndarray:
    factor = max(1, math.ceil(min_width / tiles.shape[2]))
    return tiles.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else tiles


def tile_grid(columns: list[tuple[str, np.ndarray]], min_tile_width: int = 256) -> np.ndarray:
    """One row per image, one titled column per (title, (N, H, W, 3) uint8 tiles)."""
    from PIL import Image, ImageDraw

    tiles = [_enlarge(np.asarray(t, np.uint8), min_tile_width) for _, t in columns]
    n, h, w = tiles[0].shape[:3]
    font, head = _font(14), 22
    width = len(tiles) * w + (len(tiles) - 1) * GAP
    canvas = Image.new("RGB", (width, head + n * h + (n - 1) * GAP), WHITE)
    draw = ImageDraw.Draw(canvas)
    for c, ((title, _), column) in enumerate(zip(columns, tiles)):
        x = c * (w + GAP)
        draw.text((x + max(0, (w - _text_width(title, font)) // 2), 3), title, fill=BLACK, font=font)
        for r in range(n):
            canvas.paste(Image.fromarray(column[r]), (x, head + r * (h + GAP)))
    return np.asarray(canvas)


def prediction_grid(images: np.ndarray, predictions: np.ndarray, labels: np.ndarray | None = None,
                    with_legend: bool = True) -> np.ndarray:
    """One row per image: the image | the prediction | the ground truth, in the Cityscapes
    palette, with the class legend under them."""
    columns = [("image", images), ("prediction", classes.colorize(predictions))]
    if labels is not None:
        columns.append(("ground truth", classes.colorize(labels)))
    grid = tile_grid(columns)
    if not with_legend:
        return grid
    note = "black: ignored pixels (void in the ground truth)" if labels is not None else None
    return stack([grid, legend(grid.shape[1], note=note)])


def kept_mask(pseudo: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """White where a pseudo-label was kept, black where it is ignored (255), red where it was
    kept but differs from a known ground truth."""
    out = np.zeros(pseudo.shape + (3,), np.uint8)
    kept = pseudo != classes.IGNORE
    out[kept] = WHITE
    if truth is not None:
        out[kept & (truth != classes.IGNORE) & (pseudo != truth)] = RED
    return out


def pseudo_label_grid(images: np.ndarray, pseudo: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """One row per image: the image | its pseudo-label | the ground truth (when known) | which
    pixels were kept, with the class legend under them."""
    columns = [("image", images), ("pseudo-label", classes.colorize(pseudo))]
    if truth is not None:
        columns.append(("ground truth", classes.colorize(truth)))
    columns.append(("kept", kept_mask(pseudo, truth)))
    grid = tile_grid(columns)
    note = "black: ignored (under the confidence threshold; void in the ground truth)\n" + (
        "kept: white = kept, red = kept but wrong, black = ignored" if truth is not None
        else "kept: white = kept, black = ignored")
    return stack([grid, legend(grid.shape[1], note=note)])


def figure_to_array(fig) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def confusion_figure(cm: np.ndarray, names=classes.CLASS_NAMES) -> np.ndarray:
    """Row-normalised confusion matrix (ground truth rows, predictions columns) as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    for i in range(len(names)):
        for j in range(len(names)):
            if norm[i, j] >= 0.05:
                text = f"{norm[i, j]:.2f}"  # "0.82" is written ".82"; what rounds to 1.00 is "1"
                ax.text(j, i, "1" if text == "1.00" else text[1:], ha="center", va="center",
                        fontsize=6, color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (rows normalised)")
    out = figure_to_array(fig)
    plt.close(fig)
    return out


def stage_miou_figure(summary: dict) -> np.ndarray:
    """mIoU of each stage in pipeline order (bars, with ± std when the summary has it) over a
    heat map of the per-class IoU (stages x classes; grey = not measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["stages"]
    names = [r["name"] for r in rows]
    mious = np.array([np.nan if r.get("miou") is None else r["miou"] for r in rows], np.float64)
    stds = [r.get("miou_std") for r in rows]
    present = {c for r in rows for c in (r.get("per_class_iou") or {})}
    cls = [c for c in classes.CLASS_NAMES if c in present]
    iou = np.array([[np.nan if (r.get("per_class_iou") or {}).get(c) is None else r["per_class_iou"][c]
                     for c in cls] for r in rows], np.float64).reshape(len(rows), len(cls))

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8.0, 0.55 * len(cls) + 3), 3.2 + 0.42 * len(rows) + 1.6),
                                      gridspec_kw={"height_ratios": [3.2, 0.42 * len(rows) + 1.6]})
    x = np.arange(len(rows))
    errors = [s if s is not None else 0 for s in stds] if any(s is not None for s in stds) else None
    top.bar(x, np.nan_to_num(mious), yerr=errors, color="#4c72b0", capsize=3)
    top.plot(x, mious, color="#dd8452", marker="o")
    for i, m in enumerate(mious):
        if np.isfinite(m):
            top.annotate(f"{m:.1f}", (i, m), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=9)
    top.set_xticks(x, names, rotation=20, ha="right")
    top.set_ylabel("target-val mIoU (%)")
    top.set_ylim(0, max(10.0, np.nanmax(mious, initial=0) * 1.18 if np.isfinite(mious).any() else 10.0))
    top.set_title("mIoU per stage")
    top.grid(axis="y", alpha=0.3)

    cmap = plt.get_cmap("viridis").with_extremes(bad="#cccccc")
    im = bottom.imshow(np.ma.masked_invalid(iou), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    bottom.set_xticks(range(len(cls)), cls, rotation=60, ha="right", fontsize=8)
    bottom.set_yticks(range(len(rows)), names, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cls)):
            if np.isfinite(iou[i, j]):
                bottom.text(j, i, f"{iou[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if iou[i, j] < 55 else "black")
    bottom.set_title("IoU per class (%; grey: the class is not in target-val)")
    fig.colorbar(im, ax=bottom, fraction=0.025, pad=0.01)
    fig.tight_layout()
    out = figure_to_array(fig)
    plt.close(fig)
    return out
