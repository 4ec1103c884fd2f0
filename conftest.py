"""pytest configuration shared by the unit tests and nbval's notebook items."""

import pytest

# nbval waits a hard-coded 5 s for each kernel message after a cell's reply
# (computationalmodelling/nbval#136, #231): a margin for a busy 2-core CI machine. (Notebook
# 09's lost-"idle" failure was not this but progress-bar widget updates overflowing IOPub;
# see n2n_core/progress.py.) The cell timeout itself is --nbval-cell-timeout (pyproject.toml).
NBVAL_OUTPUT_TIMEOUT_S = 120


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
