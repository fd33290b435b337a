"""ONNX graphs: reading and writing them, the one ONNX Runtime session factory, running them
in PyTorch in their own types, and converting them to fp16."""
