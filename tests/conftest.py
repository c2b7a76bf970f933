"""Test-session settings shared by every test file.

`make test` runs the files in parallel (pytest-xdist, ``--dist loadfile
--no-loadscope-reorder``: each file on one worker, in the order collected). The longest files are
collected first, so that no worker starts one of them when the others are nearly done.
"""

LONGEST_FIRST = ("test_slurm.py", "test_grid_smoke.py", "test_book.py", "test_resume.py", "test_released.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise
