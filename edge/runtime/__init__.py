"""The daemon process's plumbing: logging, metrics, liveness, host checks, rate limits, timestamps, versions."""
