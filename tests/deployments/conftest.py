"""The guide's fleet and the platform it is registered on (tests/support/guide_fleet.py)."""

from tests.support.guide_fleet import fleet, platform  # noqa: F401 - fixtures
