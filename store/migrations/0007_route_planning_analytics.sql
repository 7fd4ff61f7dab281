-- Analytics for route planning (issue 9), as plain views over the current-state tables that the
-- outbox keeps (migration 0005): they run unchanged on both layouts of `fixes` and are always
-- up to date.  (The current tables are small: one row per stop, visit or exception; a
-- TimescaleDB continuous aggregate needs a hypertable and gains nothing here.)
--
-- Hours of day are in the session's TimeZone (SET TimeZone = 'Europe/Moscow' for local hours).

-- Each visited planned stop: arrival relative to its window, in minutes.
CREATE VIEW stop_arrivals AS
SELECT s.stop_id, s.site_id, s.client_id, s.service_date, s.vehicle_id, s.visited_by,
       s.outcome,
       (extract(epoch FROM s.arrival - s.window_start) / 60.0)::float8 AS min_after_window_start,
       (extract(epoch FROM s.arrival - s.window_end) / 60.0)::float8   AS min_after_window_end,
       (extract(epoch FROM s.departure - s.arrival) / 60.0)::float8    AS service_min
FROM stop_states_current s
WHERE s.state = 'visited' AND s.arrival IS NOT NULL;

-- Per site: how arrivals fall against the contracted window.
CREATE VIEW site_arrival_vs_window AS
SELECT site_id,
       count(*)                                                        AS visits,
       count(*) FILTER (WHERE outcome = 'early')                       AS early,
       count(*) FILTER (WHERE outcome = 'on_time')                     AS on_time,
       count(*) FILTER (WHERE outcome = 'late')                        AS late,
       avg(min_after_window_start)                                     AS mean_min_after_start,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY min_after_window_start)
                                                                       AS p50_min_after_start,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY min_after_window_end)
                                                                       AS p90_min_after_end
FROM stop_arrivals
GROUP BY site_id;

-- Completed, not retracted visits (planned or not), with their service time.
CREATE VIEW completed_visits AS
SELECT visit_id, vehicle_id, site_id, arrival, departure,
       (extract(epoch FROM departure - arrival) / 60.0)::float8 AS service_min
FROM visits_current
WHERE departure IS NOT NULL AND NOT retracted;

-- Per site: typical service (dwell) time.
CREATE VIEW site_service_time AS
SELECT site_id,
       count(*)                                                    AS visits,
       avg(service_min)                                            AS mean_min,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY service_min)    AS p50_min,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY service_min)    AS p90_min
FROM completed_visits
GROUP BY site_id;

-- Consecutive visits of one vehicle on one day: the leg between them.
CREATE VIEW travel_legs AS
SELECT vehicle_id, from_site, site_id AS to_site, departed, arrival AS arrived,
       (extract(epoch FROM arrival - departed) / 60.0)::float8 AS travel_min,
       extract(hour FROM departed)::int               AS hour_of_day
FROM (
    SELECT vehicle_id, site_id, arrival,
           lag(site_id)   OVER w AS from_site,
           lag(departure) OVER w AS departed
    FROM completed_visits
    WINDOW w AS (PARTITION BY vehicle_id, (arrival::date) ORDER BY arrival)
) v
WHERE from_site IS NOT NULL AND arrival >= departed;

-- Typical travel time between consecutive stops, by hour of day (of the departure).
CREATE VIEW travel_time_by_hour AS
SELECT hour_of_day,
       count(*)                                                   AS legs,
       avg(travel_min)                                            AS mean_min,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY travel_min)    AS p50_min,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY travel_min)    AS p90_min
FROM travel_legs
GROUP BY hour_of_day;
