"""fleetwatch's wiring: configuration, the CLI and the async service that joins the stages.

Nothing in the stage packages (ingest, geofence, schedule, alerts, ws, store) imports this
package: it imports them.
"""
