/**
 * drizzle-kit configuration for schema.ts, as the web app uses it and as
 * tests/migrations/test_drizzle_mirror.py runs it (`drizzle-kit generate`, offline, and
 * `drizzle-kit push` with DATABASE_URL set to a database built by `websurf migrate`).
 * `casing` and `tablesFilter` must be the same in the web app's own drizzle.config.ts.
 */
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./schema.ts",
  out: "./out",
  casing: "snake_case",
  tablesFilter: ["websurfing_*"],
  // Only `push`, `pull`, `migrate` and `check` against a live database need this.
  dbCredentials: { url: process.env.DATABASE_URL ?? "" },
});
