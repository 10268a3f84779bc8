"""The demo fleet: emulated edge clusters to try the platform with on a laptop."""
