"""Face extraction on its own: the crops the detector trains on, as PNG files to look at or to
train other tools with.

  python3 -m deepfake faces --input DIR [--frames 8] [--size 224]

Every video or image under --input (any layout) gives --frames evenly sampled frames; the
largest frontal face of each (OpenCV's bundled Haar cascade) is cropped with a margin and
resized. Outputs (LAUNCH_OUTPUT_DIR, default ./outputs): faces/<file>_<k>.png, faces.jsonl (one
line per file: frames, faces found, or the reason it was skipped), summary.json (files, frames,
faces found, frames/s). A rerun skips the files faces.jsonl already lists; SIGTERM stops between
files (exit 143).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from . import files
from .files import EXIT_USAGE, STOP, Run
from .media import IMAGE_EXT, VIDEO_EXT, FaceCropper, read_frames


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python3 -m deepfake faces", description=__doc__)
    p.add_argument("--input", type=Path, required=True, help="a folder of videos and/or images")
    p.add_argument("--frames", type=int, default=8, help="frames sampled evenly per video")
    p.add_argument("--size", type=int, default=224, help="crop size in pixels")
    p.add_argument("--margin", type=float, default=0.25, help="around the face, per side")
    p.add_argument("--output-dir", type=Path, default=None)
    args = p.parse_args(argv)
    if args.frames < 1 or args.size < 8 or args.margin < 0:
        p.error("--frames must be >= 1, --size >= 8, --margin >= 0")
    STOP.arm()
    run = Run(files.output_dir(args.output_dir), files.checkpoint_dir(), "faces.log")
    if not args.input.is_dir():
        run.log(f"error: --input {args.input} is not a folder", err=True)
        return EXIT_USAGE
    paths = sorted(
        f
        for f in args.input.rglob("*")
        if f.is_file() and f.suffix.lower() in VIDEO_EXT | IMAGE_EXT
    )
    if not paths:
        run.log(f"error: no videos or images under {args.input}", err=True)
        return EXIT_USAGE
    manifest = run.out / "faces.jsonl"
    done = set()
    if manifest.is_file():
        done = {json.loads(ln)["file"] for ln in manifest.read_text().splitlines() if ln.strip()}
    out = run.out / "faces"
    out.mkdir(exist_ok=True)
    cropper = FaceCropper(args.size, margin=args.margin)
    t0 = time.monotonic()
    frames_seen = found_total = made = 0
    for path in paths:
        rel = path.relative_to(args.input).as_posix()
        if rel in done:
            continue
        if STOP.requested:
            break
        frames = read_frames(path, args.frames)
        if frames is None:
            run.log(f"skipping corrupt or unreadable file {path}", err=True)
            files.append_jsonl(manifest, {"file": rel, "status": "unreadable"})
            continue
        # a short hash keeps names from different folders apart
        stem = f"{path.stem}-{hashlib.sha1(rel.encode()).hexdigest()[:6]}"
        found = 0
        for k, frame in enumerate(frames):
            crop, ok = cropper.crop(frame)
            found += ok
            good, png = cv2.imencode(".png", np.ascontiguousarray(crop[..., ::-1]))
            if good:
                files.atomic_write_bytes(out / f"{stem}_{k:03d}.png", png.tobytes())
        frames_seen += len(frames)
        found_total += found
        made += 1
        record = {"file": rel, "status": "ok", "frames": len(frames), "faces_found": found,
                  "crops": f"faces/{stem}_*.png"}  # fmt: skip
        files.append_jsonl(manifest, record)
    seconds = time.monotonic() - t0
    rows = (
        [json.loads(ln) for ln in manifest.read_text().splitlines()] if manifest.is_file() else []
    )
    stopped = STOP.requested and len(rows) < len(paths)
    summary = {
        "status": "interrupted" if stopped else "completed",
        "files": len(paths),
        "done": len(rows),
        "unreadable": sum(r["status"] == "unreadable" for r in rows),
        "read_this_run": made,
        "frames": sum(r.get("frames", 0) for r in rows),
        "faces_found": sum(r.get("faces_found", 0) for r in rows),
        "frames_per_s": round(frames_seen / seconds, 1) if seconds > 0 and frames_seen else None,
        "detector": "opencv-haar:haarcascade_frontalface_default",
        "size": args.size,
    }
    files.atomic_write_json(run.out / "summary.json", summary)
    run.log(f"faces: {made} files read ({len(rows) - made} done before), {frames_seen} frames, "
            f"{found_total} with a face")  # fmt: skip
    return 128 + int(STOP.signum or 15) if stopped else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
