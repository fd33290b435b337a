"""The decoder's hot path as fused kernels: one implicit-GEMM 1-D convolution over
channels-last activations that does each layer's whole neighbourhood in one pass.

`triton_conv` holds the Triton kernel and its launcher (GPU, and Triton's interpreter on the
CPU for tests); `reference` the same operation in plain torch (the CPU implementation, and
cuDNN's path on a GPU where cuDNN is faster for a layer); `op` registers both as PyTorch
custom ops, so `torch.export`, `torch.compile` and the engine packages see one op per layer.
`inflight` rewrites what Triton compiles for the int8 kernels on sm_90 so that their K loops
keep one tensor-core multiply in flight, as Triton does for fp16 by itself.
model.fused builds the decoder out of these ops.
"""
