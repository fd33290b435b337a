"""TensorRT and TensorRT-RTX plans: the backend switch, the plan builder (explicit Q/DQ and
fp16, strongly typed; implicit INT8 for TensorRT 10), and what can be checked of a plan
without running it. runtime.tensorrt runs them."""
