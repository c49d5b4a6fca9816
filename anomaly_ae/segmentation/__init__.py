"""Supervised defect segmentation on a transferred encoder: the U-Net model (``model``), its training
(``train``) and its use on a folder (``predict``)."""
