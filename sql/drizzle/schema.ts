/**
 * Drizzle description of every `websurfing_*` table that websurf creates.
 *
 * Written by hand to mirror sql/migrations/*.sql, which is the source of truth:
 * `websurf migrate` builds these tables. tests/migrations/test_drizzle_mirror.py keeps
 * the two equal: it runs `drizzle-kit generate` on this file (versions pinned in
 * package.json / package-lock.json), applies the generated SQL to an empty database,
 * migrates another one with websurf, and compares the catalogs of both (columns with
 * types, nullability and defaults; constraints; indexes); it also runs
 * `drizzle-kit push` against the migrated database and expects "No changes detected",
 * and type-checks this file with tsc. A change to the SQL therefore needs the same
 * change here, and anything websurf adds to these tables (a CHECK, an index, a column)
 * is listed here too, so that `drizzle-kit push` from the web app never drops it.
 *
 * Names: drizzle-kit's defaults (`<table>_pkey`, `<table>_<cols>_pk`,
 * `<table>_<col>_<ref table>_<ref col>_fk`) except where such a name would exceed
 * PostgreSQL's 63 bytes; those are spelled out as the database stores them.
 *
 * How the web app uses it: import or copy this file as its Drizzle schema
 * (e.g. src/server/db/schema.ts of the T3 app) and configure drizzle-kit and the
 * client with
 *
 *   casing: "snake_case",           // camelCase properties <-> snake_case columns
 *   tablesFilter: ["websurfing_*"], // drizzle-kit only looks at these tables
 *
 * (see drizzle.config.ts next to this file); the client must be created with the same
 * casing: `drizzle(client, { schema, casing: "snake_case" })`. Drizzle's default
 * schemaFilter (["public"]) keeps drizzle-kit away from websurf's own `websurf` schema
 * (applied migrations, worker registry).
 *
 * author.ts beside this file names the author of cell edits (`withAuthor`) and
 * recognises the refusal of an edit that named none (`isCellAuthorError`).
 *
 * What only SQL has, and is therefore not described here (drizzle-kit neither creates
 * nor drops triggers and functions):
 * - `updated_at` is maintained by a BEFORE UPDATE trigger on every table that has it
 *   (websurf.touch_updated_at), for every client, with the database clock. That is why
 *   the `updatedAt` columns carry no `$onUpdate`: a value set by the application would
 *   be kept by the trigger (it only fills in updates that leave `updated_at` alone)
 *   and would mix the app server's clock into a column otherwise set by the database.
 * - the `new_task` LISTEN/NOTIFY trigger on websurfing_task_queue.
 * - cancelling (sql/migrations/0027): `select websurf.cancel_task(<task id>)` cancels a
 *   pending task at once and asks the worker of a running one to stop it (NOTIFY
 *   `task_cancel`); inserting a task whose unique key a running task holds asks that one
 *   to stop (a newer edit supersedes it); a running task whose cancel was asked ends
 *   `cancelled`, without spending the attempt, whatever its handler returns.
 * - the cell audit triggers on websurfing_cell (sql/migrations/0007): a transaction
 *   that changes a cell's content must first name its author with
 *   `select set_config('websurf.user_id', <user id>, true)`; the trigger then writes the
 *   websurfing_cell_edit_event row and enqueues the tasks of the columns fed by it.
 * - the move and delete guards on websurfing_cell (sql/migrations/0015): moving or
 *   deleting a cell that has content, also by deleting its column or spreadsheet, needs
 *   the same author and writes websurfing_cell_position_event rows.
 * - the robot-row guard on websurfing_robot_input_event (sql/migrations/0015): only the
 *   worker's role may insert robot rows, and only for a task the same transaction ended.
 * - the guards of sql/migrations/0024: a robot cell takes a result only from a task of
 *   its column's operator for a real edit of its source cell, and input_version is
 *   never written by the app (leave it out of inserts and updates); a task is inserted
 *   as plain pending work and the app only cancels pending ones; deleting a blank cell
 *   that has edit history names its author; a column stays in its spreadsheet and a
 *   cell in its column's.
 *
 * Defaults are spelled `sql\`CURRENT_TIMESTAMP\`` rather than `defaultNow()` (which
 * would be `now()`): the same value, but the catalog text must equal the migrations'
 * so that `drizzle-kit push` finds nothing to change.
 */
import { relations, sql } from "drizzle-orm";
import {
  type AnyPgColumn,
  check,
  foreignKey,
  index,
  pgTableCreator,
  primaryKey,
  unique,
  uniqueIndex,
} from "drizzle-orm/pg-core";

/**
 * The Web Crypto global (Node 19+, browsers, Bun, Deno, edge runtimes), declared here so
 * that this file type-checks under `tsc --strict` without the DOM lib or `@types/node`
 * (a module-scoped declaration: it does not clash with either when they are present).
 */
declare const crypto: { randomUUID(): string };

// ---------------------------------------------------------------------------------
// Types of the JSON columns and of what the database sends (exported for the app).
// ---------------------------------------------------------------------------------

/** Any JSON value, as jsonb stores it. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };
/** A JSON object: task payloads and operator options must be one. */
export type JsonObject = { [key: string]: Json };

/** The operators websurf ships (worker/operators); others register their own names. */
export const builtInOperators = ["noop", "uppercase", "word_count", "web_title"] as const;
export type BuiltInOperator = (typeof builtInOperators)[number];
/** A task or operator type: a built-in one (autocompleted) or any other registered name. */
export type OperatorType = BuiltInOperator | (string & {});

/**
 * The payload the cell-edit trigger writes for a robot column's task
 * (sql/migrations/0018): what was typed into the source cell, which cell to fill, and
 * the edit's place in line; the column's operatorOptions are merged in as well.
 */
export type RobotColumnPayload = {
  /** The robot cell the result goes to. */
  cell_id: string;
  /** The edited cell of the source column (same row). */
  source_cell_id: string;
  /** Its new content; null when it was cleared (the robot then clears its cell). */
  input: string | null;
  /** Orders the edits of the source cell: a result never overwrites a newer one. */
  input_version: number;
  spreadsheet_id: string;
  /** The robot column. */
  column_id: string;
  row_number: number;
} & { [option: string]: Json };

/** `noop`: does nothing; with cell_id and cell_content it writes that to the cell. */
export type NoopPayload = { cell_id?: string; cell_content?: string } & JsonObject;
/** `web_title`: the page at `url` (or at the robot column's `input`) gives its <title>. */
export type WebTitlePayload = RobotColumnPayload | ({ cell_id?: string; url: string } & JsonObject);

/** The payload of each built-in task type. */
export type TaskPayloads = {
  noop: NoopPayload;
  uppercase: RobotColumnPayload;
  word_count: RobotColumnPayload;
  web_title: WebTitlePayload;
};
/** Any task's payload: a JSON object (the built-in types' shapes are in TaskPayloads). */
export type TaskPayload = TaskPayloads[BuiltInOperator] | JsonObject;

/** `LISTEN cell_updated`: a robot wrote this cell (sent when its transaction commits). */
export type CellUpdatedNotification = {
  spreadsheet_id: string;
  column_id: string;
  row_number: number;
  cell_id: string;
};

/**
 * `LISTEN new_task`: one per task type per INSERT statement. `id` when the statement
 * inserted one task of that type, `scheduled_for` (ISO time) when none is due yet.
 */
export type NewTaskNotification = {
  task_type: string;
  priority: number;
  id?: string;
  scheduled_for?: string;
};

/** A transformer session's step_data: each finished step's result by its number, and the answers. */
export type TransformerStepData = { inputs?: { [step: string]: string } } & {
  [step: string]: Json;
};

/** Every table of the web app is named `websurfing_<name>` (T3 multi-project schema). */
export const createTable = pgTableCreator((name) => `websurfing_${name}`);

// Value limits (sql/migrations/0023; README, "Hostile and careless input"): one row
// holding an extreme value used to stop every worker or admin command. Each helper
// writes one clause of a CHECK, in the words the migration uses, so that the catalogs
// compare equal.
/** A timestamp websurf can read anywhere: between 1900 and 9000, never infinite. */
const inTimeRange = (column: AnyPgColumn) =>
  sql`${column} BETWEEN '1900-01-01 00:00:00+00' AND '9000-01-01 00:00:00+00'`;
/** JSON at most 64 levels deep (no value under more than 64 objects or arrays). */
const jsonDepthLimit = (column: AnyPgColumn) =>
  sql`NOT jsonb_path_exists(${column}, 'strict $.**{65}')`;
/** JSON whose text is at most 1 MiB. */
const jsonSizeLimit = (column: AnyPgColumn) => sql`octet_length(${column}::text) <= 1048576`;

// ---------------------------------------------------------------------------------
// Auth: the four next-auth tables of the T3 Drizzle template (sql/migrations/0001).
// ---------------------------------------------------------------------------------

/** next-auth's AdapterAccount["type"], spelled out so this file needs only drizzle. */
type AdapterAccountType = "oauth" | "oidc" | "email" | "webauthn";

export const users = createTable("user", (d) => ({
  id: d
    .varchar({ length: 255 })
    .notNull()
    .primaryKey()
    .$defaultFn(() => crypto.randomUUID()),
  name: d.varchar({ length: 255 }),
  email: d.varchar({ length: 255 }).notNull(),
  emailVerified: d
    .timestamp({ mode: "date", withTimezone: true })
    .default(sql`CURRENT_TIMESTAMP`),
  image: d.varchar({ length: 255 }),
}));

export const accounts = createTable(
  "account",
  (d) => ({
    userId: d
      .varchar({ length: 255 })
      .notNull()
      .references(() => users.id),
    type: d.varchar({ length: 255 }).$type<AdapterAccountType>().notNull(),
    provider: d.varchar({ length: 255 }).notNull(),
    providerAccountId: d.varchar({ length: 255 }).notNull(),
    refresh_token: d.text(),
    access_token: d.text(),
    expires_at: d.integer(),
    token_type: d.varchar({ length: 255 }),
    scope: d.varchar({ length: 255 }),
    id_token: d.text(),
    session_state: d.varchar({ length: 255 }),
  }),
  (t) => [
    primaryKey({ columns: [t.provider, t.providerAccountId] }),
    index("account_user_id_idx").on(t.userId),
  ],
);

export const sessions = createTable(
  "session",
  (d) => ({
    sessionToken: d.varchar({ length: 255 }).notNull().primaryKey(),
    userId: d
      .varchar({ length: 255 })
      .notNull()
      .references(() => users.id),
    expires: d.timestamp({ mode: "date", withTimezone: true }).notNull(),
  }),
  (t) => [index("t_user_id_idx").on(t.userId)],
);

export const verificationTokens = createTable(
  "verification_token",
  (d) => ({
    identifier: d.varchar({ length: 255 }).notNull(),
    token: d.varchar({ length: 255 }).notNull(),
    expires: d.timestamp({ mode: "date", withTimezone: true }).notNull(),
  }),
  (t) => [primaryKey({ columns: [t.identifier, t.token] })],
);

// ---------------------------------------------------------------------------------
// Phase 1: spreadsheets, their columns and cells (sql/migrations/0002).
// ---------------------------------------------------------------------------------

export const spreadsheets = createTable(
  "spreadsheet",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    name: d.varchar({ length: 255 }).notNull(),
    description: d.text(),
    ownerId: d
      .varchar({ length: 255 })
      .notNull()
      .references(() => users.id),
    isPublic: d.boolean().default(false),
    defaultColumns: d.integer().default(2),
    defaultRows: d.integer().default(8),
    createdAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    // Set by the touch_updated_at trigger on every UPDATE.
    updatedAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
  }),
  (t) => [
    index("spreadsheet_owner_idx").on(t.ownerId),
    index("spreadsheet_name_idx").on(t.name),
    check(
      "spreadsheet_times_in_range",
      sql`${inTimeRange(t.createdAt)} AND ${inTimeRange(t.updatedAt)}`,
    ),
    check(
      "spreadsheet_default_size_range",
      sql`${t.defaultColumns} BETWEEN 0 AND 1000 AND ${t.defaultRows} BETWEEN 0 AND 100000`,
    ),
  ],
);

export const columns = createTable(
  "column",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    spreadsheetId: d
      .uuid()
      .notNull()
      .references(() => spreadsheets.id, { onDelete: "cascade" }),
    position: d.integer().notNull(),
    title: d.varchar({ length: 255 }).notNull(),
    width: d.integer().default(150),
    isVisible: d.boolean().default(true),
    createdAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    // Which robot fills this column (sql/migrations/0007): a person's edit of a cell in
    // the source column enqueues a task of operatorType for this column's cell in the
    // same row, with operatorOptions merged into its payload.
    operatorType: d.varchar({ length: 100 }).$type<OperatorType>(),
    sourceColumnId: d.uuid(),
    operatorOptions: d.jsonb().$type<JsonObject>(),
    // A robot column re-runs its operator for every filled row this often (sql/migrations/
    // 0020; the workers do it in bounded batches at bulk priority). NULL: only on edits.
    refreshEvery: d.interval(),
  }),
  (t) => [
    index("column_spreadsheet_idx").on(t.spreadsheetId),
    unique("column_spreadsheet_position").on(t.spreadsheetId, t.position),
    foreignKey({
      name: "websurfing_column_source_column_id_websurfing_column_id_fk",
      columns: [t.sourceColumnId],
      foreignColumns: [t.id],
    }).onDelete("set null"),
    check("column_source_not_self", sql`${t.sourceColumnId} <> ${t.id}`),
    check(
      "column_operator_options_object",
      sql`${t.operatorOptions} IS NULL OR jsonb_typeof(${t.operatorOptions}) = 'object'`,
    ),
    index("column_source_idx").on(t.sourceColumnId),
    check(
      "column_refresh_every_minimum",
      sql`${t.refreshEvery} IS NULL OR ${t.refreshEvery} >= interval '1 minute'`,
    ),
    index("column_refresh_idx")
      .on(t.id)
      .where(sql`${t.refreshEvery} IS NOT NULL`),
    check("column_operator_options_size", jsonSizeLimit(t.operatorOptions)),
    check("column_operator_options_depth", jsonDepthLimit(t.operatorOptions)),
    check("column_refresh_every_maximum", sql`${t.refreshEvery} <= '10 years'::interval`),
    check("column_created_at_in_range", inTimeRange(t.createdAt)),
  ],
);

