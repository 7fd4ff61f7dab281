// The console's picture of the world, folded from the server's messages
// (docs/console-protocol.md).  No DOM, no map, no socket: apply a message, get back what
// changed, so the views redraw only that.  Kept pure so its rules (seq order, newest alert
// version wins, a stop's state is its site's colour) live in one place.

export const SEVERITY_RANK = { info: 0, warning: 1, major: 2, critical: 3 };
export const ACTIVE_ALERT = new Set(["open", "acknowledged"]);
export const FINAL_STOP = new Set(["visited", "missed", "cancelled"]);

const ms = (iso) => (iso ? Date.parse(iso) : NaN);

/** Alerts in the order a dispatcher should look at them: the most severe first, then the
 *  oldest (it has waited longest), then by id so the order never flickers. */
export function byUrgency(a, b) {
  const s = (SEVERITY_RANK[b.severity] ?? -1) - (SEVERITY_RANK[a.severity] ?? -1);
  if (s !== 0) return s;
  const age = ms(a.opened_at) - ms(b.opened_at);
  if (age !== 0 && !Number.isNaN(age)) return age;
  return a.alert_id < b.alert_id ? -1 : a.alert_id > b.alert_id ? 1 : 0;
}

/** The site an alert is about, from its facts or its id ("stop/<date>/<site>"). */
export function alertSite(alert) {
  const f = alert.facts || {};
  if (f.site_id) return f.site_id;
  const parts = String(alert.alert_id || "").split("/");
  return parts[0] === "stop" && parts.length >= 3 ? parts.slice(2).join("/") : null;
}

/** The vehicle an alert is about, from its facts or its id ("vehicle/<date>/<vehicle>/..."). */
export function alertVehicle(alert) {
  const f = alert.facts || {};
  if (f.vehicle_id) return f.vehicle_id;
  const parts = String(alert.alert_id || "").split("/");
  return parts[0] === "vehicle" && parts.length >= 3 ? parts[2] : null;
}

export class ConsoleState {
  constructor() {
    this.lastSeq = null; // the newest seq applied; reconnect resumes with after=lastSeq
    this.hello = null;
    this.clear();
  }

  clear() {
    this.vehicles = new Map(); // vehicle_id -> vehicle record
    this.sites = new Map(); // site_id -> site record (state = today's stop state)
    this.stops = new Map(); // stop_id -> stop record
    this.alerts = new Map(); // alert_id -> newest alert version
    this.routes = new Map(); // route_id -> route
    this.routeOfVehicle = new Map(); // vehicle_id -> route_id
    this.depots = [];
    this.dataDelayed = false;
    this.resyncing = false;
  }

  /** Apply one server message; returns a change description or null when it changed
   *  nothing (an old seq, an older alert version, a message for someone else). */
  apply(msg) {
    switch (msg.type) {
      case "hello":
        this.hello = msg;
        return { kind: "hello" };
      case "snapshot":
        return this.applySnapshot(msg);
      case "resync":
        this.resyncing = true;
        return { kind: "resync", reason: msg.reason };
      default:
        break;
    }
    if (typeof msg.seq === "number") {
      // A console's frames come with strictly increasing seq; anything not newer than what we
      // hold was already applied (a replay overlapping what we saw before a reconnect).
      if (this.lastSeq !== null && msg.seq <= this.lastSeq) return null;
      this.lastSeq = msg.seq;
    }
    switch (msg.type) {
      case "positions":
        return { kind: "positions", vehicles: msg.vehicles.map((v) => this.putVehicle(v)) };
      case "vehicle":
        return { kind: "vehicles", vehicles: [this.putVehicle(msg.vehicle)] };
      case "alert":
        return this.putAlert(msg.alert) ? { kind: "alert", alert: msg.alert } : null;
      case "stop":
        return { kind: "stop", stop: this.putStop(msg.stop) };
      case "route":
        this.putRoute(msg.route);
        return { kind: "route", route: msg.route };
      case "status":
        this.dataDelayed = Boolean(msg.data_delayed);
        return { kind: "status" };
      default:
        return null; // reply, track and unknown types are not state
    }
  }

  applySnapshot(s) {
    this.clear();
    for (const v of s.vehicles || []) this.vehicles.set(v.vehicle_id, v);
    for (const x of s.sites || []) this.sites.set(x.site_id, x);
    for (const st of s.stops || []) this.stops.set(st.stop_id, st);
    for (const a of s.alerts || []) this.alerts.set(a.alert_id, a);
    for (const r of s.routes || []) this.putRoute(r);
    this.depots = s.depots || [];
    this.dataDelayed = Boolean(s.data_delayed);
    this.lastSeq = s.seq;
    return { kind: "snapshot" };
  }

  putVehicle(v) {
    const old = this.vehicles.get(v.vehicle_id);
    const merged = old ? Object.assign(old, v) : v;
    this.vehicles.set(v.vehicle_id, merged);
    return merged;
  }

  /** Keep the newest version per alert; true when *a* is newer than what we hold. */
  putAlert(a) {
    const old = this.alerts.get(a.alert_id);
    if (old && old.version >= a.version) return false;
    this.alerts.set(a.alert_id, a);
    return true;
  }

  putStop(st) {
    this.stops.set(st.stop_id, st);
    const site = this.sites.get(st.site_id);
    if (site) site.state = st.state;
    return st;
  }

  putRoute(r) {
    const old = this.routes.get(r.route_id);
    if (old && old.vehicle_id !== r.vehicle_id && this.routeOfVehicle.get(old.vehicle_id) === r.route_id) {
      this.routeOfVehicle.delete(old.vehicle_id);
    }
    this.routes.set(r.route_id, r);
    this.routeOfVehicle.set(r.vehicle_id, r.route_id);
  }

  routeFor(vehicleId) {
    const rid = this.routeOfVehicle.get(vehicleId);
    return rid === undefined ? null : this.routes.get(rid) || null;
  }

  /** Alerts a dispatcher still has to deal with, most urgent first. */
  activeAlerts() {
    return [...this.alerts.values()].filter((a) => ACTIVE_ALERT.has(a.status)).sort(byUrgency);
  }

  /** Resolved and retracted alerts, newest change first. */
  closedAlerts() {
    return [...this.alerts.values()]
      .filter((a) => !ACTIVE_ALERT.has(a.status))
      .sort((a, b) => ms(b.at) - ms(a.at));
  }
}
