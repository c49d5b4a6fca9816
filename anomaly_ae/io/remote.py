"""Bounded waits for remote services (an MLflow server, a Ray cluster): how long a command waits for one
to answer before it gives up with one line."""

from __future__ import annotations

import os

#: seconds a command waits for a tracking/registry server to answer before it gives up (one line, exit 2);
#: ``ANOMALY_AE_CONNECT_TIMEOUT`` overrides it. MLflow's own request retries are bounded by
#: :data:`anomaly_ae.tracking.REMOTE_DEFAULTS` (a 10 s timeout, 2 retries) unless the user set them.
CONNECT_TIMEOUT = 5.0


def connect_timeout() -> float:
    """:data:`CONNECT_TIMEOUT`, or ``ANOMALY_AE_CONNECT_TIMEOUT`` (seconds) when set to a positive number."""
    try:
        value = float(os.environ.get("ANOMALY_AE_CONNECT_TIMEOUT", CONNECT_TIMEOUT))
    except ValueError:
        return CONNECT_TIMEOUT
    return value if value > 0 else CONNECT_TIMEOUT
