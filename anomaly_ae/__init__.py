"""anomaly-ae: find and localise defects by how badly an autoencoder reconstructs an image.

Heavy modules (Keras, OpenCV) load on first use of ``Detector``/``DetectorConfig``, so importing the
package, and the CLI's ``--help``, stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from anomaly_ae.config import DetectorConfig
    from anomaly_ae.detector import Detector

__all__ = ["Detector", "DetectorConfig", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from anomaly_ae.detector import Detector

        return Detector
    if name == "DetectorConfig":
        from anomaly_ae.config import DetectorConfig

        return DetectorConfig
    raise AttributeError(f"module 'anomaly_ae' has no attribute {name!r}")
