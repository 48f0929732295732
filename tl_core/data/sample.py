"""Real labelled images for the demo, the tests and the benchmark.

The app ships a small sample (Fashion-MNIST clothes, written as PNG files in ``assets/sample``)
so that it works on first start with no download. Tests and the benchmark build larger folders
from Debian's ``dataset-fashion-mnist`` package with :func:`write_fashion_mnist`.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]
ASSETS_SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "sample"


def fashion_mnist_available() -> bool:
    return (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file()


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,28,28), labels uint8 (N,)) from the Debian package's IDX files."""
    prefix = "train" if split == "train" else "t10k"
    if not fashion_mnist_available():
        raise FileNotFoundError("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
    with gzip.open(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    return images, labels


def write_fashion_mnist(dest: str | Path, per_class: int, split: str = "train", classes: list[int] | None = None,
                        offset: int = 0, size: int | None = None) -> Path:
    """Write ``per_class`` PNGs per class into ``dest/<class>/``; ``offset`` skips the first
    images of each class so that disjoint folders can be drawn from the same split."""
    images, labels = load_fashion_mnist(split)
    dest = Path(dest)
    for c in classes if classes is not None else range(10):
        folder = dest / FASHION_CLASSES[c]
        folder.mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(labels == c)[offset:offset + per_class]
        for i in idx:
            im = Image.fromarray(images[i], mode="L")
            if size:
                im = im.resize((size, size), Image.BICUBIC)
            im.save(folder / f"{split}_{i:05d}.png")
    return dest


def sample_dir() -> Path:
    """The bundled sample data set."""
    return ASSETS_SAMPLE


def main() -> None:
    if ASSETS_SAMPLE.is_dir() and any(ASSETS_SAMPLE.iterdir()):
        print(f"Sample data: {ASSETS_SAMPLE}")
        return
    print(f"Writing the sample data set to {ASSETS_SAMPLE}")
    write_fashion_mnist(ASSETS_SAMPLE, per_class=40, classes=[0, 1, 5, 7, 8])


if __name__ == "__main__":
    main()
