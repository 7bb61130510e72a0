"""The training loop: compile under the distribution strategy, one fit() per epoch, checkpoint
after each, resume exactly, stop promptly on a signal.

Exact resume: the shuffle order of epoch e is drawn from (seed, e), not from a running RNG, and
a checkpoint holds every model variable (weights and the dropout seed state), every optimizer
variable (Adam moments, the step count that drives the LR schedule, the loss scale under
mixed_float16) and the metrics so far; so a resumed run computes what the uninterrupted one did.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import files
from .model import WarmupCosine, build_model, choose_precision, device_name, gpus, make_strategy


@dataclass
class Env:
    strategy: tf.distribute.Strategy
    precision: str
    device: str
    xla: bool


def setup(args: argparse.Namespace, run: Any) -> Env:
    for g in gpus():
        # grow on demand: without it TF reserves all GPU memory and the peak says nothing
        tf.config.experimental.set_memory_growth(g, True)
    strategy = make_strategy(args.cpu_replicas)
    precision = choose_precision(args.precision)
    keras.mixed_precision.set_global_policy(precision)
    xla = args.xla
    if xla and not gpus() and strategy.num_replicas_in_sync > 1:
        # XLA puts every logical CPU on the one XLA CPU device, so mirrored variables fail
        # ("resource .../replica_1 located in device CPU:1 from device CPU:0")
        run.log("warning: --xla does not work with --cpu-replicas > 1; XLA off", err=True)
        xla = False
    if xla:
        tf.config.optimizer.set_jit(True)  # auto-clustering for the rest (VGG19, input ops)
    dev = device_name()
    run.log(
        f"device: {dev}, {strategy.num_replicas_in_sync} replica(s), precision {precision}, "
        f"xla {'on' if xla else 'off'}, tensorflow {tf.__version__}"
    )
    return Env(strategy, precision, dev, xla)


class _Epoch(keras.callbacks.Callback):
    """Stops fit() after the current batch on a signal; times the training part of the epoch."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        super().__init__()
        self.should_stop = should_stop
        self.t0 = self.train_seconds = 0.0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.t0, self.train_seconds = time.monotonic(), 0.0

    def on_test_begin(self, logs: Any = None) -> None:
        if not self.train_seconds:
            self.train_seconds = time.monotonic() - self.t0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.should_stop():
            self.model.stop_training = True


def _compile(args: argparse.Namespace, env: Env, shape: tuple[int, int], steps: int) -> Any:
    keras.utils.set_random_seed(args.seed)
    with env.strategy.scope():
        model = build_model(shape[0], shape[1], args.units, args.dropout, args.seed)
        sched = WarmupCosine(args.lr, round(args.warmup_epochs * steps), args.epochs * steps)
        opt = keras.optimizers.Adam(learning_rate=sched, clipnorm=args.clipnorm or None)
        if args.focal_gamma > 0:
            loss: Any = keras.losses.CategoricalFocalCrossentropy(
                alpha=args.focal_alpha,
                gamma=args.focal_gamma,
                label_smoothing=args.label_smoothing,
            )
        else:
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)
        # jit_compile explicit: Keras' "auto" would turn XLA on by itself on some GPUs
        model.compile(optimizer=opt, loss=loss, metrics=["accuracy"], jit_compile=env.xla)
        model.optimizer.build(model.trainable_variables)  # its variables exist before a resume
    return model, sched


def _dataset(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, batch: int) -> tf.data.Dataset:
    onehot = np.eye(2, dtype=np.float32)[y]
    parts = (x, onehot) if w is None else (x, onehot, w)
    return tf.data.Dataset.from_tensor_slices(parts).batch(batch).prefetch(tf.data.AUTOTUNE)


def _values(variables: list[Any]) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def _assign(variables: list[Any], arrays: list[np.ndarray], what: str) -> None:
    if len(variables) != len(arrays):
        raise ValueError(f"it has {len(arrays)} {what} variables, this model {len(variables)}")
    for v, a in zip(variables, arrays, strict=True):
        if tuple(v.shape) != a.shape:
            raise ValueError(f"{what} variable {v.path}: shape {a.shape}, expected {v.shape}")
        v.assign(a)


