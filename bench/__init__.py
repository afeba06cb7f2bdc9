"""Side-by-side benchmarks of flowfs against rclone, curl and samtools (see docs/performance.md).

Run ``bench/run`` (or ``bench/run --quick``); ``python -m bench.bench --help`` lists the flags.
The modules: ``procs`` (child processes, mounts, page cache), ``data`` (the generated files and
catalogs), ``services`` (reference server, nginx, flowfs and rclone mounts), ``workloads`` (what
is timed), ``report`` (medians, ratios, targets, results.json) and ``plots``.
"""
