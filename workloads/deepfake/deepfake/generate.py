"""Text-to-video generation with diffusers: the "fake" side of the detection stack.

  python3 -m deepfake generate --model-id damo-vilab/text-to-video-ms-1.7b --prompts-file P
  python3 -m deepfake generate --tiny-random            # offline: random-weight pipeline

Outputs (LAUNCH_OUTPUT_DIR, default ./outputs): videos/NNNN-<slug>.mp4, frames/NNNN.png (a
contact sheet of each clip), generation.jsonl (one line per clip: prompt, seed, seconds, peak GPU
memory), summary.json (seconds per video, peak memory, device, dtype, model). After each clip the
list of finished clips is saved atomically to LAUNCH_CHECKPOINT_DIR/generation-state.json; a run
resumed from it (LAUNCH_RESUME_FROM), or rerun in the same output dir, makes only the clips still
missing. SIGTERM/SIGINT stops after the clip in progress (exit 143/130).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from . import files
from .files import EXIT_USAGE, STOP, Run, UsageError

DEFAULT_PROMPTS = (
    "a news anchor speaking to the camera in a studio",
    "a close-up of a woman smiling and turning her head",
    "a man talking in a video call, indoor lighting",
    "an elderly person laughing outdoors, handheld camera",
)
STATE = "generation-state.json"
SMOKE = {"num_videos": 4, "num_frames": 8, "height": 32, "width": 32, "steps": 4}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m deepfake generate", description=__doc__)
    a = p.add_argument
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--model-id", default=None, help="a diffusers text-to-video model (hub id or folder)"
    )
    src.add_argument(
        "--tiny-random", action="store_true", help="random-weight tiny pipeline, offline"
    )
    a("--pipeline", choices=("text-to-video-sd", "wan"), default="text-to-video-sd",
      help="class of the --tiny-random pipeline (wan: --num-frames must be 4k + 1)")  # fmt: skip
    a("--prompt", action="append", default=[], help="a prompt (repeatable)")
    a("--prompts-file", type=Path, default=None, help="one prompt a line")
    a("--num-videos", type=int, default=0, help="clips to make, cycling the prompts (0: one each)")
    a("--num-frames", type=int, default=16)
    a("--height", type=int, default=256)
    a("--width", type=int, default=256)
    a("--steps", type=int, default=25, help="denoising steps")
    a("--guidance", type=float, default=9.0, help="classifier-free guidance scale")
    a("--fps", type=float, default=8.0)
    a("--seed", type=int, default=0, help="clip i uses seed + i")
    a("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
      help="auto: fp16 on CUDA, fp32 on CPU")  # fmt: skip
    a("--variant", default=None, help="weights variant to download, e.g. fp16")
    a(
        "--cpu-offload",
        action="store_true",
        help="model CPU offload (small GPUs; needs accelerate)",
    )
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--output-dir", type=Path, default=None)
    a("--smoke", action="store_true", help=f"--tiny-random at tiny sizes: {SMOKE}")
    if "--smoke" in argv:
        p.set_defaults(**SMOKE, tiny_random=True)
    args = p.parse_args(argv)
    if args.smoke and args.model_id:
        p.error("--smoke builds the tiny random pipeline; drop --model-id")
    if not args.model_id and not args.tiny_random:
        p.error("give --model-id ID (a real model) or --tiny-random (offline check)")
    if min(args.num_frames, args.height, args.width, args.steps) < 1 or args.num_videos < 0:
        p.error("--num-frames/--height/--width/--steps must be >= 1, --num-videos >= 0")
    return args


def prompts_of(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file is not None:
        try:
            text = args.prompts_file.read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(
                f"cannot read --prompts-file {args.prompts_file}: {e.strerror}"
            ) from None
        prompts += [
            ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")
        ]
        if not prompts:
            raise UsageError(f"--prompts-file {args.prompts_file} has no prompt")
    prompts = prompts or list(DEFAULT_PROMPTS)
    n = args.num_videos or len(prompts)
    return [prompts[i % len(prompts)] for i in range(n)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "clip"


def load_pipeline(args: argparse.Namespace, device: Any, dtype: Any) -> Any:
    if args.tiny_random:
        from . import tinypipe

        try:
            return tinypipe.build(args.pipeline, args.seed).to(device)
        except ValueError as e:
            raise UsageError(str(e)) from None
    from diffusers import DiffusionPipeline

    # the pipeline class comes from the model's model_index.json (TextToVideoSD, Wan, CogVideoX)
    kw: dict[str, Any] = {"torch_dtype": dtype}
    if args.variant:
        kw["variant"] = args.variant
    try:
        pipe = DiffusionPipeline.from_pretrained(args.model_id, **kw)
    except Exception as e:  # noqa: BLE001 - hub, file and config errors come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot load model {args.model_id}: {first}") from None
    pipe.set_progress_bar_config(disable=True)
    if args.cpu_offload and device.type == "cuda":
        pipe.enable_model_cpu_offload()
    else:
        pipe = pipe.to(device)
    for name in ("enable_vae_slicing", "enable_vae_tiling"):  # lower peak memory when decoding
        fn = getattr(getattr(pipe, "vae", None), name, None)
        if callable(fn):
            fn()
    return pipe


def load_state(path: str | None, run: Run) -> list[dict[str, Any]]:
    """Clips finished earlier: from LAUNCH_RESUME_FROM, else this output dir's jsonl."""
    if path:
        try:
            state = json.loads(Path(path).read_text())
            done = list(state["clips"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"cannot resume from {path}: {e}") from None
        return done
    manifest = run.out / "generation.jsonl"
    if not manifest.is_file():
        return []
    return [json.loads(ln) for ln in manifest.read_text().splitlines() if ln.strip()]


def contact_sheet(frames: Any) -> Any:
    """Up to 8 frames side by side (uint8 RGB)."""
    import numpy as np

    idx = np.linspace(0, len(frames) - 1, min(8, len(frames))).round().astype(int)
    return np.concatenate([frames[i] for i in idx], axis=1)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    STOP.arm()
    run = Run(files.output_dir(args.output_dir), files.checkpoint_dir(), "generate.log")
    try:
        return generate(args, run)
    except UsageError as e:
        run.log(f"error: {e}", err=True)
        return EXIT_USAGE


def generate(args: argparse.Namespace, run: Run) -> int:
    import cv2
    import numpy as np
    import torch

    from .media import write_video
    from .runtime import peak_memory_mb

    prompts = prompts_of(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA device")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(
        args.dtype, torch.float16 if cuda else torch.float32
    )
    done = {c["index"]: c for c in load_state(os.environ.get("LAUNCH_RESUME_FROM"), run)}
    # a clip counts as done only if its file is here (a fresh output dir elsewhere redoes it)
    # and it was made from the same prompt
    done = {
        i: c
        for i, c in done.items()
        if i < len(prompts) and c.get("prompt") == prompts[i] and (run.out / c["video"]).is_file()
    }
    todo = [i for i in range(len(prompts)) if i not in done]
    (run.out / "videos").mkdir(exist_ok=True)
    (run.out / "frames").mkdir(exist_ok=True)
    files.write_jsonl(run.out / "generation.jsonl", [done[i] for i in sorted(done)])
    model = f"tiny-random:{args.pipeline}" if args.tiny_random else args.model_id
    run.log(f"generate: {len(prompts)} clips ({len(done)} already done) with {model} on "
            f"{device} {str(dtype).removeprefix('torch.')}, {args.num_frames} frames "
            f"{args.height}x{args.width}, {args.steps} steps")  # fmt: skip
    t_load = time.monotonic()
    pipe = load_pipeline(args, device, dtype) if todo else None
    load_seconds = time.monotonic() - t_load
    status, exit_code = "completed", 0
    for i in todo:
        if STOP.requested:
            break
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.monotonic()
        out = pipe(  # type: ignore[misc]
            prompts[i], num_frames=args.num_frames, height=args.height, width=args.width,
            num_inference_steps=args.steps, guidance_scale=args.guidance, output_type="np",
            generator=torch.Generator("cpu").manual_seed(args.seed + i),
        )  # fmt: skip
        frames = np.asarray(out.frames[0])
        if frames.dtype != np.uint8:
            frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
        seconds = time.monotonic() - t0
        name = f"{i:04d}-{slug(prompts[i])}"
        write_video(run.out / "videos" / f"{name}.mp4", frames, args.fps)
        sheet = contact_sheet(frames)[..., ::-1]
        ok, png = cv2.imencode(".png", np.ascontiguousarray(sheet))
        if ok:
            files.atomic_write_bytes(run.out / "frames" / f"{name}.png", png.tobytes())
        clip = {
            "index": i, "prompt": prompts[i], "seed": args.seed + i,
            "video": f"videos/{name}.mp4", "frames": int(frames.shape[0]),
            "height": int(frames.shape[1]), "width": int(frames.shape[2]),
            "seconds": round(seconds, 3),
            "peak_gpu_memory_mb": peak_memory_mb(device),
            "time": round(time.time(), 3),
        }  # fmt: skip
        files.append_jsonl(run.out / "generation.jsonl", clip)
        done[i] = clip
        files.atomic_write_json(run.ckpt / STATE, {"clips": [done[k] for k in sorted(done)]})
        run.log(f"clip {i + 1}/{len(prompts)}: {clip['video']} in {seconds:.2f}s")
    if STOP.requested and len(done) < len(prompts):
        sig = STOP.signum or 15
        status, exit_code = "interrupted", 128 + int(sig)
        run.log(f"stopped by signal {sig}: {len(done)}/{len(prompts)} clips done, state saved")
    timed = [done[k]["seconds"] for k in todo if k in done]  # clips made by this run
    peaks = [c["peak_gpu_memory_mb"] for c in done.values() if c.get("peak_gpu_memory_mb")]
    summary = {
        "status": status,
        "videos_done": len(done),
        "videos_requested": len(prompts),
        "made_this_run": len(timed),
        "seconds_per_video": round(sum(timed) / len(timed), 3) if timed else None,
        "load_seconds": round(load_seconds, 3),
        "peak_gpu_memory_mb": max(peaks) if peaks else None,
        "model": model,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device.type,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "versions": files.versions(),
    }
    files.atomic_write_json(run.out / "summary.json", summary)
    if status == "completed":
        run.log(f"done: {len(done)} clips, {summary['seconds_per_video']} s/clip")
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
