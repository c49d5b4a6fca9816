"""Supervised defect segmentation on a transferred encoder: the U-Net model (``model``) and its training (``train``)."""
