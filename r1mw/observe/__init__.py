"""Observability: metrics, Prometheus exposition, dashboard, alerts, reports (issue 5)."""
