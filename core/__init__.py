"""Value types every stage shares (the ground floor of the flow).

Fix batches, dead letters and the time helpers are imported by ingest, store, the engine and
the web shell alike; they live here so that no stage depends on another stage only to name a
value.  Nothing in ``core`` does I/O or imports another package of ours.
"""
