-- name: insert_session
-- Start a transformer session at step 1 (websurf.worker.app.transformers.start_session).
INSERT INTO websurfing_transformer_session (session_name, initial_input, current_step,
                                            total_steps, step_data)
VALUES (%(session_name)s, %(initial_input)s, 1, %(total_steps)s, '{}'::jsonb)
RETURNING id

-- name: get_session
-- One transformer session by id (step handler, sessions API and CLI).
SELECT id, session_name, initial_input, current_step, total_steps, step_data, is_completed,
       requires_user_input, user_input_prompt, created_at, updated_at, completed_at,
       cancelled_at, error_message
FROM websurfing_transformer_session
WHERE id = %(id)s

-- name: lock_session
-- One transformer session, locked until the transaction ends (step handler, resume, cancel).
SELECT id, session_name, initial_input, current_step, total_steps, step_data, is_completed,
       requires_user_input, user_input_prompt, created_at, updated_at, completed_at,
       cancelled_at, error_message
FROM websurfing_transformer_session
WHERE id = %(id)s
FOR UPDATE

-- name: list_sessions
-- Transformer sessions, newest first, optionally in one state (websurf sessions list).
SELECT id, session_name, initial_input, current_step, total_steps, step_data, is_completed,
       requires_user_input, user_input_prompt, created_at, updated_at, completed_at,
       cancelled_at, error_message
FROM websurfing_transformer_session
WHERE %(state)s::text IS NULL
   OR %(state)s = CASE
          WHEN cancelled_at IS NOT NULL THEN 'cancelled'
          WHEN is_completed THEN 'completed'
          WHEN error_message IS NOT NULL THEN 'failed'
          WHEN requires_user_input THEN 'waiting'
          ELSE 'running'
      END
ORDER BY created_at DESC, id
LIMIT %(limit)s

-- name: save_session
-- Write a session's progress after a step, an answer or a cancel (transformers module).
UPDATE websurfing_transformer_session
SET current_step = %(current_step)s,
    step_data = %(step_data)s,
    is_completed = %(is_completed)s,
    completed_at = CASE WHEN %(is_completed)s THEN COALESCE(completed_at, now()) END,
    requires_user_input = %(requires_user_input)s,
    user_input_prompt = %(user_input_prompt)s,
    cancelled_at = CASE WHEN %(cancelled)s THEN COALESCE(cancelled_at, now()) END,
    error_message = %(error_message)s
WHERE id = %(id)s

-- name: cancel_session_tasks
-- Cancel the pending step tasks of a session (cancel_session).
UPDATE websurfing_task_queue
SET status = 'cancelled', updated_at = now()
WHERE status = 'pending'
  AND task_type = %(task_type)s
  AND payload ->> 'session_id' = %(session_id)s::text
RETURNING id
