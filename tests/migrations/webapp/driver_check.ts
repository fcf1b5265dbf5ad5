/**
 * The web app's side of websurf, run for real with both drivers the T3 stack uses
 * (postgres-js and node-postgres) on the shipped schema.ts and author.ts. Started by
 * tests/migrations/test_webapp_typescript.py, which prepares the database and reads the
 * JSON this prints: one object per driver with what each step observed.
 *
 * Input (environment): DATABASE_URL, and FIXTURE, a JSON object with the ids of a user,
 * a spreadsheet, its source column A and robot column B, and a cell of A. Beside it, the
 * test writes db.ts, the docs' client for the web app (docs/snippets/webapp/db.ts), and env.ts, what it imports.
 */
import { and, eq } from "drizzle-orm";
import { drizzle as drizzlePg } from "drizzle-orm/node-postgres";
import { drizzle as drizzlePostgresJs } from "drizzle-orm/postgres-js";
import pg from "pg";
import postgres from "postgres";

import { isCellAuthorError, withAuthor } from "./author.js";
import { db as readmeDb } from "./db.js";
import * as schema from "./schema.js";
import {
  cellEditEvents,
  cells,
  columns,
  type CellUpdatedNotification,
  type RobotColumnPayload,
  type Task,
  type TaskOf,
  taskQueue,
  users,
} from "./schema.js";

type Fixture = { userId: string; sheetId: string; sourceColumnId: string; robotColumnId: string; cellId: string };

const url = process.env.DATABASE_URL ?? "";
const fixture = JSON.parse(process.env.FIXTURE ?? "{}") as Fixture;

function databases() {
  const sqlClient = postgres(url, { max: 2, onnotice: () => {} });
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  return {
    drivers: [
      { name: "postgres-js", db: drizzlePostgresJs(sqlClient, { schema, casing: "snake_case" }) },
      { name: "pg", db: drizzlePg(pool, { schema, casing: "snake_case" }) },
    ] as const,
    close: async () => {
      await sqlClient.end();
      await pool.end();
    },
  };
}

async function check(name: string, db: ReturnType<typeof databases>["drivers"][number]["db"]) {
  const seen: Record<string, unknown> = { driver: name };
  const cell = eq(cells.id, fixture.cellId);

  // 1. An edit that names no author is refused, and recognised as such.
  try {
    await db.update(cells).set({ content: `${name}: anonymous` }).where(cell);
    seen.anonymousEdit = "accepted";
  } catch (err) {
    seen.anonymousEdit = isCellAuthorError(err) ? "refused: cell author error" : `refused: ${String(err)}`;
  }

  // 2. Another database error is not mistaken for it (duplicate primary key).
  try {
    await db.insert(users).values({ id: fixture.userId, email: "again@example.test" });
    seen.otherError = "accepted";
  } catch (err) {
    seen.otherError = isCellAuthorError(err) ? "mistaken for a cell author error" : "not an author error";
  }

  // 3. withAuthor: the edit, its audit row and its robot task commit together.
  const content = `typed through ${name}`;
  const returned = await withAuthor(
    db,
    fixture.userId,
    async (tx) => {
      await tx.update(cells).set({ content }).where(cell);
      return "done";
    },
    { editType: "paste" },
  );
  seen.withAuthorReturned = returned;
  const [edit] = await db
    .select()
    .from(cellEditEvents)
    .where(and(eq(cellEditEvents.cellId, fixture.cellId), eq(cellEditEvents.newContent, content)));
  seen.auditRow = edit ? { userId: edit.userId, editType: edit.editType } : null;

  // The robot task it enqueued, read with its typed payload.
  const rows = await db.select().from(taskQueue).where(eq(taskQueue.taskType, "uppercase"));
  const tasks = rows as Task[];
  const mine = tasks.find((t) => (t.payload as RobotColumnPayload).input === content) as
    | TaskOf<"uppercase">
    | undefined;
  // 3b. Deleting that cell (it has content now) with no author is refused, and recognised.
  try {
    await db.transaction(async (tx) => {
      await tx.delete(cells).where(cell);
      throw new Error("deleted without an author");
    });
  } catch (err) {
    seen.anonymousDelete = isCellAuthorError(err) ? "refused: cell author error" : `refused: ${String(err)}`;
  }

  seen.task = mine
    ? {
        status: mine.status,
        input: mine.payload.input,
        versionIsNumber: typeof mine.payload.input_version === "number",
        uniqueKey: mine.uniqueKey,
      }
    : null;

  // 4. A failure inside withAuthor rolls the edit back.
  try {
    await withAuthor(db, fixture.userId, async (tx) => {
      await tx.update(cells).set({ content: "rolled back" }).where(cell);
      throw new Error("the app changed its mind");
    });
  } catch {
    // expected
  }
  const [after] = await db.select({ content: cells.content }).from(cells).where(cell);
  seen.afterRollback = after?.content;

  // 5. The relations: a column's source column, the robot columns it feeds, a user's sessions.
  const robot = await db.query.columns.findFirst({
    where: eq(columns.id, fixture.robotColumnId),
    with: { sourceColumn: true },
  });
  const source = await db.query.columns.findFirst({
    where: eq(columns.id, fixture.sourceColumnId),
    with: { fedColumns: true },
  });
  const user = await db.query.users.findFirst({
    where: eq(users.id, fixture.userId),
    with: { sessions: true },
  });
  seen.relations = {
    sourceColumnTitle: robot?.sourceColumn?.title,
    fedColumnTitles: source?.fedColumns.map((c) => c.title),
    sessionCount: user?.sessions.length,
  };
  return seen;
}

const example: CellUpdatedNotification = {
  spreadsheet_id: fixture.sheetId,
  column_id: fixture.robotColumnId,
  row_number: 1,
  cell_id: fixture.cellId,
};

/** The docs' client reads a user (column email_verified); one without casing cannot. */
async function clients() {
  const byId = eq(users.id, fixture.userId);
  const found = await readmeDb.query.users.findFirst({ where: byId });
  const bare = postgres(url, { max: 1, onnotice: () => {} });
  let withoutCasing = "accepted";
  try {
    await drizzlePostgresJs(bare, { schema }).query.users.findFirst({ where: byId });
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    withoutCasing = `refused: ${String(cause ?? err)}`;
  } finally {
    await bare.end();
    await (globalThis as { conn?: postgres.Sql }).conn?.end();
  }
  return { readmeClient: found?.email ?? null, withoutCasing };
}

const { drivers, close } = databases();
try {
  const results = [];
  for (const { name, db } of drivers) {
    results.push(await check(name, db));
  }
  const notificationType = Object.keys(example).sort();
  console.log(JSON.stringify({ results, notificationType, ...(await clients()) }));
} finally {
  await close();
}
