"""Measuring engines, one module per job: `evaluate` (quality against the references),
`timing` (the primitives: rounds taking turns, paired ratios with intervals, streaming,
device memory), `plans` (the bench@<variant> stage: TensorRT plans, and the graphs on ONNX
Runtime) and `torch_engines` (the bench_torch stage: eager PyTorch and the compiled engines,
with the length sweep). Everything measured runs through the runtime API."""
