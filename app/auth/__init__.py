"""Authentication (tokens, OAuth/OIDC) and the one authorization layer (principals, roles)."""
