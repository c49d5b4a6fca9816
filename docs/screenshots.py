"""Regenerate the README's pictures: ``docs/images/report.png`` and ``docs/images/heatmap_legend.jpg``.

    python docs/screenshots.py            # about 2 minutes on a 2-core CPU

It trains ``configs/fast.yaml`` on ``sample_data/metal_plate`` (``make sample-data`` makes it),
evaluates the model (``report.html``), scores one anomalous test image with the heatmap legend,
and renders the report with a headless Chromium (``apt-get install chromium``). Nothing is drawn
by hand: the pictures are what the commands wrote. Work files go to ``runs/screenshots/``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def rel(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it (what the report then shows)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run(*args: str) -> None:
    """An ``anomaly-ae`` command, stopping on failure."""
    print("$ anomaly-ae", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "anomaly_ae", *args, "--quiet"], cwd=ROOT, check=True)


def browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no headless browser found: install Chromium (Debian: apt-get install chromium)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "sample_data" / "metal_plate")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "screenshots")
    parser.add_argument("--image", default="scratch/000.png", help="test image (relative to DATA/test) to show")
    args = parser.parse_args()
    chrome = browser()
    if args.work.exists():
        shutil.rmtree(args.work)
    model, evaluation, scores = args.work / "model", args.work / "eval", args.work / "scores"
    run("train", rel(args.data / "train" / "good"), "--config", "configs/fast.yaml", "--out", rel(model),
        "--no-track")
    run("evaluate", rel(model), rel(args.data), "--out", rel(evaluation), "--no-track")
    run("score", rel(model), rel(args.data / "test" / args.image), "--out", rel(scores))
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(scores / "heatmaps" / f"{Path(args.image).name}.jpg", args.out / "heatmap_legend.jpg")
    report = (evaluation / "report.html").resolve()
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile; no background connections (offline CI)
        subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={(args.out / 'report.png').resolve()}", "--window-size=1480,3250",
                        report.as_uri()], check=True, capture_output=True, timeout=120)
    print(f"wrote {args.out / 'report.png'} and {args.out / 'heatmap_legend.jpg'}")


if __name__ == "__main__":
    main()
