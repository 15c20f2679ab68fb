//! The wide route of the benchmarks: 20 columns, nested pointers, every kind of type, as a
//! team's own events look. Shared by the CPU bench (decode_encode) and the PostgreSQL bench
//! (tests/benches/load.rs); both include this file by path.

/// The route, as the JSON form of a route file (table `bench_orders`).
pub const WIDE_ROUTE: &str = r#"{"route": [{
    "name": "orders", "source": "*", "table": "bench_orders", "event_time": "/placed_at",
    "identity": ["/order_id", "/revision"], "key": ["order_id"], "merge": {"newest_by": "revision"},
    "column": [
      {"name": "order_id", "from": "/order_id", "type": "text", "required": true},
      {"name": "revision", "from": "/revision", "type": "integer", "required": true},
      {"name": "placed_at", "from": "/placed_at", "type": "timestamptz", "unit": "ms", "required": true},
      {"name": "updated", "from": "/meta/updated", "type": "timestamptz"},
      {"name": "customer_id", "from": "/customer/id", "type": "uuid"},
      {"name": "customer_tier", "from": "/customer/tier", "type": "text"},
      {"name": "country", "from": "/customer/address/country", "type": "text"},
      {"name": "city", "from": "/customer/address/city", "type": "text"},
      {"name": "total", "from": "/amount/total", "type": "numeric", "precision": 12, "scale": 2},
      {"name": "tax", "from": "/amount/tax", "type": "numeric", "precision": 12, "scale": 2},
      {"name": "currency", "from": "/amount/currency", "type": "text"},
      {"name": "items", "from": "/items", "type": "jsonb"},
      {"name": "first_sku", "from": "/items/0/sku", "type": "text"},
      {"name": "item_count", "from": "/item_count", "type": "integer"},
      {"name": "weight", "from": "/shipping/weight_kg", "type": "double"},
      {"name": "express", "from": "/shipping/express", "type": "boolean"},
      {"name": "ship_by", "from": "/shipping/ship_by", "type": "date"},
      {"name": "channel", "from": "/channel", "type": "text"},
      {"name": "sequence", "from": "/sequence", "type": "bigint"},
      {"name": "partition_key", "from": "@partition_key", "type": "text"}
    ]}]}"#;

/// The DDL of its table.
#[allow(dead_code)]
pub const WIDE_TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS bench_orders (
    order_id text PRIMARY KEY, revision integer NOT NULL, placed_at timestamptz NOT NULL,
    updated timestamptz, customer_id uuid, customer_tier text, country text, city text,
    total numeric(12,2), tax numeric(12,2), currency text, items jsonb, first_sku text,
    item_count integer, weight double precision, express boolean, ship_by date, channel text,
    sequence bigint, partition_key text)";

/// Record `i` of the wide route (about 700 bytes of JSON).
pub fn wide_record(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "order_id": format!("ord-{i:08}"),
        "revision": i % 7,
        "placed_at": 1_714_557_600_000i64 + i as i64 * 37,
        "meta": {"updated": "2024-05-01T10:00:00.123Z", "producer": "checkout-svc", "trace": format!("{i:032x}")},
        "customer": {
            "id": format!("6f9619ff-8b86-d011-b42d-{:012x}", i),
            "tier": (["gold", "silver", "bronze"])[i % 3],
            "address": {"country": (["DE", "FR", "US", "JP"])[i % 4], "city": (["Berlin", "Paris", "Austin", "Osaka"])[i % 4], "zip": "10115"}
        },
        "amount": {"total": format!("{}.{:02}", 10 + i % 500, i % 100), "tax": "1.90", "currency": "EUR"},
        "items": [{"sku": format!("SKU-{}", i % 97), "qty": 1 + i % 3, "price": "9.95"},
                  {"sku": "SKU-7", "qty": 1, "price": "4.50"}],
        "item_count": 2,
        "shipping": {"weight_kg": 1.25 + (i % 10) as f64, "express": i % 5 == 0, "ship_by": "2024-05-03"},
        "channel": (["web", "app", "store"])[i % 3],
        "sequence": 1_000_000_000_000i64 + i as i64,
        "notes": "leave at the door, ring twice"
    }))
    .unwrap()
}
