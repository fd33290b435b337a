"""Measuring variants: runtimes that say what they execute, audio metrics, quality against
the references, and interleaved latency with intervals."""
