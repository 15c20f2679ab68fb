-- The cost of asking PostgreSQL which staged rows its table did not keep (issue 28:
-- RouteSql::superseded, run on an indexed route when a merge did not apply every staged row),
-- beside the merge itself, on the same 10,000-row stage. BENCHMARKS.md §2 "Which event the
-- table kept". Run: psql "$STREAMLOAD_PG_ADMIN_URL" -q -f scripts/bench-superseded.sql
\timing on
DROP TABLE IF EXISTS bench_kf;
CREATE TABLE bench_kf (order_id text PRIMARY KEY, revision bigint NOT NULL, qty integer);
INSERT INTO bench_kf SELECT 'o-' || g, 1, g FROM generate_series(1, 100000) g;
ANALYZE bench_kf;
BEGIN;
CREATE TEMP TABLE streamload_stage_kf (order_id text, revision int8, qty int4, streamload_ord integer) ON COMMIT DELETE ROWS;
-- 10,000 staged rows: half new keys, half other events of held keys (superseded)
INSERT INTO streamload_stage_kf SELECT 'o-' || (95000 + g), 2, g, g - 1 FROM generate_series(1, 10000) g;
\echo upsert
INSERT INTO bench_kf AS cur (order_id, revision, qty) SELECT DISTINCT ON (order_id) order_id, revision, qty FROM streamload_stage_kf ORDER BY order_id, streamload_ord ON CONFLICT ("order_id") DO UPDATE SET revision = EXCLUDED.revision, qty = EXCLUDED.qty WHERE (cur.order_id, cur.revision) IS NOT DISTINCT FROM (EXCLUDED.order_id, EXCLUDED.revision);
\echo superseded
SELECT count(*) FROM (SELECT s.streamload_ord FROM streamload_stage_kf s WHERE NOT EXISTS (SELECT 1 FROM bench_kf cur WHERE (cur.order_id) = (s.order_id) AND (cur.order_id, cur.revision) IS NOT DISTINCT FROM (s.order_id, s.revision))) x;
\echo superseded
SELECT count(*) FROM (SELECT s.streamload_ord FROM streamload_stage_kf s WHERE NOT EXISTS (SELECT 1 FROM bench_kf cur WHERE (cur.order_id) = (s.order_id) AND (cur.order_id, cur.revision) IS NOT DISTINCT FROM (s.order_id, s.revision))) x;
\echo superseded
SELECT count(*) FROM (SELECT s.streamload_ord FROM streamload_stage_kf s WHERE NOT EXISTS (SELECT 1 FROM bench_kf cur WHERE (cur.order_id) = (s.order_id) AND (cur.order_id, cur.revision) IS NOT DISTINCT FROM (s.order_id, s.revision))) x;
ROLLBACK;
DROP TABLE bench_kf;
