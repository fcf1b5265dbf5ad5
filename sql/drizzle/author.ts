/**
 * Naming the author of cell edits, for the web app (beside schema.ts; import or copy it).
 *
 * The database refuses a change to `websurfing_cell.content` unless the transaction
 * named its author (sql/migrations/0007), and so a delete or move of a cell with
 * content (0015). `withAuthor` opens the transaction and names the author in it;
 * `isCellAuthorError` recognises either refusal whichever driver the app uses: Drizzle
 * wraps the driver's error in a `DrizzleQueryError` whose message is the SQL and its
 * parameters, and the driver's own error, with websurf's message, SQLSTATE 23514 and
 * the constraint name, is its `cause` (`constraint_name` in postgres-js, `constraint`
 * in node-postgres).
 *
 * Needs only drizzle-orm: it type-checks without the DOM lib or `@types/node`.
 */
import { sql } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";

/** The constraint name the refusal of an edit without an author carries. */
export const CELL_AUTHOR_CONSTRAINT = "cell_edit_author";
/** The constraint name the refusal of a delete or move without an author carries. */
export const CELL_CHANGE_AUTHOR_CONSTRAINT = "cell_change_author";
const AUTHOR_CONSTRAINTS: readonly unknown[] = [
  CELL_AUTHOR_CONSTRAINT,
  CELL_CHANGE_AUTHOR_CONSTRAINT,
];
/** SQLSTATE check_violation. */
export const CHECK_VIOLATION = "23514";

// biome-ignore lint/suspicious/noExplicitAny: any schema, any driver
type AnyPgDatabase = PgDatabase<PgQueryResultHKT, any, any>;
/** The transaction object `db.transaction` hands to its callback, for this `db`. */
export type TransactionOf<DB extends AnyPgDatabase> = Parameters<
  Parameters<DB["transaction"]>[0]
>[0];

export type AuthorOptions = {
  /** websurfing_cell_edit_event.edit_type; default 'manual' (e.g. 'paste', 'import'). */
  editType?: string;
};

/**
 * Run `fn` in a transaction whose cell edits are made by `userId`.
 *
 * The name is transaction-local (`set_config(…, true)`), so a pooled connection never
 * carries it into another request. Everything `fn` does commits together: the edits,
 * their audit rows and the robot tasks they enqueue.
 */
export async function withAuthor<DB extends AnyPgDatabase, T>(
  db: DB,
  userId: string,
  fn: (tx: TransactionOf<DB>) => Promise<T>,
  options: AuthorOptions = {},
): Promise<T> {
  if (!userId) {
    throw new TypeError("withAuthor needs the id of the user who makes the edits");
  }
  return db.transaction(async (tx) => {
    await tx.execute(sql`select set_config('websurf.user_id', ${userId}, true)`);
    if (options.editType !== undefined) {
      await tx.execute(sql`select set_config('websurf.edit_type', ${options.editType}, true)`);
    }
    return fn(tx as TransactionOf<DB>);
  }) as Promise<T>;
}

/** The fields of a PostgreSQL error that postgres-js and node-postgres both expose. */
type DriverError = {
  code?: unknown;
  constraint_name?: unknown; // postgres-js
  constraint?: unknown; // node-postgres (pg)
  cause?: unknown;
};

/**
 * Is `err` (or an error it wraps, e.g. Drizzle's DrizzleQueryError) the database's
 * refusal of a cell edit, delete or move that named no author?
 */
export function isCellAuthorError(err: unknown): boolean {
  const seen = new Set<unknown>();
  let current: unknown = err;
  while (typeof current === "object" && current !== null && !seen.has(current)) {
    seen.add(current);
    const e = current as DriverError;
    const constraint = e.constraint_name ?? e.constraint;
    if (e.code === CHECK_VIOLATION && AUTHOR_CONSTRAINTS.includes(constraint)) {
      return true;
    }
    current = e.cause;
  }
  return false;
}
