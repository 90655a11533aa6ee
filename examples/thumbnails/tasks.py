"""An image-thumbnail pipeline (the talk's pipeline pattern): resize, then frame, then publish.

    queueit worker examples.thumbnails.tasks:app
    python -m examples.thumbnails.send photo.ppm [more.ppm ...]

Each step gets the previous step's result (a file path) and runs on whichever worker is free;
the next step is sent in the same broker step as the previous one's ack. Images are binary
PPM (P6) files, handled in pure Python so the example needs no imaging library. Output goes
to ``THUMBNAILS_DIR`` (default ./thumbnails).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from queueit import App

app = App(os.environ.get("QUEUEIT_URL", "queueit://127.0.0.1:61613"))


def out_dir() -> Path:
    path = Path(os.environ.get("THUMBNAILS_DIR", "thumbnails"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_ppm(path: Path) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes) of a binary PPM with maxval 255."""
    data = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:  # magic, width, height, maxval; comments start with '#'
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or fields[3] != b"255":
        raise ValueError(f"{path} is not a binary PPM with maxval 255")
    width, height = int(fields[1]), int(fields[2])
    pixels = data[pos + 1 : pos + 1 + width * height * 3]
    if len(pixels) != width * height * 3:
        raise ValueError(f"{path} is truncated")
    return width, height, pixels


def write_ppm(path: Path, width: int, height: int, pixels: bytes) -> None:
    path.write_bytes(b"P6\n%d %d\n255\n" % (width, height) + pixels)


@app.job(queue="images", retries=2)
def resize(path: str, width: int) -> str:
    """Nearest-neighbour scale to ``width`` pixels wide, keeping the aspect ratio."""
    w, h, pixels = read_ppm(Path(path))
    height = max(1, round(h * width / w))
    rows = []
    for y in range(height):
        src_row = (y * h // height) * w * 3
        row = bytearray()
        for x in range(width):
            i = src_row + (x * w // width) * 3
            row += pixels[i : i + 3]
        rows.append(bytes(row))
    target = out_dir() / f"{Path(path).stem}-{width}.ppm"
    write_ppm(target, width, height, b"".join(rows))
    return str(target)


@app.job(queue="images")
def frame(path: str, pixels: int = 2) -> str:
    """Draw a black frame ``pixels`` wide inside the image's edge."""
    w, h, data = read_ppm(Path(path))
    image = bytearray(data)
    for y in range(h):
        for x in range(w):
            if x < pixels or y < pixels or x >= w - pixels or y >= h - pixels:
                image[(y * w + x) * 3 : (y * w + x) * 3 + 3] = b"\x00\x00\x00"
    target = Path(path).with_name(f"{Path(path).stem}-framed.ppm")
    write_ppm(target, w, h, bytes(image))
    return str(target)


@app.job(queue="images")
def publish(path: str, gallery: str) -> None:
    """Add the thumbnail to the gallery's index (a JSON-lines file)."""
    with (out_dir() / f"{gallery}.jsonl").open("a") as index:
        index.write(json.dumps({"thumbnail": path}) + "\n")


def make_thumbnail(path: str, width: int = 64, gallery: str = "gallery") -> str:
    """Start the pipeline for one image; returns the first step's job id."""
    return app.pipeline(resize.s(path, width), frame.s(), publish.s(gallery=gallery)).send()
