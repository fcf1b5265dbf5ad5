"""The queue's core: the model, the operator registry, enqueue/claim/finish, schedules, admin."""
