"""Framework-agnostic machinery of mnist-bench: no ML framework is imported here."""
