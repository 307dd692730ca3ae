"""kubeworkers' benchmarks: ``python -m benchmarks <suite> [--quick] [--json FILE]`` (see README.md).

Kept free of imports: the peers' drivers (``benchmarks.peers``) import this package from
virtualenvs that have neither kubeworkers nor its dependencies.
"""
