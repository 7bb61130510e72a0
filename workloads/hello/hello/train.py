"""Train a logistic-regression classifier with minibatch SGD (momentum) on two Gaussian blobs.

Standard library only (and launchkit, which every bundle carries), CPU only, a second or two
for the default 20 epochs. It follows the launch workload contract with launchkit's helpers, so
a run can stop on one machine and continue on another:

  LAUNCH_OUTPUT_DIR      one JSON line per epoch in metrics.jsonl; summary.json at the end
                         (default ./outputs)
  LAUNCH_CHECKPOINT_DIR  ckpt-epoch-NNNN.json after every epoch, written atomically, newest 3
                         kept (default ./checkpoints)
  LAUNCH_RESUME_FROM     a checkpoint to continue from, at the next epoch (exit 2 if unusable)
  SIGTERM / SIGINT       abort the epoch in progress, save the last completed epoch, exit 143/130

Usage (from workloads/hello):  python3 -m hello.train --epochs 20 [--epoch-seconds 0.5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from typing import Any

import launchkit as lk

FORMAT = "hello-ckpt/1"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
KEEP_CHECKPOINTS = 3

N_POINTS = 2000  # the whole synthetic dataset; 20% is held out for accuracy
BATCH_SIZE = 32
MOMENTUM = 0.9
# Class 0 and class 1 centres; unit variance. They overlap: the best possible accuracy is ~0.9.
CENTRES = ((-0.5, 2.5), (1.5, 0.5))

EXIT_BAD_RESUME = 2
EXIT_INJECTED_FAILURE = 3


def pace_until(deadline: float, stop: lk.StopFlag) -> bool:
    """Sleep until `deadline` (monotonic) in short slices; False as soon as a stop is asked."""
    while not stop.requested:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.05))
    return False


# ----------------------------------------------------------------------------- data and model


def make_data(seed: int) -> tuple[list[tuple[float, float, int]], list[tuple[float, float, int]]]:
    """Two seeded Gaussian blobs, shuffled, split 80/20 into train and held-out sets."""
    rng = random.Random(seed)
    points = []
    for i in range(N_POINTS):
        label = i % 2
        cx, cy = CENTRES[label]
        points.append((rng.gauss(cx, 1.0), rng.gauss(cy, 1.0), label))
    rng.shuffle(points)
    cut = N_POINTS * 4 // 5
    return points[:cut], points[cut:]


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def log_loss(p: float, y: int) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return -math.log(p) if y else -math.log(1.0 - p)


def evaluate(w: list[float], data: list[tuple[float, float, int]]) -> tuple[float, float]:
    """(mean log loss, accuracy) of weights w = [w1, w2, bias] on data."""
    loss = 0.0
    correct = 0
    for x1, x2, y in data:
        p = sigmoid(w[0] * x1 + w[1] * x2 + w[2])
        loss += log_loss(p, y)
        correct += (p >= 0.5) == (y == 1)
    return loss / len(data), correct / len(data)


# ----------------------------------------------------------------------------- files


def checkpoint_name(epoch: int) -> str:
    return f"ckpt-epoch-{epoch:04d}.json"


def save_checkpoint(state: dict[str, Any]) -> None:
    """The checkpoint of `state`, written whole or not at all; the newest few are kept."""
    data = json.dumps(state, sort_keys=True).encode()
    lk.save_checkpoint(lk.checkpoint_dir(), checkpoint_name(state["epoch"]), data, KEEP_CHECKPOINTS)


def load_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint at `path`, validated; ValueError/OSError with a readable reason if not."""
    with open(path, encoding="utf-8") as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not a hello checkpoint (expected format {FORMAT!r})")
    try:
        epoch = int(state["epoch"])
        weights = [float(v) for v in state["weights"]]
        velocity = [float(v) for v in state["optimizer"]["velocity"]]
        version, internal, gauss_next = state["rng_state"]
        rng_state = (int(version), tuple(int(v) for v in internal), gauss_next)
        random.Random().setstate(rng_state)  # proves the state is usable
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"missing or malformed field ({type(e).__name__}: {e})") from None
    if epoch < 0 or len(weights) != 3 or len(velocity) != 3:
        raise ValueError("malformed epoch, weights or optimizer state")
    state["epoch"], state["weights"], state["rng_state"] = epoch, weights, rng_state
    state["optimizer"]["velocity"] = velocity
    return state


