"""Files and folders: atomic writers (``files``), output-folder rules: manifest, lock, staging, --overwrite
(``folders``), and the name of every file anomaly-ae writes, spelled once (``names``).

The floor under everything that writes: it imports nothing of the package but :mod:`anomaly_ae.version`.
"""
