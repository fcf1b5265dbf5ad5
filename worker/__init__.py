"""The worker daemon and the queue: enqueue, claim, operators, supervisor, maintenance."""
