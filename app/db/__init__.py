"""Database plumbing: engine, sessions, declarative base and the resource columns."""
