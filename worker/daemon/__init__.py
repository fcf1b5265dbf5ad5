"""The daemon: the supervisor, the child process it starts, health and metrics endpoints."""
