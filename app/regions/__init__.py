"""Regions: the geographic grouping of edge clusters (east-china, north-china, ...)."""
