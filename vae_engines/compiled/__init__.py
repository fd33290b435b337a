"""Compiled PyTorch engines: the folded decoder, channels-last, exported and compiled for one
device and precision, packaged with its compiled artifacts (runtime.compiled reads them)."""
