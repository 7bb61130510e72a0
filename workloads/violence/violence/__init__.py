"""Violence detection on videos (TensorFlow/Keras): VGG19 frame features cached to disk, an
LSTM-with-attention classifier over them. Entry point: ``python3 -m violence.train``."""

__version__ = "0.1.0"
