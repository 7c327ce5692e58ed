"""``quiet_transformers``: Transformers and huggingface_hub say only errors during a test.

Their info lines and progress bars would bury a failure's own output. A module that uses
Transformers imports the fixture (``from _quiet import quiet_transformers``): it is
autouse, so every test there runs quiet, and the levels are put back afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def quiet_transformers() -> Iterator[None]:
    """Transformers' and huggingface_hub's logging at ERROR, progress bars off, for one test."""
    transformers = pytest.importorskip("transformers")
    verbosity = transformers.logging.get_verbosity()
    hub_logger = logging.getLogger("huggingface_hub")
    hub_level = hub_logger.level
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    hub_logger.setLevel(logging.ERROR)
    yield
    transformers.logging.set_verbosity(verbosity)
    transformers.utils.logging.enable_progress_bar()
    hub_logger.setLevel(hub_level)
