-- Phase 4 of the plan: multi-step transformer sessions.

CREATE TABLE websurfing_transformer_session (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    session_name varchar(255) NOT NULL,
    initial_input jsonb NOT NULL,
    current_step integer DEFAULT 1,
    total_steps integer,
    step_data jsonb,
    is_completed boolean DEFAULT false,
    requires_user_input boolean DEFAULT false,
    user_input_prompt text,
    created_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    completed_at timestamp with time zone
);
CREATE INDEX transformer_session_name_idx ON websurfing_transformer_session (session_name);
CREATE INDEX transformer_session_status_idx
    ON websurfing_transformer_session (is_completed, requires_user_input);
CREATE INDEX transformer_session_time_idx ON websurfing_transformer_session (created_at);

CREATE TRIGGER transformer_session_touch_updated_at BEFORE UPDATE ON websurfing_transformer_session
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION websurf.touch_updated_at();