export const cells = createTable(
  "cell",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    spreadsheetId: d
      .uuid()
      .notNull()
      .references(() => spreadsheets.id, { onDelete: "cascade" }),
    columnId: d
      .uuid()
      .notNull()
      .references(() => columns.id, { onDelete: "cascade" }),
    rowNumber: d.integer().notNull(),
    content: d.text(),
    formattedContent: d.jsonb().$type<Json>(),
    cellType: d.varchar({ length: 50 }).default("text"),
    isFormula: d.boolean().default(false),
    createdAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    // Set by the touch_updated_at trigger on every UPDATE.
    updatedAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    // Which edit of the source cell the robot output in `content` was computed from
    // (sql/migrations/0018): set by the worker, never written over by an older result.
    inputVersion: d.bigint({ mode: "number" }),
  }),
  (t) => [
    index("cell_spreadsheet_idx").on(t.spreadsheetId),
    index("cell_column_idx").on(t.columnId),
    unique("cell_unique_position").on(t.spreadsheetId, t.columnId, t.rowNumber),
    check("cell_times_in_range", sql`${inTimeRange(t.createdAt)} AND ${inTimeRange(t.updatedAt)}`),
  ],
);

// ---------------------------------------------------------------------------------
// Phase 2: the task queue (sql/migrations/0003). Inserting a pending task fires the
// `new_task` notification (a statement-level trigger, SQL only).
// ---------------------------------------------------------------------------------

/** The five states of a task; `status` is constrained to them. */
export const taskStatuses = ["pending", "processing", "completed", "failed", "cancelled"] as const;
export type TaskStatus = (typeof taskStatuses)[number];

