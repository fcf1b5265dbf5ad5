-- Deleting a spreadsheet (or a column, or a row's cells) while robot tasks for its cells
-- are pending cancelled nothing: each task later ran (fetching a page for a sheet that is
-- gone) and then failed with "could not record the result: ForeignKeyViolation". Now
-- the delete cancels them, with the reason in error_message; tasks already running when
-- their cell goes are cancelled when the worker records them (record_robot_events).
--
-- The robot tasks of a cell carry unique_key 'cell:<cell id>' (0018), and the pending
-- ones are found through task_queue_unique_key_idx: one index probe per deleted cell,
-- however long the queue. A pending task enqueued some other way (no key) is cancelled
-- when a worker records it.
--
-- SECURITY DEFINER: whoever deletes the cells (the web app's role) need not be allowed
-- to update the queue; the function does only this one UPDATE, with a fixed search_path.

CREATE FUNCTION websurf.cancel_tasks_of_deleted_cells() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
BEGIN
    UPDATE websurfing_task_queue AS t
    SET status = 'cancelled',
        error_message = 'cancelled: its cell was deleted (with its spreadsheet, column or'
                        ' row) before the task ran',
        updated_at = now()
    FROM deleted AS d
    WHERE t.status = 'pending'
      AND t.unique_key = 'cell:' || d.id::text;
    RETURN NULL;
END;
$$;
REVOKE EXECUTE ON FUNCTION websurf.cancel_tasks_of_deleted_cells() FROM PUBLIC;

CREATE TRIGGER cell_cancel_tasks_of_deleted AFTER DELETE ON websurfing_cell
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION websurf.cancel_tasks_of_deleted_cells();