def train(
    args: argparse.Namespace,
    run: Any,
    env: Env,
    data: dict[str, Any],
    stop: Any,
    val_scores: Callable[[np.ndarray, np.ndarray], dict[str, Any]],
) -> int:
    x_tr, y_tr, x_val, y_val = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    n_tr = len(x_tr)
    steps = math.ceil(n_tr / args.batch_size)
    model, sched = _compile(args, env, x_tr.shape[1:], steps)
    counts = np.bincount(y_tr, minlength=2)
    # "balanced" weights n / (2 * count): the seed's {0: 2.27, 1: 0.64} for a 22/78 split
    class_w = n_tr / (2.0 * np.maximum(counts, 1))
    w_tr = None if args.no_class_weights else class_w[y_tr].astype(np.float32)
    val_ds = _dataset(x_val, y_val, None, args.batch_size)
    config = {"frames": int(x_tr.shape[1]), "dim": int(x_tr.shape[2]), "units": args.units,
              "precision": env.precision}  # fmt: skip
    records: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_accuracy": -1.0, "val_loss": math.inf, "epoch": None}
    start = 0
    resumed_from: int | None = None
    resume = _resume_path()
    if resume:
        try:
            meta, mv, ov = files.load_state(Path(resume))
            diff = {k: (meta["config"].get(k), v) for k, v in config.items()
                    if k != "precision" and meta["config"].get(k) != v}  # fmt: skip
            if diff:
                raise ValueError(f"made with other settings {diff}")
            _assign(model.variables, mv, "model")
            _assign(model.optimizer.variables, ov, "optimizer")
        except (OSError, ValueError, KeyError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            run.log(f"error: cannot resume from {resume}: {reason}", err=True)
            return 2
        records, best = list(meta["records"]), dict(meta["best"])
        start = resumed_from = meta["epoch"]
        run.log(f"resumed from epoch {start} ({resume})")
        # metrics.jsonl := the checkpoint's epochs: lines a killed run wrote past its last
        # checkpoint go (they are redone); a fresh output dir elsewhere gets the earlier ones
        files.atomic_write_bytes(
            run.out / "metrics.jsonl",
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode(),
        )

    def snapshot(epoch: int) -> bytes:
        meta = {
            "epoch": epoch,
            "records": records,
            "best": best,
            "config": config,
            "args": {k: str(v) for k, v in vars(args).items()},
            "time": time.time(),
        }
        return files.pack_state(meta, _values(model.variables), _values(model.optimizer.variables))

    timer = _Epoch(stop.requested)
    callbacks: list[Any] = [timer]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(
            keras.callbacks.TensorBoard(str(run.out / "tensorboard"), histogram_freq=1)
        )
    else:
        run.log("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
    run.log(
        f"violence: {n_tr} train / {len(x_val)} val videos (violent {int(counts[1])}, "
        f"non-violent {int(counts[0])}), class weights "
        f"{'off' if w_tr is None else [round(float(c), 3) for c in class_w]}, "
        f"{model.count_params()} params, epochs {start + 1}..{args.epochs}"
    )
    last = (start, snapshot(start))  # what a stop saves: the last completed epoch
    t_run, train_s, seen, steady = time.monotonic(), 0.0, 0, []
    for epoch in range(start + 1, args.epochs + 1):
        if stop.requested():
            break
        t0 = time.monotonic()
        lr = float(sched(int(model.optimizer.iterations.numpy())))
        perm = np.random.default_rng([args.seed, epoch]).permutation(n_tr)
        ds = _dataset(
            x_tr[perm], y_tr[perm], None if w_tr is None else w_tr[perm], args.batch_size
        )
        hist = model.fit(ds, validation_data=val_ds, initial_epoch=epoch - 1, epochs=epoch,
                         verbose=0, callbacks=callbacks, shuffle=False)  # fmt: skip
        if stop.requested():
            break  # stopped mid-epoch: the weights are part-way; `last` is what gets saved
        probs = np.asarray(model.predict(x_val, batch_size=args.batch_size, verbose=0))
        seconds = time.monotonic() - t0
        fit_s = timer.train_seconds or seconds
        train_s, seen = train_s + fit_s, seen + n_tr
        if epoch > start + 1:  # the first epoch of a process includes tracing/compiling
            steady.append(n_tr / fit_s)
        h = {k: float(v[-1]) for k, v in hist.history.items()}
        record = {
            "epoch": epoch,
            "loss": round(h["loss"], 6),
            "accuracy": round(h["accuracy"], 4),
            "val_loss": round(h["val_loss"], 6),
            "val_accuracy": round(h["val_accuracy"], 4),
            **val_scores(probs, y_val),
            "lr": lr,
            "seconds": round(seconds, 4),
            "samples_per_s": round(n_tr / fit_s, 1),
            "time": round(time.time(), 3),
        }
        files.append_jsonl(run.out / "metrics.jsonl", record)
        records.append(record)
        if (h["val_accuracy"], -h["val_loss"]) > (best["val_accuracy"], -best["val_loss"]):
            best = {"val_accuracy": h["val_accuracy"], "val_loss": h["val_loss"], "epoch": epoch}
            # best first: the agent resumes from the newest file, which must be the epoch's
            files.atomic_write_bytes(run.ckpt / "ckpt-best.npz", snapshot(epoch))
            tmp = run.out / ".best_model.tmp.keras"
            model.save(tmp)
            tmp.replace(run.out / "best_model.keras")
        last = (epoch, snapshot(epoch))
        files.save_checkpoint(run.ckpt, *last)
        run.log(
            f"epoch {epoch}/{args.epochs} loss={h['loss']:.4f} acc={h['accuracy']:.3f} "
            f"val_loss={h['val_loss']:.4f} val_acc={h['val_accuracy']:.3f} lr={lr:.2e} "
            f"{seconds:.2f}s {n_tr / fit_s:.0f} samples/s"
        )
        while time.monotonic() < t0 + args.epoch_seconds and not stop.requested():
            time.sleep(0.05)

    status, code = "completed", 0
    if stop.requested():
        status = "interrupted"
        files.save_checkpoint(run.ckpt, *last)
        sig = stop.signum or signal.SIGTERM
        run.log(f"checkpoint saved on {signal.Signals(sig).name} at epoch {last[0]}")
        code = 128 + int(sig)
    summary = {
        "status": status,
        "epochs_done": last[0],
        "epochs_requested": args.epochs,
        "train_videos": n_tr,
        "val_videos": len(x_val),
        "skipped_videos": data["skipped"],
        "features": data["features"],
        "best": best if best["epoch"] else None,
        "final": records[-1] if records else None,
        "total_seconds": round(time.monotonic() - t_run, 3),
        "train_seconds": round(train_s, 3),
        "samples_per_s": round(seen / train_s, 1) if train_s else None,
        "steady_samples_per_s": round(float(np.median(steady)), 1) if steady else None,
        "device": "gpu" if gpus() else "cpu",
        "device_name": env.device,
        "replicas": env.strategy.num_replicas_in_sync,
        "precision": env.precision,
        "xla": env.xla,
        "peak_gpu_memory_mb": _peak_gpu_mb(),
        "resumed_from": resumed_from,
        "params": model.count_params(),
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    files.atomic_write_json(run.out / "summary.json", summary)
    if status == "completed":
        run.log(f"done: {last[0]} epochs, best val_accuracy {best['val_accuracy']:.3f}")
    return code


def _resume_path() -> str | None:
    return os.environ.get("LAUNCH_RESUME_FROM") or None


def _peak_gpu_mb() -> list[float] | None:
    devs = gpus()
    if not devs:
        return None
    return [
        round(tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"] / 2**20, 1)
        for i in range(len(devs))
    ]