export const taskQueue = createTable(
  "task_queue",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    taskType: d.varchar({ length: 100 }).$type<OperatorType>().notNull(),
    // A JSON object (CHECK task_queue_payload_object); `cell_id`, when present, names the
    // cell the task writes.
    payload: d.jsonb().$type<TaskPayload>().notNull(),
    status: d.varchar({ length: 20 }).$type<TaskStatus>().default("pending"),
    priority: d.integer().default(5),
    attempts: d.integer().default(0),
    maxAttempts: d.integer().default(3),
    scheduledFor: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    startedAt: d.timestamp({ withTimezone: true }),
    completedAt: d.timestamp({ withTimezone: true }),
    failedAt: d.timestamp({ withTimezone: true }),
    errorMessage: d.text(),
    workerId: d.varchar({ length: 255 }),
    createdAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    // Set by the touch_updated_at trigger on every UPDATE.
    updatedAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    // At most one pending task per key (sql/migrations/0017): insert with
    //   .onConflictDoUpdate({ target: taskQueue.uniqueKey,
    //                         targetWhere: sql`status = 'pending'`, set: {...} })
    // and a pending task holding the key takes the newer payload instead of a second
    // task being queued. NULL: never coalesced.
    uniqueKey: d.text(),
    // Whose work this is: tasks of different keys take turns (sql/migrations/0025, README
    // "Fairness between tenants"). Set it at insert, or leave it NULL and a trigger fills
    // it with the author in `websurf.user_id`, else the owner of payload.spreadsheet_id.
    fairnessKey: d.varchar({ length: 255 }),
    // The task's round, set by the same trigger at insert (a value given is replaced).
    fairSeq: d.bigint({ mode: "number" }).default(0).notNull(),
    // The key this task counts against in its operator's limits (websurfing_task_limit,
    // sql/migrations/0026): a host, an API account, a user for a per-user quota. NULL:
    // only the operator's own limit applies.
    limitKey: d.varchar({ length: 255 }),
    // When someone asked this running task to stop (sql/migrations/0027). Never write it
    // yourself: call `SELECT websurf.cancel_task(id)` (a pending task is cancelled at
    // once, a running one is stopped by its worker within about a second).
    cancelRequestedAt: d.timestamp({ withTimezone: true }),
  }),
  (t) => [
    uniqueIndex("task_queue_unique_key_idx")
      .on(t.uniqueKey)
      .where(sql`${t.status} = 'pending'`),
    // The claim query walks this index in order: pending only, highest priority
    // first, then the round (keys take turns), then the oldest due date. drizzle-kit
    // writes a bare `.desc()` as `DESC NULLS LAST`; PostgreSQL's (and the migration's)
    // plain DESC is NULLS FIRST.
    index("task_queue_fair_idx")
      .on(t.priority.desc().nullsFirst(), t.fairSeq.asc(), t.scheduledFor.asc())
      .where(sql`${t.status} = 'pending'`),
    // A key's last pending round, read by the insert trigger.
    index("task_queue_fair_key_idx")
      .on(t.fairnessKey, t.taskType, t.priority, t.fairSeq)
      .where(sql`${t.status} = 'pending'`),
    // Tasks queued for later (rounds from 2^62: the due time), for the promoter.
    index("task_queue_timed_idx")
      .on(t.fairSeq)
      .where(sql`${t.status} = 'pending' AND ${t.fairSeq} >= 4611686018427387904`),
    // Running tasks by worker (websurf status, websurf tasks, the reaper); processing
    // rows only, so a finish adds nothing to it (sql/migrations/0022).
    index("task_queue_claimed_idx")
      .on(t.workerId, t.startedAt)
      .where(sql`${t.status} = 'processing'`),
    // The running task of a unique key, which a newer task with that key supersedes
    // (sql/migrations/0027).
    index("task_queue_running_key_idx")
      .on(t.uniqueKey)
      .where(sql`${t.status} = 'processing' AND ${t.uniqueKey} IS NOT NULL`),
    // Finished tasks by finish time (`websurf status` throughput and failures, `websurf
    // tasks list`, pruning); sql/migrations/0010. The only index a finish adds to besides
    // the primary key (sql/migrations/0032 dropped the cleanup index).
    index("task_queue_finished_idx")
      .on(t.status, t.updatedAt)
      .where(sql`${t.status} IN ('completed', 'failed', 'cancelled')`),
    check(
      "task_queue_status_check",
      sql`${t.status} IN ('pending', 'processing', 'completed', 'failed', 'cancelled')`,
    ),
    // sql/migrations/0014: every reader looks keys up in the payload, so it must be an
    // object (a '[1]' payload used to crash the workers that claimed it).
    check("task_queue_payload_object", sql`jsonb_typeof(${t.payload}) = 'object'`),
    // sql/migrations/0023: limits that keep one row from stopping the claim or the worker.
    check(
      "task_queue_priority_range",
      sql`${t.priority} IS NOT NULL AND ${t.priority} BETWEEN -1000 AND 1000`,
    ),
    check(
      "task_queue_max_attempts_range",
      sql`${t.maxAttempts} IS NOT NULL AND ${t.maxAttempts} BETWEEN 1 AND 1000`,
    ),
    // below max_attempts while pending, so that the claim's attempts + 1 always fits
    check(
      "task_queue_attempts_range",
      sql`${t.attempts} IS NOT NULL AND ${t.attempts} >= 0 AND ${t.attempts} <= ${t.maxAttempts}
        AND (${t.attempts} < ${t.maxAttempts} OR ${t.status} <> 'pending')`,
    ),
    check("task_queue_status_not_null", sql`${t.status} IS NOT NULL`),
    check(
      "task_queue_times_in_range",
      sql`${t.scheduledFor} IS NOT NULL AND ${t.createdAt} IS NOT NULL
        AND ${t.updatedAt} IS NOT NULL AND ${inTimeRange(t.scheduledFor)}
        AND ${inTimeRange(t.createdAt)} AND ${inTimeRange(t.updatedAt)}
        AND ${inTimeRange(t.startedAt)} AND ${inTimeRange(t.completedAt)}
        AND ${inTimeRange(t.failedAt)}`,
    ),
    // The payload's size and depth limits (0023) are a trigger since 0034: checked when
    // the payload is written, not at each claim and finish.
    check("task_queue_unique_key_length", sql`octet_length(${t.uniqueKey}) BETWEEN 1 AND 1000`),
  ],
);

/**
 * A task as read from the queue. The plan's DDL gives `status`, `priority`, `attempts`,
 * `maxAttempts`, `scheduledFor` and `createdAt` a DEFAULT but no NOT NULL (unchanged
 * here, so that `drizzle-kit push` finds nothing to change), so Drizzle reads them as
 * `| null`. websurf never writes NULL into them and the defaults fill them on insert:
 * cast a selected row to `Task` unless your own code inserts explicit NULLs.
 */
