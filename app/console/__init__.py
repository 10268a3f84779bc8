"""The web console: server-rendered pages for people who run the fleet.

It is a client of the public API like any other (the `edge-console` OAuth client): it holds no
database or Redis connection, only the signed-in user's tokens, sealed in an HttpOnly cookie.
"""
