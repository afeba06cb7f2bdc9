"""The texts flowfs shows inside the mount (README.txt files)."""

ROOT_README = """\
This is Flow, mounted by flowfs.

  projects/<project>/samples/<sample>/<file>      data of each sample of a project
  projects/<project>/executions/<execution>/...   outputs of each pipeline run
  samples/<sample>/<file>                          every sample you can read
  executions/<execution>/...                       your pipeline runs
  data/<file>                                      your data in no sample or execution
  by-id/<data id>                                  any readable file by its id (not listed)
  by-id/<data id>.d/<file>                         the same file under its name, with its
                                                   index (.bai, .tbi...) beside it

Everything here is read-only and read on demand: only the bytes you read are
downloaded. Extended attributes tell where a file comes from:

  getfattr -d projects/<project>/samples/<sample>/<file>
  (user.flow.id, user.flow.md5, user.flow.url, user.flow.kind)

Names: '/' and control characters become '_'; when two items in a directory
have the same name, the one with the lowest id keeps it and the others get
'~<id>' before the extension (reads~105.fastq.gz).

Many files as one ZIP: see .downloads/README.txt.

More in the flowfs sources: docs/usage.md (this tree, names, errors),
docs/downloads.md (bulk ZIPs), docs/reliability.md (what can fail and what
flowfs promises); or `flowfs --help`.
"""

DOWNLOADS_README = """\
.downloads/ turns a list of files into one ZIP archive, built by Flow.

1. Write a manifest here, one entry a line:
     projects/Liver RNA-seq/samples          (a directory: every file below it)
     samples/liver_1/liver_1.bam             (a file, relative to the mount root)
     /home/me/flow/data/notes.txt            (an absolute path inside the mount)
     id:102                                  (a data id)
     # comments and blank lines are ignored
     by_execution: true                      (group the ZIP by execution)

     printf 'projects/Liver RNA-seq/samples\\n' > .downloads/liver.manifest

2. When you close it, flowfs checks every line. If all are good, Flow starts
   building liver.zip; the manifest disappears and liver.status appears.
   If a line is bad, the write fails ("Invalid argument"), nothing is
   submitted, the manifest stays (emptied), and liver.error says what is
   wrong. End every line with a newline: a last line without one is refused,
   since a program killed while writing leaves one. Only one program at a
   time may write a manifest ("Device or resource busy").

   From a script that could be stopped half-way, write a draft and rename it:
     printf '%s\n' samples/liver_1 > .downloads/liver.manifest.part
     mv .downloads/liver.manifest.part .downloads/liver.manifest
   A draft (any name ending in .part or .tmp) is never submitted itself;
   the mv submits it, or fails and leaves it as it was.

3. cat liver.status shows progress (JSON, always fresh).
   liver.zip appears here when the archive is ready; read or copy it
   like any file. Archives expire (see "expires" in the status).

4. rm liver.zip (or liver.status) deletes the job.

Names: letters, digits, '.', '_' and '-', 1 to 100 characters, not starting
with '.'. A manifest is at most 10 MiB, its lines at most 4096 bytes, and the
manifests and drafts being written at most 64 MiB together. A job holds at
most 10,000 files. No subdirectories.

More: docs/downloads.md in the flowfs sources, or `flowfs downloads --help`.
"""
