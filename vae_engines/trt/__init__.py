"""TensorRT and TensorRT-RTX: the backend switch, the engine builder and the thin runner."""
