-- Units, raw fixes (time-partitioned) and dead letters.
-- The fixes table is a TimescaleDB hypertable or native RANGE partitions by UTC day, as the
-- migration runner decided (store/migrate.py -> store.partitions.decide_layout, from facts that
-- cannot end the session) and passed as SET LOCAL fleetwatch.partitioning = 'native' or
-- 'timescaledb'.  This file never probes TimescaleDB itself: CREATE EXTENSION on a server that
-- does not preload the library ends the backend with FATAL, past any EXCEPTION block (issue 13).
-- Identifiers use the "C" collation: byte order, the cheapest comparison for the btree indexes,
-- and the same on every server whatever its locale.

CREATE TABLE units (
    unit_id     text COLLATE "C" PRIMARY KEY,
    vehicle_id  text COLLATE "C" NOT NULL,
    driver      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fixes (
    unit_id     text COLLATE "C" NOT NULL,
    vehicle_id  text COLLATE "C",
    t           timestamptz NOT NULL,   -- fix time, from the receiver
    recv_at     timestamptz NOT NULL,   -- receive time, from the MQTT shell's clock
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    speed_kmh   real,
    course      real,
    quality     smallint,
    sats        smallint,
    hdop        real,
    alt_m       real,
    talker      text        NOT NULL,
    PRIMARY KEY (unit_id, t)
) PARTITION BY RANGE (t);

CREATE INDEX fixes_vehicle_t ON fixes (vehicle_id, t);

DO $$
DECLARE
    wanted text := coalesce(nullif(current_setting('fleetwatch.partitioning', true), ''), 'unset');
BEGIN
    IF wanted NOT IN ('native', 'timescaledb') THEN
        RAISE EXCEPTION 'fleetwatch.partitioning is %, not native or timescaledb', wanted
            USING HINT = 'apply the migrations with store.migrate.apply_migrations, which decides';
    END IF;
    IF wanted = 'timescaledb' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        -- A hypertable is a plain table: rebuild fixes unpartitioned, then convert it.
        DROP TABLE fixes;
        CREATE TABLE fixes (
            unit_id text COLLATE "C" NOT NULL, vehicle_id text COLLATE "C",
            t timestamptz NOT NULL,
            recv_at timestamptz NOT NULL, lat double precision NOT NULL,
            lon double precision NOT NULL, speed_kmh real, course real, quality smallint,
            sats smallint, hdop real, alt_m real, talker text NOT NULL,
            PRIMARY KEY (unit_id, t)
        );
        CREATE INDEX fixes_vehicle_t ON fixes (vehicle_id, t);
        PERFORM create_hypertable('fixes', 't', chunk_time_interval => interval '1 day');
        RETURN;
    END IF;
    CREATE TABLE fixes_default PARTITION OF fixes DEFAULT;
    CREATE INDEX fixes_default_t ON fixes_default (t);
END
$$;

-- Create the day partitions for these UTC days when missing.  Rows already caught by the
-- DEFAULT partition for such a day are moved into the new partition (otherwise PostgreSQL
-- refuses to create it).  Serialised by an advisory lock so concurrent writers do not race.
CREATE FUNCTION fleetwatch_ensure_fixes_partitions(days date[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    part text;
    lo timestamptz;
    hi timestamptz;
    created integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'fixes'::regclass) THEN
        RETURN 0;  -- a hypertable makes its own chunks
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('fleetwatch.fixes.partitions'));
    FOREACH d IN ARRAY days LOOP
        part := 'fixes_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;  -- exists (or detached for retention)
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (SELECT 1 FROM fixes_default WHERE t >= lo AND t < hi) THEN
            EXECUTE format('CREATE TABLE %I (LIKE fixes INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           part);
            EXECUTE format('WITH moved AS (DELETE FROM fixes_default WHERE t >= %L AND t < %L '
                           'RETURNING *) INSERT INTO %I SELECT * FROM moved', lo, hi, part);
            EXECUTE format('ALTER TABLE fixes ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           part, lo, hi);
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF fixes FOR VALUES FROM (%L) TO (%L)',
                           part, lo, hi);
        END IF;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

CREATE TABLE dead_letters (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic     text        NOT NULL,
    unit_id   text,
    reason    text        NOT NULL,
    detail    text        NOT NULL,
    payload   bytea       NOT NULL,
    recv_at   timestamptz NOT NULL
);

CREATE INDEX dead_letters_reason ON dead_letters (reason);
CREATE INDEX dead_letters_recv_at ON dead_letters (recv_at);
