"""Evaluation maths: metrics checked against the MVTec AD reference code (``metrics``), the label-free
self-check and scoring selection on synthetic defects (``self_check``), and what an evaluation returns
(``result``). Running an evaluation on a folder is :mod:`anomaly_ae.pipelines.evaluate`."""
