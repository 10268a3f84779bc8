"""Users and their platform roles."""
