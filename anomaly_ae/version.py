"""The package version (its own module, so that recording it never imports the package facade)."""

__version__ = "0.1.0"
