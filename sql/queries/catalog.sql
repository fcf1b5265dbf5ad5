-- name: catalog_tables
-- The websurfing_* tables of schema public (sql/adopt.py compares them with a scratch database built by the migrations).
SELECT c.relname, c.relkind::text, c.relpersistence::text
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\_%' AND c.relkind IN ('r', 'p')

-- name: catalog_columns
-- Columns of the websurfing_* tables: type, nullability, default, identity, generated (sql/adopt.py).
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\_%' AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped

-- name: catalog_constraints
-- Constraints of the websurfing_* tables by name, kind and definition (sql/adopt.py).
SELECT c.relname, con.conname, con.contype::text, pg_get_constraintdef(con.oid)
FROM pg_constraint AS con
JOIN pg_class AS c ON c.oid = con.conrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\_%'
  AND con.contype <> 'n'  -- PostgreSQL 18 catalogs NOT NULL; the columns' not_null says it

-- name: catalog_indexes
-- Indexes of the websurfing_* tables by name and definition (sql/adopt.py).
SELECT t.relname, i.relname, pg_get_indexdef(i.oid)
FROM pg_index AS x
JOIN pg_class AS i ON i.oid = x.indexrelid
JOIN pg_class AS t ON t.oid = x.indrelid
JOIN pg_namespace AS n ON n.oid = t.relnamespace
WHERE n.nspname = 'public' AND t.relname LIKE 'websurfing\_%'

-- name: catalog_triggers
-- Triggers on the websurfing_* tables (sql/adopt.py: what adoption must add, checked before it commits).
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger AS t
JOIN pg_class AS c ON c.oid = t.tgrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\_%' AND NOT t.tgisinternal

-- name: catalog_websurf_objects
-- websurf's own objects in schema websurf: relations and functions with a digest of their body (sql/adopt.py).
SELECT 'relation', c.relname, c.relkind::text
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'websurf' AND c.relkind IN ('r', 'p', 'S', 'v')
UNION ALL
SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       md5(p.prosrc || coalesce(array_to_string(p.proconfig, ','), ''))
FROM pg_proc AS p
JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = 'websurf'

-- name: existing_websurfing_objects
-- Names of the websurfing_* tables, their columns, constraints and indexes (sql/adopt.py: would a pending migration meet objects someone else made?).
SELECT 'table', c.relname, NULL
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\_%' AND c.relkind IN ('r', 'p')
UNION ALL
SELECT 'column', c.relname, a.attname
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\_%' AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'relation', NULL, c.relname
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('i', 'I')
UNION ALL
SELECT 'constraint', c.relname, con.conname
FROM pg_constraint AS con
JOIN pg_class AS c ON c.oid = con.conrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relname LIKE 'websurfing\_%'
