"""Apache Beam pipelines: build a corpus snapshot, augment it, refresh it on a schedule."""

__version__ = "0.1.0"
