"""The bundled trading workload and the simulated R1 upstream (issue 6)."""
