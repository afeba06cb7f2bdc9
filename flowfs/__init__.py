"""flowfs: the Flow bioinformatics platform as a filesystem."""

__version__ = "0.1.0"
