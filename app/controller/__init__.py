"""The controller process: leader election, work claiming, and reconcilers (cluster probes)."""
