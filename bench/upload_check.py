"""How long checking and keeping an upload takes, and how much memory: a full-size dataset accepted, bombs refused.

Full Fashion-MNIST (70,000 images, Debian's dataset-fashion-mnist) is uploaded three ways, as the browser would
send it (bytes in memory): a .tar.gz of its four gzipped IDX files, a .zip of them, and an .npz in Keras'
layout; each into a fresh runs directory, then the same data again by another person (stored once, so only
checked and hashed). Then two bombs are refused: a zip holding 200 MB of zeros in 0.2 MB, a tar.gz holding
100 MB of zeros. Run: .venv/bin/python bench/upload_check.py
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.access import OPERATOR, member  # noqa: E402
from core.data import DEBIAN_FASHION_DIR  # noqa: E402
from core.datafiles import IDX_FILES, DatasetError, read_idx_folder  # noqa: E402
from core.uploads import add_upload  # noqa: E402

SECOND = member({"iss": "https://id.example.org", "sub": "second"}, operators=frozenset())


def archives() -> dict[str, bytes]:
    files = {path.name: path.read_bytes() for path in sorted(DEBIAN_FASHION_DIR.glob("*.gz"))}
    as_tar, as_zip, as_npz = io.BytesIO(), io.BytesIO(), io.BytesIO()
    with tarfile.open(fileobj=as_tar, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"fashion/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    with zipfile.ZipFile(as_zip, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    np.savez_compressed(as_npz, **read_idx_folder(DEBIAN_FASHION_DIR))
    return {"fashion.tar.gz": as_tar.getvalue(), "fashion.zip": as_zip.getvalue(), "fashion.npz": as_npz.getvalue()}


def bombs() -> dict[str, bytes]:
    zipped, tarred = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open(IDX_FILES["x_train"], "w", force_zip64=True) as handle:
            for _ in range(50):
                handle.write(bytes(4_000_000))
    with tarfile.open(fileobj=tarred, mode="w:gz", compresslevel=1) as archive:
        info = tarfile.TarInfo(IDX_FILES["x_train"])
        info.size = 100_000_000
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    return {"bomb.zip (200 MB of zeros)": zipped.getvalue(), "bomb.tar.gz (100 MB of zeros)": tarred.getvalue()}


def measure(data: bytes, name: str, runs_dir: Path, identity) -> tuple[float, int, str]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        upload = add_upload(data, name, runs_dir, identity=identity)
        outcome = f"kept {upload.train:,} + {upload.test:,} images, {upload.size / 1e6:.1f} MB stored"
    except DatasetError as error:
        outcome = f"refused: {str(error)[:70]}…"
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak, outcome


def main() -> None:
    if not DEBIAN_FASHION_DIR.is_dir():
        sys.exit(f"needs Debian's dataset-fashion-mnist in {DEBIAN_FASHION_DIR}")
    print("| upload | size (MB) | seconds | peak memory (MB) | outcome |\n| --- | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in {**archives(), **bombs()}.items():
            runs_dir = Path(scratch) / name.split()[0]
            rows = [(name, *measure(data, name.split()[0], runs_dir, OPERATOR))]
            if not name.startswith("bomb"):
                rows.append((f"{name}, again by another person", *measure(data, name, runs_dir, SECOND)))
            for label, seconds, peak, outcome in rows:
                print(f"| {label} | {len(data) / 1e6:.1f} | {seconds:.2f} | {peak / 1e6:.0f} | {outcome} |")


if __name__ == "__main__":
    main()
