"""The edge-platform chart, loaded once per test module."""

from __future__ import annotations

from collections.abc import Iterator

import helm_python as helm
import pytest

from tests.support.platform_chart import CHART


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    loaded = helm.Chart.load(str(CHART))
    yield loaded
    loaded.close()
