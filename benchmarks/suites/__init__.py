"""The suites of ``python -m benchmarks``: each module has ``run(quick: bool) -> SuiteResult``."""
