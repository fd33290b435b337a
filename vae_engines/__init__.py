"""Turn the ACE-Step 1.5 VAE decoder into verified INT8 and fp16 TensorRT engines."""

__version__ = "0.1.0"
