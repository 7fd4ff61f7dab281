-- Move the rows of the session's fixes_stage into fixes in ONE round trip (the store calls
-- this after COPYing a batch into fixes_stage).  A plain INSERT is tried first: it is ~40%
-- cheaper than ON CONFLICT's speculative insertion; if any row is already stored (a
-- redelivery), the block's implicit savepoint undoes it and ON CONFLICT DO NOTHING runs.
-- Returns the number of rows inserted.  vehicle_id comes from units at insert time.
CREATE FUNCTION fleetwatch_insert_staged_fixes() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    BEGIN
        INSERT INTO fixes (unit_id, vehicle_id, t, recv_at, lat, lon, speed_kmh, course,
                           quality, sats, hdop, alt_m, talker)
        SELECT s.unit_id, u.vehicle_id, s.t, s.recv_at, s.lat, s.lon,
               NULLIF(s.speed_kmh, 'NaN'), NULLIF(s.course, 'NaN'),
               NULLIF(s.quality, -1), NULLIF(s.sats, -1),
               NULLIF(s.hdop, 'NaN'), NULLIF(s.alt_m, 'NaN'), s.talker
        FROM pg_temp.fixes_stage s LEFT JOIN units u ON u.unit_id = s.unit_id;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
    EXCEPTION WHEN unique_violation THEN
        NULL;  -- fall through to the idempotent form
    END;
    INSERT INTO fixes (unit_id, vehicle_id, t, recv_at, lat, lon, speed_kmh, course,
                       quality, sats, hdop, alt_m, talker)
    SELECT s.unit_id, u.vehicle_id, s.t, s.recv_at, s.lat, s.lon,
           NULLIF(s.speed_kmh, 'NaN'), NULLIF(s.course, 'NaN'),
           NULLIF(s.quality, -1), NULLIF(s.sats, -1),
           NULLIF(s.hdop, 'NaN'), NULLIF(s.alt_m, 'NaN'), s.talker
    FROM pg_temp.fixes_stage s LEFT JOIN units u ON u.unit_id = s.unit_id
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
