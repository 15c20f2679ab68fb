-- The orders table of examples/orders/streamload.toml. The key (order_id) needs a unique
-- index; columns the route maps must exist in a compatible type (auto_migrate adds missing
-- ones as nullable columns, never drops or retypes).
CREATE SCHEMA IF NOT EXISTS sales;
CREATE TABLE IF NOT EXISTS sales.orders (
  order_id        text PRIMARY KEY,
  revision        integer NOT NULL,
  customer_id     uuid,
  total           numeric(12, 2),
  currency        text,
  paid            boolean,
  placed_at       timestamptz NOT NULL,
  ship_by         date,
  weight_kg       double precision,
  items           jsonb,
  first_sku       text,
  partition_key   text,
  stream_sequence numeric,
  updated_at      timestamptz NOT NULL DEFAULT now()
);
