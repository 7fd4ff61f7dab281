-- The console's "last hour's track" (store/tracks.py, ws/track.py) reads one vehicle's detected
-- stops and visits over a time range from the outbox.  record_versions has no vehicle column
-- (the vehicle is in the body), so without this index that read scans every stop and visit
-- version ever published.  Partial (stops and visits only) and on the same expression the query
-- writes, so the planner can use it: (body->>'vehicle_id') = $1 AND at BETWEEN $2 AND $3.
-- The fixes half of the track needs nothing new: fixes_vehicle_t (vehicle_id, t) from 0001,
-- and the primary key (unit_id, t) for units the registry does not map.
CREATE INDEX record_versions_detection_vehicle_at
    ON record_versions ((body->>'vehicle_id'), at)
    WHERE kind IN ('stop', 'visit');
