"""The version of jaxnets (one place: the package, the CLI, summaries and saved models read it)."""
__version__ = "0.1.0"
