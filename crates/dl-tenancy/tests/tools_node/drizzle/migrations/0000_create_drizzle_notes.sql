CREATE TABLE "drizzle_notes" (
	"id" serial PRIMARY KEY NOT NULL,
	"body" text NOT NULL
);
