-- Durable operations: what dispatchers and account managers rely on, never only in memory.
--
-- * record_versions is the OUTBOX and the CRM feed: every version of every record the engine
--   publishes (visit exceptions, alert versions, stop states, visits, stops), in commit order.
--   Writers take pg_advisory_xact_lock(hashtext('fleetwatch.outbox')) before inserting, so the
--   seq order IS the commit order: a reader that has seen seq N can never later find a row with
--   a smaller seq committed after it (the feed cursor never skips a late commit).
--   (kind, id, body_sha256) dedups a re-derived record (after a restart or a replay): the same
--   content is never announced twice; new content for a known id gets version = max + 1.
-- * The *_current tables hold the latest version of each record, for queries (service quality,
--   KPIs, the console's snapshot after a restart); they are written in the same transaction as
--   the outbox row, so they can never disagree with the feed.
-- * commands_journal keeps every accepted dispatcher command, so a restarted engine can re-apply
--   acknowledgements, comments, reassignments and cancellations on top of re-derived state.

CREATE TABLE record_versions (
    seq          bigserial PRIMARY KEY,
    kind         text COLLATE "C" NOT NULL,   -- exception | alert | stop_state | visit | stop
    id           text COLLATE "C" NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    body         jsonb NOT NULL,              -- the record's JSON (to_json_dict), version set
    body_sha256  bytea NOT NULL,              -- of the body without its version fields
    at           timestamptz NOT NULL,        -- engine time of the change (data time)
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (kind, id, version)
);
CREATE INDEX record_versions_kind_seq ON record_versions (kind, seq);
CREATE INDEX record_versions_kind_id ON record_versions (kind, id, version DESC);

CREATE TABLE visit_exceptions_current (
    id            text COLLATE "C" PRIMARY KEY,   -- "<service_date>/<site_id>/<kind>"
    version       integer NOT NULL,
    seq           bigint NOT NULL REFERENCES record_versions (seq),
    kind          text NOT NULL CHECK (kind IN ('late', 'missed', 'cancelled', 'unplanned')),
    status        text NOT NULL CHECK (status IN ('open', 'confirmed', 'retracted')),
    site_id       text COLLATE "C" NOT NULL,
    client_id     text COLLATE "C",
    service_date  date NOT NULL,
    vehicle_id    text COLLATE "C",
    window_start  timestamptz,
    window_end    timestamptz,
    arrival       timestamptz,
    minutes_late  double precision,
    comments      jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX visit_exceptions_client_date ON visit_exceptions_current (client_id, service_date);
CREATE INDEX visit_exceptions_site_date ON visit_exceptions_current (site_id, service_date);

CREATE TABLE alerts_current (
    id               text COLLATE "C" PRIMARY KEY,  -- "stop/<date>/<site>" | "vehicle/<date>/<vehicle>/<kind>"
    version          integer NOT NULL,
    seq              bigint NOT NULL REFERENCES record_versions (seq),
    kind             text NOT NULL,
    severity         text NOT NULL,
    status           text NOT NULL,     -- open | acknowledged | resolved | retracted
    assignee         text COLLATE "C",
    escalation_level integer NOT NULL DEFAULT 0,
    opened_at        timestamptz NOT NULL,
    acknowledged_at  timestamptz,
    acknowledged_by  text COLLATE "C",
    closed_at        timestamptz,       -- resolved or retracted
    detected_late    boolean NOT NULL DEFAULT false,
    body             jsonb NOT NULL
);
CREATE INDEX alerts_current_opened ON alerts_current (opened_at);

CREATE TABLE stop_states_current (
    stop_id        text COLLATE "C" PRIMARY KEY,   -- "<service_date>/<site_id>"
    version        integer NOT NULL,
    seq            bigint NOT NULL REFERENCES record_versions (seq),
    site_id        text COLLATE "C" NOT NULL,
    client_id      text COLLATE "C",
    service_date   date NOT NULL,
    vehicle_id     text COLLATE "C",
    state          text NOT NULL,       -- pending | at_risk | late | visited | missed | cancelled
    outcome        text,                -- early | on_time | late (visited)
    minutes_late   double precision,
    window_start   timestamptz NOT NULL,
    window_end     timestamptz NOT NULL,
    planned_arrival timestamptz,
    arrival        timestamptz,
    departure      timestamptz,
    visited_by     text COLLATE "C",
    body           jsonb NOT NULL
);
CREATE INDEX stop_states_client_date ON stop_states_current (client_id, service_date);
CREATE INDEX stop_states_site_date ON stop_states_current (site_id, service_date);

CREATE TABLE visits_current (
    visit_id     text COLLATE "C" PRIMARY KEY,
    version      integer NOT NULL,
    seq          bigint NOT NULL REFERENCES record_versions (seq),
    vehicle_id   text COLLATE "C" NOT NULL,
    site_id      text COLLATE "C" NOT NULL,
    arrival      timestamptz NOT NULL,
    departure    timestamptz,                      -- null while in progress
    retracted    boolean NOT NULL DEFAULT false,
    body         jsonb NOT NULL
);
CREATE INDEX visits_site_arrival ON visits_current (site_id, arrival);
CREATE INDEX visits_vehicle_arrival ON visits_current (vehicle_id, arrival);

CREATE TABLE commands_journal (
    seq        bigserial PRIMARY KEY,
    at         timestamptz NOT NULL,
    by_user    text COLLATE "C" NOT NULL,
    command    jsonb NOT NULL,           -- {"type": "acknowledge", "alert_id": ..., ...}
    accepted   boolean NOT NULL,
    refusal    text                      -- CommandRefused code when not accepted
);
