"""What every stage shares: typed params, the one user-error type, atomic writes, the stage
entry point, environment records, the compute device, and the check stage."""
