"""INT8: activation statistics, calibrators, Q/DQ placements for TensorRT, fake
quantization, range search, sensitivity and auto mixed precision, equalization through
Snake, TensorRT cache import, and implicit-INT8 range tables."""
