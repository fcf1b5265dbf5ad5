// The web app's samples of docs/web-app.md and docs/schedules.md, type-checked against
// sql/drizzle/schema.ts and author.ts by tests/docs/test_typescript_samples.py (the
// page shows the parts between the markers; the rest gives them their context).
import { eq } from "drizzle-orm";
// --8<-- [start:sql-import]
import { sql } from "drizzle-orm";
// --8<-- [end:sql-import]
import type { PostgresJsDatabase } from "drizzle-orm/postgres-js";

import * as schema from "~/server/db/schema";
import { cells, columns } from "~/server/db/schema";

declare const db: PostgresJsDatabase<typeof schema>;
declare const ctx: { session: { user: { id: string } } };
declare const input: { cellId: string; content: string };
declare const id: string;

// --8<-- [start:with-author]
import { withAuthor, isCellAuthorError } from "~/server/db/author";

await withAuthor(db, ctx.session.user.id, async (tx) => {
  await tx.update(cells).set({ content: input.content }).where(eq(cells.id, input.cellId));
}, { editType: "paste" });            // optional, default 'manual'

try { await db.update(cells).set({ content: "x" }).where(eq(cells.id, id)); }
catch (err) { if (isCellAuthorError(err)) { /* forgot withAuthor */ } }
// --8<-- [end:with-author]

export async function nameTheAuthorByHand(): Promise<void> {
  // --8<-- [start:set-config]
  await db.transaction(async (tx) => {
    // transaction-local: it ends with the transaction, so pooled connections never leak it
    await tx.execute(sql`select set_config('websurf.user_id', ${ctx.session.user.id}, true)`);
    // optional, default 'manual' (e.g. 'paste', 'import', 'formula')
    await tx.execute(sql`select set_config('websurf.edit_type', ${"paste"}, true)`);

    await tx
      .update(cells)
      .set({ content: input.content })
      .where(eq(cells.id, input.cellId));
  });
  // --8<-- [end:set-config]
}

export async function refreshHourly(): Promise<void> {
  // --8<-- [start:refresh]
  await db.update(columns).set({ refreshEvery: "1 hour" }).where(eq(columns.id, id));
  // --8<-- [end:refresh]
}
