"""Running it as a service: the `check` diagnosis, the metrics, and the /healthz, /readyz, /metrics listener."""
