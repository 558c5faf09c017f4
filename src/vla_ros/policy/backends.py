"""Names of the trunk backends (no torch import: nodes validate their parameter with it)."""

BACKENDS = ("torch", "onnxruntime", "tensorrt")