export type Task = Omit<
  typeof taskQueue.$inferSelect,
  "status" | "priority" | "attempts" | "maxAttempts" | "scheduledFor" | "createdAt"
> & {
  status: TaskStatus;
  priority: number;
  attempts: number;
  maxAttempts: number;
  scheduledFor: Date;
  createdAt: Date;
};
/** A task of one built-in type, with that type's payload. */
export type TaskOf<K extends BuiltInOperator> = Task & { taskType: K; payload: TaskPayloads[K] };

/** Where a limit came from: declared in code, `websurf limits set`, this table, a SlowDown. */
export const taskLimitSources = ["code", "cli", "table", "slowdown"] as const;
export type TaskLimitSource = (typeof taskLimitSources)[number];

/**
 * Limits across every worker (sql/migrations/0026): at most `maxRunning` tasks of an
 * operator running at once, at most `rate` started in any `periodS` seconds (at most
 * `burst` of them within burst/rate of the period), or none at all until
 * `pausedUntil`. The empty `limitKey` ("", the default) limits the whole operator; a
 * key limits the tasks whose `limitKey` holds it. The web app may insert, update and delete rows (a per-user
 * quota: `{ taskType: "slow_llm", limitKey: userId, maxRunning: 2 }`, with the tasks
 * inserted with that `limitKey`); workers see a change at once (a trigger notifies
 * them). Rows from code are re-stored at every worker start, never over a row this
 * table or the terminal wrote.
 */
export const taskLimits = createTable(
  "task_limit",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    taskType: d.varchar({ length: 100 }).$type<OperatorType>().notNull(),
    limitKey: d.varchar({ length: 255 }).default("").notNull(),
    maxRunning: d.integer(),
    rate: d.integer(),
    periodS: d.doublePrecision(),
    burst: d.integer(),
    pausedUntil: d.timestamp({ withTimezone: true }),
    pauseReason: d.text(),
    source: d.varchar({ length: 20 }).$type<TaskLimitSource>().default("table").notNull(),
    createdAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`).notNull(),
    // Set by the touch_updated_at trigger on every UPDATE.
    updatedAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`).notNull(),
  }),
  (t) => [
    check("task_limit_max_running_check", sql`${t.maxRunning} >= 0`),
    check("task_limit_rate_check", sql`${t.rate} >= 1`),
    check("task_limit_period_check", sql`${t.periodS} > 0 AND ${t.periodS} <= 86400`),
    check("task_limit_rate_period_check", sql`(${t.rate} IS NULL) = (${t.periodS} IS NULL)`),
    check(
      "task_limit_burst_check",
      sql`${t.burst} IS NULL OR (${t.burst} >= 1 AND ${t.rate} IS NOT NULL)`,
    ),
    check(
      "task_limit_source_check",
      sql`${t.source} IN ('code', 'cli', 'table', 'slowdown')`,
    ),
    unique("task_limit_operator_key_unique").on(t.taskType, t.limitKey),
  ],
);

/** How an attempt that the task row no longer describes ended (sql/migrations/0029). */
export const taskAttemptOutcomes = [
  "retried",
  "handed_back",
  "put_back",
  "slowed_down",
  "failed",
  "cancelled",
  "completed",
] as const;
export type TaskAttemptOutcome = (typeof taskAttemptOutcomes)[number];

/**
 * A task's earlier attempts (sql/migrations/0029), oldest first by `startedAt`; the
 * latest attempt is the one the task row describes. Written only by a trigger on the
 * queue, as the database's owner: read it, never write it (the web app's role may not).
 * A task's attempts go with it when it is pruned.
 */
export const taskAttempts = createTable(
  "task_attempt",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    taskId: d
      .uuid()
      .notNull()
      .references(() => taskQueue.id, { onDelete: "cascade" }),
    // The task's attempt count while it ran (a hand-back gives the count back, so the
    // next attempt may carry the same number; `counted` says which ones spent one).
    attempt: d.integer().notNull(),
    workerId: d.varchar({ length: 255 }),
    startedAt: d.timestamp({ withTimezone: true }).notNull(),
    endedAt: d.timestamp({ withTimezone: true }).notNull(),
    outcome: d.varchar({ length: 20 }).$type<TaskAttemptOutcome>().notNull(),
    counted: d.boolean().notNull(),
    errorMessage: d.text(),
  }),
  (t) => [
    uniqueIndex("task_attempt_task_started_idx").on(t.taskId, t.startedAt),
    check(
      "task_attempt_outcome_check",
      sql`${t.outcome} IN ('retried', 'handed_back', 'put_back', 'slowed_down', 'failed', 'cancelled', 'completed')`,
    ),
  ],
);

