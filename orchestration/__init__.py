"""Orchestration: ``selfalign run`` (pipeline, evaluations, judges and report in one resumable
command) and the local judge server it starts and stops. The top layer: it may import every
other package, and nothing imports it."""
