-- What a transformer session needs beyond the plan's columns (worker/transformers.py):
-- when a person cancelled it, and why its current step failed for good. A session is
-- running, waiting for input (requires_user_input), completed (is_completed,
-- completed_at), cancelled (cancelled_at) or failed (error_message).

ALTER TABLE websurfing_transformer_session
    ADD COLUMN cancelled_at timestamp with time zone,
    ADD COLUMN error_message text;
