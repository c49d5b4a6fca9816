"""Human-readable reports: the self-contained HTML evaluation report (``html``)."""
