"""Operational endpoints: health, readiness, version, metrics."""
