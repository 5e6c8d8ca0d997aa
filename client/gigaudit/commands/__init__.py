"""The `gigaudit` command groups beyond `audit` and `report` (gigaudit.cli): one module per group."""
