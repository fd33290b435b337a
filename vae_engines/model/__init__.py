"""The Oobleck VAE: loading checkpoints in their saved forms, folding the decoder, exporting
it to ONNX, and its channels-last form for compiled PyTorch engines."""
