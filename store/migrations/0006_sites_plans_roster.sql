-- Reference data in the database: clients, sites (fence geometry + contract schedule),
-- vehicles (depots), day plans and their stops, dispatchers and their shifts.
--
-- The files (sites.geojson/csv, plans.csv/json, depots.csv, roster.toml) stay the exchange
-- format; store/outbox_plans.py imports them into these tables and loads back exactly the
-- values the file loaders return (geofence.sites.Site, schedule.plans.DayPlan,
-- alerts.roster.Roster), so the service can start from either.  Geometry is kept as GeoJSON
-- (WGS84 lon/lat, jsonb): no PostGIS needed; the fence index is built in the service.
-- A re-import replaces a site's row, a day's plan and the roster as a whole.

CREATE TABLE clients (
    client_id  text COLLATE "C" PRIMARY KEY,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    site_id     text COLLATE "C" PRIMARY KEY,
    client_id   text COLLATE "C" NOT NULL REFERENCES clients (client_id),
    name        text NOT NULL,
    geometry    jsonb NOT NULL,            -- GeoJSON geometry: Point (with radius_m), Polygon, MultiPolygon
    radius_m    double precision CHECK (radius_m IS NULL OR radius_m > 0),
    schedule    jsonb,                     -- the contract schedule as in sites.geojson
    service_min integer,
    attributes  jsonb NOT NULL DEFAULT '{}',
    active      boolean NOT NULL DEFAULT true,  -- false: no longer in the imported site list
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sites_client ON sites (client_id);

CREATE TABLE vehicles (
    vehicle_id text COLLATE "C" PRIMARY KEY,
    depot_lon  double precision,
    depot_lat  double precision,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE day_routes (
    service_date date NOT NULL,
    vehicle_id   text COLLATE "C" NOT NULL,
    departure    timestamptz,              -- planned depot departure
    return_at    timestamptz,              -- planned return
    PRIMARY KEY (service_date, vehicle_id)
);

CREATE TABLE plan_stops (
    service_date    date NOT NULL,
    vehicle_id      text COLLATE "C" NOT NULL,
    seq             integer NOT NULL,
    site_id         text COLLATE "C" NOT NULL,
    planned_arrival timestamptz,
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    service_min     double precision NOT NULL,
    PRIMARY KEY (service_date, vehicle_id, seq),
    FOREIGN KEY (service_date, vehicle_id) REFERENCES day_routes ON DELETE CASCADE
);
CREATE INDEX plan_stops_site ON plan_stops (site_id, service_date);

CREATE TABLE roster (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    tz        text NOT NULL
);

CREATE TABLE dispatchers (
    dispatcher_id text COLLATE "C" PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL,
    vehicles      text[] COLLATE "C" NOT NULL DEFAULT '{}',
    position      integer NOT NULL          -- order in the roster
);

CREATE TABLE shifts (
    dispatcher_id text COLLATE "C" NOT NULL REFERENCES dispatchers ON DELETE CASCADE,
    position      integer NOT NULL,
    days          integer[] NOT NULL,       -- ISO weekdays the shift starts on
    start_min     integer NOT NULL,
    end_min       integer NOT NULL,
    PRIMARY KEY (dispatcher_id, position)
);
