"""Edge clusters: inventory, kubeconfigs (encrypted), node groups and health status."""
