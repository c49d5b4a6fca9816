"""What scoring writes for people: the CSV of scores, heatmap overlays and the validation grid."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import cv2
import numpy as np

from anomaly_ae.fileio import write_bytes_atomic

#: ``path`` is relative to the input folder (``\\xNN`` for bytes that are not UTF-8); ``size_bytes`` and
#: ``mtime_ns`` describe the input file as it was scored, so a resumed run re-scores a replaced file
CSV_COLUMNS = ("path", "score", "is_anomaly", "threshold", "error", "size_bytes", "mtime_ns")


def heatmap_overlay(
    image: np.ndarray, amap: np.ndarray, value_range: tuple[float, float], alpha: float = 0.45
) -> np.ndarray:
    """Blend a JET-coloured map onto the image; returns BGR uint8 ``(H, W, 3)`` for ``cv2.imwrite``.

    Args:
        image: uint8 ``(H, W, 1|3)`` (RGB) at its original size.
        amap: ``(H, W)`` anomaly map at the same size.
        value_range: map values shown as the coldest and hottest colours; anomaly-ae uses the
            median of validation-good maps and the level of the image threshold, so red means "at
            or above the alarm level" and a good image stays blue.
    """
    lo, hi = value_range
    norm = np.clip((amap.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    if image.ndim == 2 or image.shape[2] == 1:
        base = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    else:
        base = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return cv2.addWeighted(base, 1.0 - alpha, colour, alpha, 0.0)


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` RGB/gray images tiled into one BGR/gray uint8 image for ``cv2.imwrite``."""
    n, h, w, c = images.shape
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = im
    return cv2.cvtColor(grid, cv2.COLOR_RGB2BGR) if c == 3 else grid[..., 0]


def write_png_atomic(path: Path, image: np.ndarray) -> None:
    """Encode and write a PNG through a temporary file, so a crash never leaves half a file."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    write_bytes_atomic(path, buf.tobytes())


def write_npy_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` (float32, no pickle) through a temporary file."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, np.float32), allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def read_scores(path: Path) -> list[list[str]]:
    """The rows (header dropped) of a ``scores.csv`` or its ``.partial``, as they are (any length).

    A last line cut off by a crash (no line end) is dropped, so that its input is scored again; bytes
    that are not UTF-8 (a hand-edited file) become U+FFFD instead of an error. See
    :func:`anomaly_ae.score_run.valid_row` for which rows a resumed run keeps.
    """
    text = path.read_bytes().decode("utf-8", "replace").replace("\x00", "")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    return rows[1:]


class ScoresCsv:
    """``scores.csv`` written row by row (flushed) into ``<name>.partial`` and renamed when closed.

    ``keep`` rows (from an interrupted run being resumed) are written first, after the header.
    """

    def __init__(self, path: Path, keep: list[list[str]] | None = None) -> None:
        self.path = path
        self._partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        # header (and the rows kept from an interrupted run) written atomically, then appended to
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        w.writerows(keep or [])
        write_bytes_atomic(self._partial, buf.getvalue().encode("utf-8"))
        self._f = open(self._partial, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._w = csv.writer(self._f)

    def write(self, path: str, score: float | None, threshold: float, error: str = "",
              stat: tuple[int, int] | None = None) -> None:
        """One row, flushed; ``score=None`` for a file that could not be scored.

        ``stat``: ``(size_bytes, mtime_ns)`` of the input as it was read (empty when unknown).
        """
        size, mtime = ("", "") if stat is None else (str(stat[0]), str(stat[1]))
        if score is None:
            self._w.writerow([path, "", "", f"{threshold:.8g}", error, size, mtime])
        else:
            self._w.writerow([path, f"{score:.8g}", str(bool(score > threshold)).lower(), f"{threshold:.8g}", "",
                              size, mtime])
        self._f.flush()

    def close(self) -> None:
        """Flush to disk and move into place."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._partial, self.path)


def reconstruction_grid(
    x: np.ndarray, x_hat: np.ndarray, maps: np.ndarray, value_range: tuple[float, float], n: int = 8
) -> bytes:
    """PNG bytes of a 3-row grid: images, reconstructions, heatmaps (first ``n`` of ``(N, H, W, C)``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(x))
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    cmap = "gray" if x.shape[-1] == 1 else None
    for i in range(n):
        for row, (img, title) in enumerate(((x[i], "image"), (x_hat[i], "reconstruction"))):
            axes[row, i].imshow(np.clip(img.squeeze(-1) if cmap else img, 0, 1), cmap=cmap, vmin=0, vmax=1)
            axes[row, i].set_title(title if i == 0 else "", fontsize=8, loc="left")
        axes[2, i].imshow(maps[i], cmap="jet", vmin=value_range[0], vmax=value_range[1])
        axes[2, i].set_title("anomaly map" if i == 0 else "", fontsize=8, loc="left")
        for row in range(3):
            axes[row, i].axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
