"""What gw tells operators: metrics, the access log, the config audit log, log-once incidents."""
