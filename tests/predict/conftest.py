"""Fixtures of the predict/export/infer tests."""
import pytest

from tests.predict.helpers import write_episode


@pytest.fixture(scope="session")
def episode(tiny_data, tmp_path_factory):
    """One 5-way 2-shot episode (3 queries per class) of the tiny novel classes."""
    return write_episode(tiny_data, tmp_path_factory.mktemp("episode"))
