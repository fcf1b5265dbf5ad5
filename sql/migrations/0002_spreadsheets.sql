-- Phase 1 of the plan: spreadsheets, their columns and cells. Constraint and index
-- names are the ones drizzle-kit gives the plan's Drizzle definitions, so that a
-- `drizzle-kit push` from the web app finds nothing to change.

-- Drizzle's $onUpdate only covers writes made through Drizzle; this covers every
-- client. The trigger's WHEN clause skips the call when the writer set updated_at itself.
CREATE FUNCTION websurf.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE websurfing_spreadsheet (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    name varchar(255) NOT NULL,
    description text,
    owner_id varchar(255) NOT NULL,
    is_public boolean DEFAULT false,
    default_columns integer DEFAULT 2,
    default_rows integer DEFAULT 8,
    created_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT websurfing_spreadsheet_owner_id_websurfing_user_id_fk
        FOREIGN KEY (owner_id) REFERENCES websurfing_user (id)
);
CREATE INDEX spreadsheet_owner_idx ON websurfing_spreadsheet (owner_id);
CREATE INDEX spreadsheet_name_idx ON websurfing_spreadsheet (name);

CREATE TABLE websurfing_column (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    spreadsheet_id uuid NOT NULL,
    position integer NOT NULL,
    title varchar(255) NOT NULL,
    width integer DEFAULT 150,
    is_visible boolean DEFAULT true,
    created_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT column_spreadsheet_position UNIQUE (spreadsheet_id, position),
    CONSTRAINT websurfing_column_spreadsheet_id_websurfing_spreadsheet_id_fk
        FOREIGN KEY (spreadsheet_id) REFERENCES websurfing_spreadsheet (id) ON DELETE CASCADE
);
CREATE INDEX column_spreadsheet_idx ON websurfing_column (spreadsheet_id);

CREATE TABLE websurfing_cell (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    spreadsheet_id uuid NOT NULL,
    column_id uuid NOT NULL,
    row_number integer NOT NULL,
    content text,
    formatted_content jsonb,
    cell_type varchar(50) DEFAULT 'text',
    is_formula boolean DEFAULT false,
    created_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT cell_unique_position UNIQUE (spreadsheet_id, column_id, row_number),
    CONSTRAINT websurfing_cell_spreadsheet_id_websurfing_spreadsheet_id_fk
        FOREIGN KEY (spreadsheet_id) REFERENCES websurfing_spreadsheet (id) ON DELETE CASCADE,
    CONSTRAINT websurfing_cell_column_id_websurfing_column_id_fk
        FOREIGN KEY (column_id) REFERENCES websurfing_column (id) ON DELETE CASCADE
);
CREATE INDEX cell_spreadsheet_idx ON websurfing_cell (spreadsheet_id);
CREATE INDEX cell_column_idx ON websurfing_cell (column_id);

CREATE TRIGGER spreadsheet_touch_updated_at BEFORE UPDATE ON websurfing_spreadsheet
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION websurf.touch_updated_at();
CREATE TRIGGER cell_touch_updated_at BEFORE UPDATE ON websurfing_cell
    FOR EACH ROW WHEN (OLD.updated_at IS NOT DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION websurf.touch_updated_at();
