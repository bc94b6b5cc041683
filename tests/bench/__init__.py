"""The benchmark of issue 7; not part of the test run (pytest collects tests/unit and
tests/integration only). Run it with `python -m tests.bench`."""
