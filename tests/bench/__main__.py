"""`python -m tests.bench`: the benchmark of issue 7 (see tests/bench/run.py)."""

from tests.bench.run import main

raise SystemExit(main())
