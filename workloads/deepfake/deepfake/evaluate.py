"""Scores of a detector: accuracy, AUC, F1, precision, recall and EER, per frame and per file
(the mean fake probability of a file's frames), per member and for the ensemble; a ROC curve and
a confusion matrix as PNG files (matplotlib, Agg).

  python3 -m deepfake evaluate --checkpoint ckpt-best.pt --data-dir DIR [--split test]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import files
from .files import EXIT_USAGE, Run, UsageError


def scores(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Binary metrics of fake probabilities `p` against labels `y` (1 = fake)."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
        roc_curve,
    )

    pred = (p >= threshold).astype(int)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "confusion": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "auc": None,
        "eer": None,
    }
    if len(set(y.tolist())) == 2:  # AUC and EER need both classes
        out["auc"] = float(roc_auc_score(y, p))
        fpr, tpr, _ = roc_curve(y, p)
        i = int(np.nanargmin(np.abs(fpr - (1 - tpr))))
        out["eer"] = float((fpr[i] + 1 - tpr[i]) / 2)
    return out


def per_file(y: np.ndarray, p: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, mean fake probability) per file."""
    ids = np.unique(owner)
    return (
        np.asarray([y[owner == i][0] for i in ids]),
        np.asarray([p[owner == i].mean() for i in ids]),
    )


@torch.no_grad()
def predict(
    detector: Any, x_u8: torch.Tensor, batch: int, device: torch.device, amp: Any
) -> dict[str, np.ndarray]:
    """P(fake) per sample for each member and for the ensemble ("ensemble": the mean)."""
    from .models import Detector

    detector.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, x_u8.shape[0], batch):
        x = to_input(x_u8[start : start + batch], device)
        with torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
            logits = detector(x)
        for name, v in logits.items():
            parts.setdefault(name, []).append(torch.softmax(v.float(), -1)[:, 1].cpu())
        parts.setdefault("ensemble", []).append(Detector.fake_prob(logits).cpu())
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def to_input(x_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1] on `device`."""
    return x_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)


def headline_model(probs: dict[str, np.ndarray]) -> str:
    """The ensemble's score when there are several members, else the one member's."""
    return "ensemble" if len(probs) > 2 else next(k for k in probs if k != "ensemble")


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The decision threshold with the best Youden J (TPR - FPR) on these (validation) scores:
    an untrained or miscalibrated detector can rank perfectly and still sit on one side of
    0.5. 0.5 when there is one class only."""
    from sklearn.metrics import roc_curve

    if len(set(y.tolist())) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    i = int(np.argmax(tpr - fpr))
    return float(min(thr[i], 1.0))


def report(
    out: Path, y: np.ndarray, probs: dict[str, np.ndarray], owner: np.ndarray, title: str,
    threshold: float = 0.5,
) -> dict[str, Any]:  # fmt: skip
    """eval.json's content, and roc.png + confusion.png written atomically into `out`."""
    result: dict[str, Any] = {"frames": {}, "files": {}, "threshold": threshold}
    for name, p in probs.items():
        result["frames"][name] = scores(y, p, threshold)
        fy, fp = per_file(y, p, owner)
        result["files"][name] = scores(fy, fp, threshold)
    main = headline_model(probs)
    result["headline"] = {"model": main, **result["files"][main]}
    plot_roc(out / "roc.png", y, probs, title)
    plot_confusion(out / "confusion.png", result["frames"][main]["confusion"], f"{title} ({main})")
    return result


def _save(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    files.atomic_write_bytes(path, buf.getvalue())


def plot_roc(path: Path, y: np.ndarray, probs: dict[str, np.ndarray], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in probs.items():
        if len(set(y.tolist())) < 2:
            break
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {title}")
    ax.legend(loc="lower right")
    _save(fig, path)
    plt.close(fig)


def plot_confusion(path: Path, cm: list[list[int]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(np.asarray(cm), cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(cm[i][j]), ha="center", va="center")
    names = ["real", "fake"]
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title=title)  # fmt: skip
    _save(fig, path)
    plt.close(fig)


def load_detector(path: Path) -> tuple[Any, dict[str, Any]]:
    """(detector with the checkpoint's weights, the checkpoint)."""
    from . import ckpt
    from .models import Spec, rebuild

    try:
        state = ckpt.load(path)
        detector = rebuild(Spec.from_dict(state["spec"]))
        detector.load_state_dict(state["model"])
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise UsageError(f"cannot load {path}: {reason}") from None
    return detector, state


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python3 -m deepfake evaluate", description=__doc__)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True, help="real/fake class folders")
    p.add_argument("--split", choices=("test", "val", "train", "all"), default="all")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="P(fake) above which a sample is called fake (train's eval.json has "
                   "the one chosen on validation)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--face-cache", type=Path, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--output-dir", type=Path, default=None)
    args = p.parse_args(argv)
    out = files.output_dir(args.output_dir)
    run = Run(out, files.checkpoint_dir(), "evaluate.log")
    try:
        result = evaluate_cli(args, run)
    except UsageError as e:
        run.log(f"error: {e}", err=True)
        return EXIT_USAGE
    h = result["headline"]
    run.log(f"eval: {h['model']} accuracy {h['accuracy']:.4f} auc {h['auc']} f1 {h['f1']:.4f}")
    return 0


def evaluate_cli(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    from .data import FaceSet, FaceStats, load_split, scan
    from .runtime import Amp, pick_device

    if not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir} does not exist")
    detector, state = load_detector(args.checkpoint)
    cfg = state["config"]
    items = [i for i in scan(args.data_dir) if args.split in ("all", i.split)]
    if not items:
        raise UsageError(f"no real/fake files in the {args.split} split of {args.data_dir}")
    cache = args.face_cache or run.out / "face_cache"
    faces = FaceSet(cache, int(cfg["frames"]), int(cfg["img_size"]), lambda m: run.log(m, True))
    stats = FaceStats()
    loaded = load_split(items, faces, stats, lambda: False)
    assert loaded is not None
    x, y, owner = loaded
    if len(y) == 0:
        raise UsageError("no readable file to evaluate")
    device = pick_device(args.device)
    detector.to(device)
    probs = predict(detector, torch.from_numpy(x), args.batch_size, device, Amp.off())
    result = report(run.out, y, probs, owner, f"{args.split} split", args.threshold)
    result["faces"] = stats.as_dict()
    result["checkpoint"] = str(args.checkpoint)
    files.atomic_write_json(run.out / "eval.json", result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main(sys.argv[1:]))
