"""The worker process: composes streaming, tracker and model."""
