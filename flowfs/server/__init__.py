"""The reference Flow server behind ``flowfs serve``.

It implements the HTTP contract in ``docs/flow-api.md`` (API under ``/api``, files at
``/``) over a JSON catalog of users, projects, samples, executions and data
files on local disk, for the demo, the tests and the benchmarks.  Nothing in
this package imports the daemon side of flowfs.
"""
