"""Per-stream tracking state and identity association."""
