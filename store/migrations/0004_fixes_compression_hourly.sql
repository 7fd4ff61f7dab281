-- Hypertable layout: compression settings for fixes chunks and the continuous aggregate
-- fixes_hourly (fixes per unit per UTC hour).  Native layout: fixes_hourly is a plain view with
-- the same columns, computed when read, so analytics SQL runs unchanged on both layouts.
-- The *policies* (compress after N days, drop after N days, refresh the aggregate) depend on
-- settings and are (re)applied at every Store.open: store.partitions.apply_timescaledb_policies.
--
-- Compression: segment by unit_id (every read is "one unit over a time range"; a late fix for a
-- compressed day decompresses only its unit's segment), ordered by t.
-- fixes_hourly is real-time (materialized_only = false): the hours not yet materialised are
-- computed from fixes at query time, so it always agrees with the raw table.  Hour buckets are
-- UTC on both layouts (time_bucket and date_bin ignore the session TimeZone).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'fixes'::regclass) THEN
        CREATE VIEW fixes_hourly AS
        SELECT unit_id,
               date_bin(interval '1 hour', t, timestamptz '2000-01-01 00:00+00') AS hour,
               count(*) AS fixes, min(t) AS first_t, max(t) AS last_t,
               avg(speed_kmh)::double precision AS mean_speed_kmh,
               max(speed_kmh) AS max_speed_kmh
        FROM fixes
        GROUP BY 1, 2;
        RETURN;
    END IF;
    ALTER TABLE fixes SET (timescaledb.compress,
                           timescaledb.compress_segmentby = 'unit_id',
                           timescaledb.compress_orderby = 't');
    EXECUTE $view$
        CREATE MATERIALIZED VIEW fixes_hourly
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT unit_id,
               time_bucket(interval '1 hour', t) AS hour,
               count(*) AS fixes, min(t) AS first_t, max(t) AS last_t,
               avg(speed_kmh)::double precision AS mean_speed_kmh,
               max(speed_kmh) AS max_speed_kmh
        FROM fixes
        GROUP BY unit_id, time_bucket(interval '1 hour', t)
        WITH NO DATA
    $view$;
END
$$;
