"""Writers of what scoring produces: ``scores.csv`` / ``scores.parquet`` (``scores_csv``), heatmap overlays
(``overlays``) and ordered background writes (``writers``). The scoring pipeline that calls them is
:mod:`anomaly_ae.pipelines.score`."""
