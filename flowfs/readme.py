"""The texts flowfs shows inside the mount (README.txt files)."""

ROOT_README = """\
This is Flow, mounted by flowfs.

  projects/<project>/samples/<sample>/<file>      data of each sample of a project
  projects/<project>/executions/<execution>/...   outputs of each pipeline run
  samples/<sample>/<file>                          every sample you can read
  executions/<execution>/...                       your pipeline runs
  data/<file>                                      your data in no sample or execution
  by-id/<data id>                                  any readable file by its id (not listed)

Everything here is read-only and read on demand: only the bytes you read are
downloaded. Extended attributes tell where a file comes from:

  getfattr -d projects/<project>/samples/<sample>/<file>
  (user.flow.id, user.flow.md5, user.flow.url, user.flow.kind)

Names: '/' and control characters become '_'; when two items in a directory
have the same name, the one with the lowest id keeps it and the others get
'~<id>' before the extension (reads~105.fastq.gz).

More: docs/usage.md in the flowfs sources, or `flowfs --help`.
"""
