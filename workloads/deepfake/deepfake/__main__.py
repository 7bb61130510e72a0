"""python3 -m deepfake {generate,train,evaluate,benchmark} ...

Each subcommand imports only what it needs (diffusers for generate, transformers for the
detectors), so `--help` stays quick.
"""

from __future__ import annotations

import sys

COMMANDS = {
    "generate": "text-to-video clips with diffusers (a real model id, or --tiny-random)",
    "faces": "face crops (OpenCV Haar cascade) of videos and images, as PNG files",
    "train": "face crops -> CNN / ViT / ensemble detector; then evaluate + benchmark",
    "evaluate": "a trained detector on a dataset: accuracy, AUC, F1, EER, ROC + confusion PNGs",
    "benchmark": "inference speed of a trained detector: samples/s, latency percentiles",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        out = sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr
        print("usage: python3 -m deepfake COMMAND [--help]\n\ncommands:", file=out)
        for name, what in COMMANDS.items():
            print(f"  {name:<10} {what}", file=out)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=out)
        return 0 if out is sys.stdout else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "generate":
        from .generate import main as run
    elif cmd == "faces":
        from .faces import main as run
    elif cmd == "train":
        from .train import main as run
    elif cmd == "evaluate":
        from .evaluate import main as run
    else:
        from .bench import main as run
    return run(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
