"""Edge Platform: the management plane for fleets of edge Kubernetes clusters."""

__version__ = "0.1.0"
