"""One worker process: the claim loop, the executor, the recorder, wake-up and maintenance."""
