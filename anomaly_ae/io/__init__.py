"""Files and folders: atomic writers (``files``), output-folder rules: manifest, lock, staging, --overwrite
(``folders``), the name of every file anomaly-ae writes, spelled once (``names``), the bounded wait for
remote services (``remote``) and YAML read with a bound on alias expansion (``yamlfile``).

The floor under everything that writes: it imports nothing of the package but :mod:`anomaly_ae.version`.
"""
