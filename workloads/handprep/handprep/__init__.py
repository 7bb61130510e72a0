"""handprep: MediaPipe hand landmarks for every frame of every video, on all CPU cores."""

__version__ = "0.1.0"
