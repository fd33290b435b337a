"""INT8: activation statistics, calibrators, Q/DQ placement for TensorRT, fake quantization,
range search, sensitivity and auto mixed precision, TensorRT cache import."""
