"""gigaudit: the thin client of the gigaudit audit service (no torch)."""
