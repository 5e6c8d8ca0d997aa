"""Cross-cutting operability: metrics, traces and structured logs (torch-free)."""
