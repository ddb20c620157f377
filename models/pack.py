"""Pack a dataset's training and validation splits small, to train on another machine.

    .venv/bin/python -m models.pack runs/pose/data OUT.tar [--imgsz 320] [--quality 75] [--max-bytes N]

A training machine lent for minutes takes the repository and little else (the device tool carries 64 MiB in
all), while ``models.dataset`` writes camera frames at full size (640 x 480 JPEG, ~50 kB).  Training at
``imgsz`` shrinks every frame to that long side anyway, so the frames are shrunk here with ``INTER_AREA`` and
stored as WebP (~7 kB at quality 75, against ~19 kB for JPEG at 90); labels are in normalised coordinates and
are copied as they are.  The held-out ``test`` split stays behind: evaluation runs here, on full frames.

The tar holds ``data/`` as ``models.train --out X`` expects it under ``X``: images, labels, ``data.yaml``
(its ``path`` is set again where training starts), ``manifest.json`` and the frames' sources.  With
``--max-bytes`` the training split is cut so that the tar fits (its last frames in name order stay behind).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tarfile
from pathlib import Path

import cv2

from models.dataset import image_files

log = logging.getLogger("models.pack")

SPLITS = ("train", "val")


def shrink(image, imgsz: int):
    """``image`` with its long side at most ``imgsz`` (area interpolation, aspect kept)."""
    h, w = image.shape[:2]
    s = imgsz / max(h, w)
    if s >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _packed_split(root: Path, split: str, names: list[str], persons: int) -> dict:
    """The manifest's figures of a split as packed (the training split may be cut): images, persons and,
    where the frames' sources say, the seeds they came from."""
    out: dict = {"images": len(names), "persons": persons}
    frames = root / f"{split}_frames.json"
    if frames.is_file():
        sources = json.loads(frames.read_text()).get("sources", {})
        seeds = {sources[n]["seed"] for n in names if "seed" in sources.get(n, {})}
        if seeds:
            out["seeds"] = sorted(seeds)
    return out


def pack(root: Path, dst: Path, imgsz: int = 320, quality: int = 75, max_bytes: int | None = None) -> dict:
    """Write ``dst`` (an uncompressed tar: WebP does not compress further) and return what went in."""
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    extras = [name for name in ("data.yaml", *(f"{s}_frames.json" for s in SPLITS)) if (root / name).is_file()]
    # what goes in after the frames: those files, the manifest, headers, the tar's end and record padding
    reserve = sum((root / n).stat().st_size + 1024 for n in extras) + len(json.dumps(manifest, indent=1)) + 13_000
    counts: dict[str, int] = {}
    packed: dict[str, list[str]] = {}
    persons: dict[str, int] = {}
    with tarfile.open(dst, "w") as tar:
        for split in reversed(SPLITS):  # validation first: it must go in whole
            images = image_files(root / "images" / split)
            if not images and split == "val":
                raise ValueError(f"{root}: no validation images (ultralytics validates every epoch)")
            n = 0
            packed[split], persons[split] = [], 0
            for path in images:
                image = cv2.imread(str(path))
                if image is None:
                    raise ValueError(f"{path}: not an image")
                ok, webp = cv2.imencode(".webp", shrink(image, imgsz), [cv2.IMWRITE_WEBP_QUALITY, quality])
                if not ok:
                    raise ValueError(f"{path}: WebP encoding failed")
                label = (root / "labels" / split / f"{path.stem}.txt").read_bytes()
                if max_bytes is not None and tar.offset + len(webp) + len(label) + 2048 + reserve > max_bytes:
                    if split == "val":
                        raise ValueError(f"--max-bytes {max_bytes}: the validation split alone does not fit")
                    log.info("%s: stopped at %d of %d images", split, n, len(images))
                    break
                _add(tar, f"data/images/{split}/{path.stem}.webp", webp.tobytes())
                _add(tar, f"data/labels/{split}/{path.stem}.txt", label)
                packed[split].append(path.stem)
                persons[split] += len(label.splitlines())
                n += 1
            counts[split] = n
        manifest = dict(manifest, packed={"imgsz": imgsz, "webp_quality": quality, "images": counts})
        manifest["splits"] = {k: dict(v, **_packed_split(root, k, packed[k], persons[k]))
                              for k, v in manifest["splits"].items() if k in SPLITS}
        for name in extras:
            _add(tar, f"data/{name}", (root / name).read_bytes())
        _add(tar, "data/manifest.json", json.dumps(manifest, indent=1).encode())
    log.info("packed %s -> %s: %s, %.1f MB", root, dst, counts, dst.stat().st_size / 1e6)
    return {"images": counts, "bytes": dst.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    p = argparse.ArgumentParser(prog="python -m models.pack", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="a dataset written by models.dataset (OUT/data of models.train)")
    p.add_argument("dst", type=Path, help="the tar to write")
    p.add_argument("--imgsz", type=int, default=320, help="long side of the packed frames")
    p.add_argument("--quality", type=int, default=75, help="WebP quality, 1-100")
    p.add_argument("--max-bytes", type=int, default=None, help="cut the training split so the tar fits")
    args = p.parse_args(argv)
    if not 1 <= args.quality <= 100:
        p.error("--quality must be within 1-100")
    try:
        pack(args.root, args.dst, args.imgsz, args.quality, args.max_bytes)
    except (OSError, ValueError) as exc:
        args.dst.unlink(missing_ok=True)
        print(f"models.pack: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
