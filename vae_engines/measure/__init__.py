"""Measuring engines: quality against the references (evaluate), and latency, memory and
streaming measured side by side with intervals (bench, and the bench stages for plans and
for the PyTorch engines). Everything measured runs through the runtime API."""
