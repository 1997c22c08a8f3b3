"""The HTTP API and the operator page: one router per concern, access control, bounded bodies and uploads."""
