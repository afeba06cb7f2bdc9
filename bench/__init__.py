"""Side-by-side benchmarks of flowfs against rclone, curl, aria2c and samtools over HTTPS, on
loopback and over emulated WAN links (see docs/performance.md).

Run ``bench/run`` (or ``bench/run --quick``); ``python -m bench.bench --help`` lists the flags.
The modules: ``procs`` (child processes, mounts, page cache, the work dir), ``data`` (the
generated files and catalogs), ``links`` (the profiles: TLS, delay, cap), ``tls`` (the bench's
own CA), ``nginx`` (files and API behind a profile's link), ``services`` (reference server,
flowfs and rclone mounts, the contenders), ``workloads`` (what is timed), ``report`` (medians,
ratios, targets, results.json) and ``plots``.
"""
