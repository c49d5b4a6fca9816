"""Deployment: the detector as one exported graph with its post-processing (``graph``) and the multi-scale
encoder export for transfer learning (``encoder``)."""