// ---------------------------------------------------------------------------------
// Phase 3: the audit trail (sql/migrations/0004). A person's edit of a cell is a
// cell_edit_event, a robot's a robot_input_event.
// ---------------------------------------------------------------------------------

export const cellEditEvents = createTable(
  "cell_edit_event",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    cellId: d
      .uuid()
      .notNull()
      .references(() => cells.id, { onDelete: "cascade" }),
    userId: d
      .varchar({ length: 255 })
      .notNull()
      .references(() => users.id),
    oldContent: d.text(),
    newContent: d.text(),
    editType: d.varchar({ length: 50 }).default("manual"),
    createdAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    // the version the edit took (sql/migrations/0024); set by the edit trigger
    inputVersion: d.bigint({ mode: "number" }),
  }),
  (t) => [
    index("cell_edit_cell_idx").on(t.cellId),
    index("cell_edit_user_idx").on(t.userId),
    index("cell_edit_time_idx").on(t.createdAt),
    index("cell_edit_version_idx").on(t.cellId, t.inputVersion),
  ],
);

export const robotInputEvents = createTable(
  "robot_input_event",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    cellId: d
      .uuid()
      .notNull()
      .references(() => cells.id, { onDelete: "cascade" }),
    taskId: d.uuid(), // -> taskQueue.id, see the foreign key below
    operatorType: d.varchar({ length: 100 }).$type<OperatorType>().notNull(),
    // The task's payload, and the handler's output.
    inputData: d.jsonb().$type<TaskPayload>(),
    outputData: d.jsonb().$type<Json>(),
    processingTimeMs: d.integer(),
    success: d.boolean().default(true),
    errorMessage: d.text(),
    createdAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    // A result computed from an input older than the one its cell already holds: recorded
    // here, not written to the cell (sql/migrations/0018); errorMessage says why.
    superseded: d.boolean().default(false).notNull(),
    // The input_version this result wrote to its cell, NULL when it wrote nothing: set
    // only by the worker's websurf.record_robot_results (sql/migrations/0036), which the
    // cell guards trust. Never written by the app.
    writtenVersion: d.bigint({ mode: "number" }),
  }),
  (t) => [
    // `.references(() => taskQueue.id)` would be named
    // websurfing_robot_input_event_task_id_websurfing_task_queue_id_fk: 64 bytes, one
    // more than PostgreSQL keeps (NAMEDATALEN - 1 = 63), so the database cuts it to the
    // name below and `drizzle-kit push` would drop and re-add it on every run.
    foreignKey({
      name: "websurfing_robot_input_event_task_id_websurfing_task_queue_id_f",
      columns: [t.taskId],
      foreignColumns: [taskQueue.id],
    }),
    index("robot_input_cell_idx").on(t.cellId),
    // sql/migrations/0013: how the cell guard finds this transaction's robot rows.
    index("robot_input_cell_time_idx").on(t.cellId, t.createdAt),
    index("robot_input_task_idx").on(t.taskId),
    index("robot_input_operator_idx").on(t.operatorType),
    index("robot_input_time_idx").on(t.createdAt),
  ],
);

/**
 * Who moved or deleted a cell that had content (sql/migrations/0015). No foreign key to
 * the cell, so the row outlives it: deleting a cell, or its column or spreadsheet
 * (ON DELETE CASCADE), leaves one `deleted` row per cell with content, naming the
 * author the transaction set with `select set_config('websurf.user_id', <user id>, true)`
 * (without one the delete is refused); changing its spreadsheetId, columnId or rowNumber
 * leaves a `moved` row with both positions. Written by triggers only.
 */
export const cellPositionEvents = createTable(
  "cell_position_event",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    cellId: d.uuid().notNull(),
    userId: d
      .varchar({ length: 255 })
      .notNull()
      .references(() => users.id),
    action: d.varchar({ length: 20 }).$type<"moved" | "deleted">().notNull(),
    content: d.text(),
    spreadsheetId: d.uuid().notNull(),
    columnId: d.uuid().notNull(),
    rowNumber: d.integer().notNull(),
    newSpreadsheetId: d.uuid(),
    newColumnId: d.uuid(),
    newRowNumber: d.integer(),
    createdAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
  }),
  (t) => [
    check("cell_position_event_action_check", sql`${t.action} IN ('moved', 'deleted')`),
    index("cell_position_cell_idx").on(t.cellId),
    index("cell_position_spreadsheet_idx").on(t.spreadsheetId, t.createdAt),
    index("cell_position_user_idx").on(t.userId),
  ],
);

// ---------------------------------------------------------------------------------
// Phase 4: multi-step transformer sessions (sql/migrations/0005).
// ---------------------------------------------------------------------------------

