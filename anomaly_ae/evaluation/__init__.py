"""Evaluation on labelled data: metrics checked against the MVTec AD reference code (``metrics``), the
streaming evaluation of a detector on an MVTec-layout folder (``evaluate``) and what it returns (``result``)."""
