"""The one part of flowfs that is not pure Python: an optional C extension.

``flowfs._tlsfill`` receives TLS bodies with the GIL released for a whole buffer
(flowfs/tlsfill.py says why). It is optional: without a C compiler the build skips it
and flowfs receives with a Python loop instead. Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("flowfs._tlsfill", ["flowfs/_tlsfill.c"], libraries=["dl"],
                             optional=True)])
