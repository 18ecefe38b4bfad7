"""Sources, the Redis transport, message schemas and sinks. Knows nothing of workers."""
