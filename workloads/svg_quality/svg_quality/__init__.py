"""svg_quality: predict the SSIM of a VTracer vectorization from image features + parameters."""

__version__ = "0.1.0"
