"""``python -m anomaly_ae``: the ``anomaly-ae`` command (where the console script is not on PATH)."""

from anomaly_ae.cli.main import main

if __name__ == "__main__":
    main()
