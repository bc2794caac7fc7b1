"""streamser's benchmark suite: ``python -m benchmarks [--quick] [--no-write]``.

Each module measures one thing and returns a ``Section``; ``__main__`` runs them and
puts each part's results, with the command, commit and host, in its subsection of
BENCHMARKS.md's "Latest runs" (replacing that part's previous run). See BENCHMARKS.md
for what each part measures and the targets.
"""
