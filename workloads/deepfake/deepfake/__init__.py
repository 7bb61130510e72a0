"""Deepfake / AI-video detection stack: text-to-video generation (diffusers), face extraction
(OpenCV Haar cascades), CNN / ViT / ensemble detectors (transformers), evaluation and an
inference benchmark. Run `python3 -m deepfake --help`."""

__version__ = "0.1.0"
