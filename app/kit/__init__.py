"""Generic API machinery written once: bodies, envelope, selectors, paging, ETag, idempotency.

Imports no domain package.
"""
