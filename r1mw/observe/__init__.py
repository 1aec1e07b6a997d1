"""Observability: metrics, Prometheus exposition, dashboard, alerts, reports (issue 5).

::

    r1mw/observe/prices.py      PriceTable: USD per token per model (DeepSeek-R1's by default)
    r1mw/observe/recorder.py    MetricsRecorder: per-request histograms, savings, bounded labels
    r1mw/observe/prometheus.py  R1mwCollector: prometheus_client collector read at scrape time
    r1mw/observe/server.py      MetricsServer: GET /metrics on the pipeline's event loop
    r1mw/observe/snapshots.py   JSON-lines snapshots for `r1mw report`
    r1mw/observe/alerts.py      AlertEngine: rules over a sliding window, fire and clear
    r1mw/observe/promtext.py    a small parser of the Prometheus text format (for `r1mw top`)
    r1mw/observe/top.py         `r1mw top`: live terminal dashboard
    r1mw/observe/report.py      `r1mw report`: self-contained HTML with inline SVG charts
    r1mw/observe/charts.py      the SVG charts

The built-in plugins ``r1mw_plugins.metrics`` (stage ``metrics``, endpoint, snapshots,
``top`` and ``report``) and ``r1mw_plugins.alerts`` wire these into a pipeline.
"""