export const transformerSessions = createTable(
  "transformer_session",
  (d) => ({
    id: d.uuid().primaryKey().defaultRandom(),
    sessionName: d.varchar({ length: 255 }).notNull(),
    initialInput: d.jsonb().$type<Json>().notNull(),
    currentStep: d.integer().default(1),
    totalSteps: d.integer(),
    stepData: d.jsonb().$type<TransformerStepData>(),
    isCompleted: d.boolean().default(false),
    requiresUserInput: d.boolean().default(false),
    userInputPrompt: d.text(),
    createdAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    // Set by the touch_updated_at trigger on every UPDATE.
    updatedAt: d.timestamp({ withTimezone: true }).default(sql`CURRENT_TIMESTAMP`),
    completedAt: d.timestamp({ withTimezone: true }),
    // sql/migrations/0008: set when a person cancels the session / when a step fails for good.
    cancelledAt: d.timestamp({ withTimezone: true }),
    errorMessage: d.text(),
  }),
  (t) => [
    index("transformer_session_name_idx").on(t.sessionName),
    index("transformer_session_status_idx").on(t.isCompleted, t.requiresUserInput),
    index("transformer_session_time_idx").on(t.createdAt),
    check(
      "transformer_session_times_in_range",
      sql`${inTimeRange(t.createdAt)} AND ${inTimeRange(t.updatedAt)}
        AND ${inTimeRange(t.completedAt)} AND ${inTimeRange(t.cancelledAt)}`,
    ),
    check("transformer_session_input_size", jsonSizeLimit(t.initialInput)),
    check(
      "transformer_session_json_depth",
      sql`${jsonDepthLimit(t.initialInput)} AND ${jsonDepthLimit(t.stepData)}`,
    ),
    check(
      "transformer_session_steps_range",
      sql`${t.currentStep} BETWEEN 0 AND 10000 AND ${t.totalSteps} BETWEEN 0 AND 10000`,
    ),
  ],
);

// ---------------------------------------------------------------------------------
// Relations (query API only; they create nothing in the database).
// ---------------------------------------------------------------------------------

export const usersRelations = relations(users, ({ many }) => ({
  accounts: many(accounts),
  sessions: many(sessions),
  spreadsheets: many(spreadsheets),
  cellEditEvents: many(cellEditEvents),
  cellPositionEvents: many(cellPositionEvents),
}));

export const cellPositionEventsRelations = relations(cellPositionEvents, ({ one }) => ({
  user: one(users, { fields: [cellPositionEvents.userId], references: [users.id] }),
}));

export const accountsRelations = relations(accounts, ({ one }) => ({
  user: one(users, { fields: [accounts.userId], references: [users.id] }),
}));

export const sessionsRelations = relations(sessions, ({ one }) => ({
  user: one(users, { fields: [sessions.userId], references: [users.id] }),
}));

export const spreadsheetsRelations = relations(spreadsheets, ({ one, many }) => ({
  owner: one(users, { fields: [spreadsheets.ownerId], references: [users.id] }),
  columns: many(columns),
  cells: many(cells),
}));

export const columnsRelations = relations(columns, ({ one, many }) => ({
  spreadsheet: one(spreadsheets, {
    fields: [columns.spreadsheetId],
    references: [spreadsheets.id],
  }),
  cells: many(cells),
  /** The column whose edits feed this robot column. */
  sourceColumn: one(columns, {
    fields: [columns.sourceColumnId],
    references: [columns.id],
    relationName: "sourceColumn",
  }),
  /** The robot columns this column feeds. */
  fedColumns: many(columns, { relationName: "sourceColumn" }),
}));

export const cellsRelations = relations(cells, ({ one, many }) => ({
  spreadsheet: one(spreadsheets, {
    fields: [cells.spreadsheetId],
    references: [spreadsheets.id],
  }),
  column: one(columns, { fields: [cells.columnId], references: [columns.id] }),
  editEvents: many(cellEditEvents),
  robotEvents: many(robotInputEvents),
}));

export const cellEditEventsRelations = relations(cellEditEvents, ({ one }) => ({
  cell: one(cells, { fields: [cellEditEvents.cellId], references: [cells.id] }),
  user: one(users, { fields: [cellEditEvents.userId], references: [users.id] }),
}));

export const robotInputEventsRelations = relations(robotInputEvents, ({ one }) => ({
  cell: one(cells, { fields: [robotInputEvents.cellId], references: [cells.id] }),
  task: one(taskQueue, { fields: [robotInputEvents.taskId], references: [taskQueue.id] }),
}));

export const taskQueueRelations = relations(taskQueue, ({ many }) => ({
  robotEvents: many(robotInputEvents),
}));
