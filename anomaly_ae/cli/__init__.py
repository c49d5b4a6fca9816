"""The ``anomaly-ae`` command line (typer). Commands import the library lazily: ``--help`` stays fast."""
