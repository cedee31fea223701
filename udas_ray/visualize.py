"""Pictures for people: prediction grids, confusion matrices, plots (PNG arrays)."""

from __future__ import annotations

import io

import numpy as np

from udas_ray import classes


def prediction_grid(images: np.ndarray, predictions: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """One row per image: the image | the prediction | the ground truth, in the Cityscapes palette."""
    rows = []
    for i in range(len(images)):
        tiles = [images[i], classes.colorize(predictions[i])]
        if labels is not None:
            tiles.append(classes.colorize(labels[i]))
        gap = np.full((images.shape[1], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


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
                ax.text(j, i, f"{norm[i, j]:.2f}"[1:] if norm[i, j] < 1 else "1", ha="center", va="center",
                        fontsize=5, color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (rows normalised)")
    out = figure_to_array(fig)
    plt.close(fig)
    return out