# ----------------------------------------------------------------------------- training


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m hello.train", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20, help="total epochs (default 20)")
    p.add_argument("--lr", type=float, default=0.002, help="SGD learning rate (default 0.002)")
    p.add_argument("--seed", type=int, default=0, help="data and shuffling seed (default 0)")
    p.add_argument(
        "--epoch-seconds",
        type=float,
        default=0.0,
        help="make each epoch last at least this long (demos, interruption tests); default 0",
    )
    p.add_argument(
        "--fail-at-epoch",
        type=int,
        default=None,
        metavar="N",
        help="exit 3 when epoch N starts (failure-path tests)",
    )
    args = p.parse_args(argv)
    if args.epochs < 0 or args.lr <= 0 or args.epoch_seconds < 0:
        p.error("--epochs must be >= 0, --lr > 0 and --epoch-seconds >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # One line per epoch must reach a piped log (the agent's tee) when it is printed.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    stop = lk.StopFlag.install()
    out_dir = lk.output_dir()
    lk.checkpoint_dir()
    resume_path = lk.resume_from()

    greeting = os.environ.get("HELLO_GREETING")
    if greeting:
        print(f"{greeting} from hello (pid {os.getpid()})")

    train, held_out = make_data(args.seed)
    weights = [0.0, 0.0, 0.0]  # w1, w2, bias
    velocity = [0.0, 0.0, 0.0]
    rng = random.Random(args.seed + 1)  # minibatch order; saved with every checkpoint
    start_epoch = 0
    resumed_from: int | None = None

    if resume_path:
        try:
            state = load_checkpoint(resume_path)
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            print(f"error: cannot resume from {resume_path}: {reason}", file=sys.stderr)
            return EXIT_BAD_RESUME
        if state.get("seed") != args.seed:
            print(
                f"warning: checkpoint was made with --seed {state.get('seed')}, "
                f"this run uses --seed {args.seed}",
                file=sys.stderr,
            )
        weights = state["weights"]
        velocity = state["optimizer"]["velocity"]
        rng.setstate(state["rng_state"])
        start_epoch = resumed_from = state["epoch"]
        print(f"resumed from epoch {start_epoch} ({resume_path})")

    def snapshot(epoch: int) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "epoch": epoch,
            "weights": list(weights),
            "optimizer": {
                "name": "sgd-momentum",
                "lr": args.lr,
                "momentum": MOMENTUM,
                "velocity": list(velocity),
            },
            "rng_state": rng.getstate(),
            "seed": args.seed,
            "time": time.time(),
        }

    metrics_path = out_dir / METRICS
    last_state = snapshot(start_epoch)  # what a stop now must save: the last completed epoch
    done = start_epoch
    status = "completed"
    exit_code = 0
    t_run = time.monotonic()
    train_seconds = 0.0
    samples = 0
    batches = [
        list(range(i, min(i + BATCH_SIZE, len(train)))) for i in range(0, len(train), BATCH_SIZE)
    ]

    for epoch in range(start_epoch + 1, args.epochs + 1):
        if stop.requested:
            break
        if args.fail_at_epoch is not None and epoch == args.fail_at_epoch:
            print(f"error: injected failure at epoch {epoch} (--fail-at-epoch)", file=sys.stderr)
            status, exit_code = "failed", EXIT_INJECTED_FAILURE
            break
        t0 = time.monotonic()
        order = list(range(len(train)))
        rng.shuffle(order)
        running = 0.0
        aborted = False
        for b, batch in enumerate(batches):
            g = [0.0, 0.0, 0.0]
            for k in batch:
                x1, x2, y = train[order[k]]
                p = sigmoid(weights[0] * x1 + weights[1] * x2 + weights[2])
                running += log_loss(p, y)
                err = p - y
                g[0] += err * x1
                g[1] += err * x2
                g[2] += err
            for j in range(3):
                velocity[j] = MOMENTUM * velocity[j] - args.lr * g[j] / len(batch)
                weights[j] += velocity[j]
            if args.epoch_seconds and not pace_until(
                t0 + args.epoch_seconds * (b + 1) / len(batches), stop
            ):
                aborted = True
                break
        if aborted:
            # Drop the partial epoch: the state to save is the last completed one.
            weights[:] = last_state["weights"]
            velocity[:] = last_state["optimizer"]["velocity"]
            rng.setstate(last_state["rng_state"])
            break
        seconds = time.monotonic() - t0
        train_seconds += seconds
        samples += len(train)
        loss = running / len(train)
        _, acc = evaluate(weights, held_out)
        lk.append_jsonl(
            metrics_path,
            {
                "epoch": epoch,
                "loss": round(loss, 6),
                "accuracy": round(acc, 6),
                "lr": args.lr,
                "seconds": round(seconds, 6),
                "samples_per_s": round(len(train) / seconds, 1) if seconds > 0 else None,
            },
        )
        last_state = snapshot(epoch)
        save_checkpoint(last_state)
        done = epoch
        print(f"epoch {epoch}/{args.epochs} loss={loss:.4f} acc={acc:.3f}")

    if stop.requested and status == "completed":
        status = "interrupted"
        save_checkpoint(last_state)
        print(f"checkpoint saved on {stop.name} at epoch {last_state['epoch']}")
        exit_code = stop.exit_code

    final_loss, final_acc = evaluate(weights, held_out)
    train_loss, _ = evaluate(weights, train)
    summary = {
        "status": status,
        "epochs_done": done,
        "epochs_requested": args.epochs,
        "final_loss": round(train_loss, 6),
        "final_eval_loss": round(final_loss, 6),
        "final_accuracy": round(final_acc, 6),
        "total_seconds": round(time.monotonic() - t_run, 6),
        "train_seconds": round(train_seconds, 6),
        "samples_per_s": round(samples / train_seconds, 1) if train_seconds > 0 else None,
        "device": "cpu",
        "resumed_from": resumed_from,
        "weights": [round(v, 6) for v in weights],
    }
    lk.atomic_write_text(out_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    if status == "completed":
        print(f"done: {done} epochs, loss={train_loss:.4f} acc={final_acc:.3f}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
