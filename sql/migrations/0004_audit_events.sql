-- Phase 3 of the plan: the audit trail. A person's edit of a cell is recorded in
-- websurfing_cell_edit_event, a robot's in websurfing_robot_input_event.

CREATE TABLE websurfing_cell_edit_event (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    cell_id uuid NOT NULL,
    user_id varchar(255) NOT NULL,
    old_content text,
    new_content text,
    edit_type varchar(50) DEFAULT 'manual',
    created_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT websurfing_cell_edit_event_cell_id_websurfing_cell_id_fk
        FOREIGN KEY (cell_id) REFERENCES websurfing_cell (id) ON DELETE CASCADE,
    CONSTRAINT websurfing_cell_edit_event_user_id_websurfing_user_id_fk
        FOREIGN KEY (user_id) REFERENCES websurfing_user (id)
);
CREATE INDEX cell_edit_cell_idx ON websurfing_cell_edit_event (cell_id);
CREATE INDEX cell_edit_user_idx ON websurfing_cell_edit_event (user_id);
CREATE INDEX cell_edit_time_idx ON websurfing_cell_edit_event (created_at);

CREATE TABLE websurfing_robot_input_event (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    cell_id uuid NOT NULL,
    task_id uuid,
    operator_type varchar(100) NOT NULL,
    input_data jsonb,
    output_data jsonb,
    processing_time_ms integer,
    success boolean DEFAULT true,
    error_message text,
    created_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT websurfing_robot_input_event_cell_id_websurfing_cell_id_fk
        FOREIGN KEY (cell_id) REFERENCES websurfing_cell (id) ON DELETE CASCADE,
    -- drizzle-kit's name ends in _fk, one byte past PostgreSQL's 63-byte limit; this is
    -- the name PostgreSQL stores (and schema.ts names it the same way).
    CONSTRAINT websurfing_robot_input_event_task_id_websurfing_task_queue_id_f
        FOREIGN KEY (task_id) REFERENCES websurfing_task_queue (id)
);
CREATE INDEX robot_input_cell_idx ON websurfing_robot_input_event (cell_id);
CREATE INDEX robot_input_task_idx ON websurfing_robot_input_event (task_id);
CREATE INDEX robot_input_operator_idx ON websurfing_robot_input_event (operator_type);
CREATE INDEX robot_input_time_idx ON websurfing_robot_input_event (created_at);
