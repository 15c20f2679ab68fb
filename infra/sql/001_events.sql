-- The target table streamload upserts into (TARGET_TABLE, default "events").
-- At least the producer's columns; extra columns with defaults are fine.
CREATE TABLE IF NOT EXISTS events (
  event_id   text PRIMARY KEY,
  user_id    text NOT NULL,
  event_type text NOT NULL,
  payload    jsonb,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
