"""reports/report.md and its plots, written from the measured records only."""
