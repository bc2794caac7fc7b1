"""streamser's benchmark suite: ``python -m benchmarks [--quick] [--no-append]``.

Each module measures one thing and returns a ``Section``; ``__main__`` runs them and
appends the results to BENCHMARKS.md with the command, commit and host. See
BENCHMARKS.md for what each part measures and the targets.
"""
