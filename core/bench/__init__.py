"""Benchmarks of ktx's kernels at real models' shapes, measured against this machine's ceilings."""
