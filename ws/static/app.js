// The dispatcher console: the page dispatchers work in all day (docs/console-page.md).
//
// One websocket (js/connection.js) feeds one state (js/state.js); the views -- the map
// (js/mapview.js), the alert feed and the route panel -- redraw what a message changed, at
// most once per animation frame.  Commands go out with a client id and come back as one
// `reply` (docs/console-protocol.md); the page changes what it shows from the server's
// answer, never optimistically, so what a dispatcher sees is what the server holds.

import { ConsoleState, ACTIVE_ALERT, FINAL_STOP, alertSite, alertVehicle } from "./js/state.js";
import { Connection } from "./js/connection.js";
import { MapView, STOP_COLOURS, VEHICLE_COLOURS, rgb } from "./js/mapview.js";
import * as i18n from "./js/i18n.js";

const { t } = i18n;
const STATIC = "/static";
const TOKEN_KEY = "fleetwatch.token";
const ACTING_ROLES = new Set(["dispatcher", "head_dispatcher"]);
const MAX_COMMENT = 2000;
const MAX_REASON = 500;
const TRACK_MINUTES = 60;
const TRACK_POINTS = 500;
const SCOPE_KEY = "fleetwatch.scope";
const SCOPES = ["all", "mine", "region"];
/** "map view": the region is re-sent this long after the map stops moving (a drag or a
 *  zoom fires many moves; each subscribe costs the server a fresh snapshot). */
const REGION_DEBOUNCE_MS = 400;
const METRICS_KEEP = 20;

const $ = (id) => document.getElementById(id);

/** A DOM element; strings become text nodes (never HTML: comments are user text). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

class App {
  constructor(config) {
    this.config = config;
    this.state = new ConsoleState();
    this.conn = null;
    this.role = null;
    this.user = null;
    this.selected = null; // vehicle id of the route panel
    this.pending = new Map(); // command id -> resolve(reply)
    this.trackFor = null; // vehicle id whose track is on the map
    this.cards = new Map(); // alert id -> <li>
    this.dirty = { alerts: false, route: false, routeHead: false };
    this.frameRequested = false;
    this.clockOffsetMs = 0; // server_time - Date.now(), from hello
    this.langChosen = false;
    this.metrics = { positions: [], snapshot: null, messages: 0 };
    this.fmtCache = new Map();
    this.knownIds = new Set();
    this.scope = loadScope(); // "all" | "mine" | "region" (the map's bounds), kept across reloads
    this.sentRegion = null; // the region last subscribed to on this connection
    this.regionTimer = null;
    this.fresh = new Set(); // alert ids whose card should flash when next drawn
  }

  // -- start ----------------------------------------------------------------------------------
  async start() {
    await i18n.loadDictionaries(STATIC);
    this.langChosen = localStorageHas("fleetwatch.lang");
    this.setLang(i18n.initialLang(), { remember: false });
    this.mapView = new MapView($("map"), {
      tileUrl: this.config.tile_url,
      tileAttribution: this.config.tile_attribution,
      onVehicleClick: (id) => this.select(id, { pan: false }),
      siteInfo: (q) => this.siteTooltip(q),
      vehicleInfo: (id) => this.vehicleTooltip(id),
      onMoveEnd: () => this.onMapMoved(),
    });
    this.bindStaticUi();
    this.setConnState("idle", {});
    setInterval(() => this.refreshAges(), 30000);
    const token = takeToken();
    if (token) this.connect(token);
    else this.showLogin(null);
  }

  bindStaticUi() {
    for (const b of document.querySelectorAll("[data-lang]")) {
      b.addEventListener("click", () => {
        this.langChosen = true;
        this.setLang(b.dataset.lang, { remember: true });
      });
    }
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("login-token").value.trim();
      if (!token) return;
      saveToken(token);
      $("login").hidden = true;
      this.connect(token);
    });
    $("show-closed").addEventListener("change", () => this.markDirty("alerts"));
    $("vehicle-search").addEventListener("change", (ev) => {
      const id = ev.target.value.trim();
      if (this.state.vehicles.has(id)) this.select(id, { pan: true });
    });
    $("track-btn").addEventListener("click", () => this.toggleTrack());
    $("scope").value = this.scope;
    $("scope").addEventListener("change", (ev) => this.setScope(ev.target.value));
    $("dlg-close").addEventListener("click", () => $("dlg").close());
  }

  setLang(lang, { remember }) {
    i18n.setLang(lang, { remember });
    i18n.translateStatic();
    for (const b of document.querySelectorAll("[data-lang]")) {
      b.classList.toggle("active", b.dataset.lang === i18n.currentLang());
      b.setAttribute("aria-pressed", String(b.dataset.lang === i18n.currentLang()));
    }
    this.fmtCache.clear();
    this.renderLegend();
    this.renderConnState();
    this.renderUser();
    for (const el of this.cards.values()) delete el.dataset.version; // refill every card
    this.dirty.alerts = this.dirty.route = true;
    if (this.mapView) this.render();
  }

  // -- connection -----------------------------------------------------------------------------
  connect(token) {
    if (this.conn) this.conn.close();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = this.config.ws_url || `${scheme}://${location.host}${this.config.ws_path}`;
    // a replaced connection's late events (its close) must not touch the page
    const conn = new Connection({
      url,
      token,
      lastSeq: () => this.state.lastSeq,
      onMessage: (msg, ev) => this.conn === conn && this.onMessage(msg, ev),
      onState: (s, info) => this.conn === conn && this.setConnState(s, info),
    });
    this.conn = conn;
    conn.open();
  }

  setConnState(s, info) {
    this.connState = s;
    this.connInfo = info;
    if (s !== "open") this.failPending(s === "connecting" ? null : "lost");
    if (s === "unauthorized" || s === "forbidden") {
      forgetToken();
      this.showLogin(s);
    }
    $("banner-offline").hidden = s !== "reconnecting";
    this.renderConnState();
  }

  renderConnState() {
    const el = $("conn");
    if (!el) return;
    const s = this.connState || "idle";
    el.dataset.state = s;
    el.className = `conn conn-${s}`;
    const secs = Math.round(((this.connInfo && this.connInfo.delayMs) || 0) / 1000);
    $("conn-text").textContent = t(`conn.${s}`, { s: Math.max(secs, 1) });
  }

  showLogin(why) {
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !why;
    err.textContent = why === "forbidden" ? t("login.forbidden") : why ? t("login.refused") : "";
    $("login-token").focus();
  }

  // -- messages -------------------------------------------------------------------------------
  onMessage(msg, ev) {
    this.metrics.messages += 1;
    if (msg.type === "reply") return this.onReply(msg);
    if (msg.type === "track") return this.onTrack(msg);
    if (msg.type === "error") return this.toast(t("error.other", { code: msg.code, message: msg.message }), "error");
    const change = this.state.apply(msg);
    if (!change) return;
    switch (change.kind) {
      case "hello":
        this.onHello(msg);
        break;
      case "snapshot":
        this.onSnapshot(ev);
        break;
      case "resync":
        $("banner-resync").hidden = false;
        break;
      case "positions":
      case "vehicles":
        this.mapView.updateVehicles(change.vehicles);
        if (this.selected && change.vehicles.some((v) => v.vehicle_id === this.selected)) {
          this.markDirty("routeHead");
        }
        if (change.kind === "positions") this.measurePositions(ev, change.vehicles.length);
        if (change.vehicles.some((v) => !this.knownIds.has(v.vehicle_id))) this.renderVehicleList();
        break;
      case "alert":
        // news, not a dispatcher's own answer: flash the card once
        if (["raised", "worsened", "reopened", "escalated"].includes(change.alert.change)) {
          this.fresh.add(change.alert.alert_id);
        }
        this.markDirty("alerts");
        break;
      case "stop":
        this.mapView.setSiteState(change.stop.site_id, change.stop.state);
        if (this.selected && this.routeTouches(change.stop)) this.markDirty("route");
        this.markDirty("alerts"); // site names/states in cards
        break;
      case "route":
        if (this.selected) this.markDirty("route");
        break;
      case "status":
        $("banner-delayed").hidden = !this.state.dataDelayed;
        break;
      default:
        break;
    }
  }

  /** The "Show:" choice: everything, this dispatcher's vehicles, or what the map shows.
   *  Remembered across reloads (localStorage). */
  setScope(scope) {
    this.scope = SCOPES.includes(scope) ? scope : "all";
    saveScope(this.scope);
    clearTimeout(this.regionTimer);
    this.subscribe();
  }

  /** Say the scope to the server; it answers with a fresh snapshot under it.  A new
   *  connection starts at "all", so a narrower scope is said again after every hello. */
  async subscribe() {
    let scope = this.scope;
    if (scope === "region") {
      scope = { region: this.mapView.regionBounds() };
      this.sentRegion = scope.region.join(",");
    } else {
      this.sentRegion = null;
    }
    const reply = await this.command({ type: "subscribe", scope });
    if (!reply.ok) this.toast(this.errorText(reply.error), "error");
  }

  /** The map moved: under "map view", the new bounds become the region, once the map has
   *  been still for REGION_DEBOUNCE_MS. */
  onMapMoved() {
    if (this.scope !== "region") return;
    clearTimeout(this.regionTimer);
    this.regionTimer = setTimeout(() => {
      if (this.scope !== "region" || !this.conn || !this.conn.isOpen) return;
      if (this.mapView.regionBounds().join(",") === this.sentRegion) return;
      this.subscribe();
    }, REGION_DEBOUNCE_MS);
  }

  onHello(hello) {
    this.sentRegion = null;
    if (this.scope && this.scope !== "all") queueMicrotask(() => this.subscribe());
    this.role = hello.role;
    this.user = hello.user;
    this.clockOffsetMs = Date.parse(hello.server_time) - Date.now() || 0;
    document.body.className = `role-${this.role}`;
    if (!this.langChosen && hello.lang_default) this.setLang(hello.lang_default, { remember: false });
    if (hello.tile_url && !this.config.tile_url) this.mapView.setTiles(hello.tile_url, hello.tile_attribution);
    this.renderUser();
    this.markDirty("alerts");
    this.markDirty("route");
  }

  onSnapshot(ev) {
    const t0 = ev ? ev.timeStamp : performance.now();
    $("banner-resync").hidden = true;
    $("banner-delayed").hidden = !this.state.dataDelayed;
    this.mapView.setSites([...this.state.sites.values()], this.state.depots);
    this.mapView.setVehicles([...this.state.vehicles.values()]);
    if (this.selected) this.mapView.select(this.selected);
    this.renderVehicleList();
    this.dirty.alerts = this.dirty.route = true;
    this.render();
    const applied = performance.now();
    requestAnimationFrame(() => {
      this.metrics.snapshot = {
        vehicles: this.state.vehicles.size,
        sites: this.state.sites.size,
        apply_ms: applied - t0,
        frame_ms: performance.now() - t0,
      };
    });
  }

  /** Time from the positions frame's arrival to the end of the animation frame that drew it
   *  (Leaflet's canvas redraw runs in a requestAnimationFrame queued before ours). */
  measurePositions(ev, n) {
    const t0 = ev ? ev.timeStamp : performance.now();
    const applied = performance.now();
    requestAnimationFrame(() => {
      const drawn = performance.now();
      const m = { vehicles: n, apply_ms: applied - t0, frame_ms: drawn - t0 };
      this.metrics.positions.push(m);
      if (this.metrics.positions.length > METRICS_KEEP) this.metrics.positions.shift();
    });
  }

  // -- commands -------------------------------------------------------------------------------
  /** Send a command; resolves with the server's reply (or track) message, or a local error
   *  ({ok: false, error: {code: "offline" | "lost"}}) when it could not be answered. */
  command(body) {
    if (!this.conn || !this.conn.isOpen) {
      return Promise.resolve({ ok: false, error: { code: "offline", message: "" } });
    }
    const id = this.conn.commandId();
    const p = new Promise((resolve) => this.pending.set(id, resolve));
    this.conn.send({ ...body, id });
    return p;
  }

  onReply(msg) {
    if (msg.ok && msg.result && Array.isArray(msg.result.alerts)) {
      // an accepted command's result holds the new alert versions in full: show them now (the
      // same versions also come as broadcast `alert` messages; the newest version wins)
      let changed = false;
      for (const a of msg.result.alerts) if (a && a.alert_id && this.state.putAlert(a)) changed = true;
      if (changed) this.markDirty("alerts");
    }
    const resolve = this.pending.get(msg.id);
    if (resolve) {
      this.pending.delete(msg.id);
      resolve(msg);
    }
  }

  failPending(code) {
    if (!code) return;
    for (const resolve of this.pending.values()) resolve({ ok: false, error: { code, message: "" } });
    this.pending.clear();
  }

  errorText(err) {
    const code = (err && err.code) || "other";
    const message = (err && err.message) || "";
    if (code === "lost") return t("reply.lost");
    if (code === "offline") return t("banner.offline");
    if (["unknown_id", "stale_version", "already_final", "not_allowed", "invalid"].includes(code)) {
      return t(`error.${code}`, { message });
    }
    return t("error.other", { code, message });
  }

  get canAct() {
    return ACTING_ROLES.has(this.role);
  }

  // -- rendering ------------------------------------------------------------------------------
  markDirty(what) {
    this.dirty[what] = true;
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.render();
    });
  }

  render() {
    if (this.dirty.alerts) {
      this.dirty.alerts = false;
      this.renderAlerts();
    }
    if (this.dirty.route) {
      this.dirty.route = this.dirty.routeHead = false;
      this.renderRoute();
    } else if (this.dirty.routeHead) {
      this.dirty.routeHead = false;
      this.renderRouteHead();
    }
  }

  renderUser() {
    const el = $("user");
    if (!el) return;
    el.textContent = this.user ? `${this.user} · ${t(`role.${this.role}`)}` : "";
  }

  renderLegend() {
    const el = $("legend");
    if (!el) return;
    const swatch = (c, round) => h("span", { class: round ? "sw sw-round" : "sw", style: `background:${c}` });
    el.replaceChildren(
      h("b", {}, t("legend.title")),
      ...Object.entries(STOP_COLOURS).map(([k, c]) => h("div", {}, swatch(c, false), t(`stop.${k}`))),
      ...Object.entries(VEHICLE_COLOURS).map(([k, c]) => h("div", {}, swatch(c, true), t(`vehicle.${k}`))),
      h("div", {}, h("span", { class: "sw sw-depot" }), t("legend.depot")),
    );
  }

  renderVehicleList() {
    this.knownIds = new Set(this.state.vehicles.keys());
    const ids = [...this.knownIds].sort(naturalCompare);
    $("vehicle-ids").replaceChildren(...ids.map((id) => h("option", { value: id })));
  }

  // alerts ---------------------------------------------------------------------------------
  renderAlerts() {
    const active = this.state.activeAlerts();
    const list = $("show-closed").checked ? active.concat(this.state.closedAlerts()) : active;
    const ol = $("alerts");
    const keep = new Set();
    list.forEach((a, i) => {
      let el = this.cards.get(a.alert_id);
      if (!el) {
        el = this.makeCard(a.alert_id);
        this.cards.set(a.alert_id, el);
      }
      if (el.dataset.version !== String(a.version) || el.dataset.role !== String(this.role)) {
        this.fillCard(el, a);
      }
      keep.add(a.alert_id);
      if (ol.children[i] !== el) ol.insertBefore(el, ol.children[i] || null);
    });
    for (const [id, el] of this.cards) {
      if (!keep.has(id)) {
        el.remove();
        this.cards.delete(id);
      }
    }
    $("alerts-count").textContent = t("alerts.count", { n: active.length });
    // the tab's title counts alerts nobody has acknowledged yet: visible from another tab
    const unacked = active.filter((a) => a.status === "open").length;
    document.title = unacked ? `(${unacked}) ${t("title")}` : t("title");
    $("alerts-empty").hidden = list.length > 0;
    this.refreshAges();
  }

  makeCard(alertId) {
    const el = h("li", { class: "alert", dataset: { alertId } });
    const parts = {
      head: h("div", { class: "a-head" }),
      summary: h("div", { class: "a-summary" }),
      meta: h("div", { class: "a-meta" }),
      comments: h("ul", { class: "a-comments" }),
      actions: h("div", { class: "a-actions" }),
      form: this.makeCommentForm(alertId),
    };
    el.parts = parts;
    el.append(...Object.values(parts));
    el.addEventListener("click", (ev) => {
      if (ev.target.closest("button, form, textarea")) return;
      const a = this.state.alerts.get(alertId);
      if (!a) return;
      const v = alertVehicle(a);
      const site = alertSite(a);
      if (v && this.state.vehicles.has(v)) this.select(v, { pan: !site });
      if (site) this.mapView.panToSite(site);
    });
    return el;
  }

  makeCommentForm(alertId) {
    const text = h("textarea", { class: "a-comment-text", rows: 3, maxlength: MAX_COMMENT });
    const err = h("p", { class: "error", hidden: true });
    const send = h("button", { type: "submit", class: "act act-send" });
    const cancel = h("button", { type: "button", class: "act-cancel" });
    const form = h("form", { class: "a-comment-form", hidden: true }, text, err, h("div", {}, send, cancel));
    form.refs = { text, err, send, cancel };
    cancel.addEventListener("click", () => {
      form.hidden = true;
    });
    text.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = text.value.trim();
      if (!body) return;
      send.disabled = true;
      err.hidden = true;
      const reply = await this.command({ type: "comment", alert_id: alertId, text: body.slice(0, MAX_COMMENT) });
      send.disabled = false;
      if (reply.ok) {
        text.value = "";
        form.hidden = true;
      } else {
        err.textContent = this.errorText(reply.error);
        err.hidden = false;
      }
    });
    return form;
  }

  fillCard(el, a) {
    const p = el.parts;
    if (this.fresh.delete(a.alert_id)) {
      el.classList.remove("fresh");
      void el.offsetWidth; // restart the animation
      el.classList.add("fresh");
    }
    el.dataset.version = String(a.version);
    el.dataset.role = String(this.role);
    el.dataset.status = a.status;
    const fresh = el.classList.contains("fresh") ? " fresh" : "";
    el.className = `alert alert-${a.severity} status-${a.status}${this.selected && alertVehicle(a) === this.selected ? " sel" : ""}${fresh}`;
    const site = alertSite(a);
    const siteRec = site ? this.state.sites.get(site) : null;
    const vehicle = alertVehicle(a);
    const subject = [siteRec ? siteRec.name || site : site, vehicle].filter(Boolean).join(" · ");
    p.head.replaceChildren(
      h("span", { class: `sev sev-${a.severity}` }, t(`severity.${a.severity}`)),
      h("span", { class: "a-kind" }, t(`kind.${a.kind}`)),
      h("span", { class: "a-subject" }, subject),
      h("span", { class: "spacer" }),
      h("span", { class: "a-age", dataset: { opened: a.opened_at || "" } }),
    );
    p.summary.textContent = a.title || a.summary || "";
    const meta = [h("span", { class: `a-status st-${a.status}` }, t(`status.${a.status}`))];
    if (a.assignee) meta.push(h("span", {}, t("alerts.assignee", { who: a.assignee })));
    if (a.acknowledged_by) {
      meta.push(h("span", { class: "a-acked" }, t("alerts.acked_by", { who: a.acknowledged_by, t: this.time(a.acknowledged_at) })));
    }
    if (a.escalation_level > 0) meta.push(h("span", { class: "a-esc" }, t("alerts.escalation", { n: a.escalation_level })));
    if (a.detected_late) meta.push(h("span", { class: "a-late" }, t("alerts.late_correction")));
    meta.push(h("span", { class: "muted" }, t("alerts.opened", { t: this.time(a.opened_at) })));
    p.meta.replaceChildren(...meta);
    p.comments.replaceChildren(
      ...(a.comments || []).map((c) =>
        h("li", { class: "a-comment" }, h("b", {}, c.by), " ", h("time", {}, this.time(c.at)), " ", h("span", { class: "a-comment-body" }, c.text)),
      ),
    );
    const actions = [];
    if (this.canAct && ACTIVE_ALERT.has(a.status)) {
      if (a.status === "open") {
        actions.push(
          h("button", { type: "button", class: "act act-ack", onclick: (ev) => this.acknowledge(a.alert_id, ev.currentTarget) }, t("alerts.ack")),
        );
      }
      actions.push(
        h("button", { type: "button", class: "act act-comment", onclick: () => this.openCommentForm(a.alert_id) }, t("alerts.comment")),
      );
    }
    replaceChildrenIfChanged(p.actions, actions); // a new version (a comment, an escalation) keeps the buttons
    const f = p.form;
    f.refs.text.placeholder = t("alerts.comment_placeholder");
    f.refs.send.textContent = t("alerts.send");
    f.refs.cancel.textContent = t("alerts.cancel");
    if (!this.canAct || !ACTIVE_ALERT.has(a.status)) f.hidden = true;
  }

  openCommentForm(alertId) {
    const el = this.cards.get(alertId);
    if (!el) return;
    el.parts.form.hidden = false;
    el.parts.form.refs.text.focus();
  }

  async acknowledge(alertId, button) {
    const a = this.state.alerts.get(alertId);
    if (!a) return;
    if (button) {
      button.disabled = true;
      button.textContent = t("reply.pending");
    }
    const reply = await this.command({ type: "acknowledge", alert_id: alertId, version: a.version });
    if (!reply.ok) {
      this.toast(this.errorText(reply.error), "error");
      const el = this.cards.get(alertId);
      if (el) delete el.dataset.version; // redraw the button from the current version
      this.markDirty("alerts");
    }
  }

  refreshAges() {
    const now = Date.now() + this.clockOffsetMs;
    for (const el of document.querySelectorAll(".a-age")) {
      const opened = Date.parse(el.dataset.opened);
      // no age when the alert's time is far from the server's (a replayed day): nonsense
      const ms = now - opened;
      el.textContent = Number.isNaN(opened) || ms > 86400000 ? "" : t("alerts.age", { age: this.age(ms) });
    }
  }

  age(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return t("age.s", { n: s });
    const m = Math.floor(s / 60);
    if (m < 60) return t("age.m", { n: m });
    return t("age.h", { h: Math.floor(m / 60), m: m % 60 });
  }

  // route panel ----------------------------------------------------------------------------
  /** Show *vehicleId*'s route.  Choosing the vehicle already shown redraws nothing: the search
   *  box says `change` again when it loses focus, i.e. on the press of the very button the
   *  dispatcher is clicking, and a redraw before the release would swallow that click. */
  select(vehicleId, { pan }) {
    if (pan) this.mapView.panToVehicle(vehicleId);
    if (vehicleId === this.selected) return;
    if (this.trackFor && this.trackFor !== vehicleId) {
      this.mapView.hideTrack();
      this.trackFor = null;
    }
    this.selected = vehicleId;
    this.mapView.select(vehicleId);
    $("vehicle-search").value = vehicleId || "";
    $("track-btn").disabled = !vehicleId;
    this.markSelectedCards();
    this.markDirty("route");
  }

  /** The selected vehicle's cards stand out; only a class changes, so no card's buttons are
   *  drawn anew (a click on one would be lost). */
  markSelectedCards() {
    for (const [id, el] of this.cards) {
      const a = this.state.alerts.get(id);
      el.classList.toggle("sel", Boolean(this.selected && a && alertVehicle(a) === this.selected));
    }
  }

  routeTouches(stop) {
    if (stop.vehicle_id === this.selected || stop.visited_by === this.selected) return true;
    const r = this.state.routeFor(this.selected);
    return Boolean(r && r.stops.some((s) => s.stop_id === stop.stop_id));
  }

  renderRoute() {
    const body = $("route-body");
    this.renderTrackButton();
    if (!this.selected) {
      body.replaceChildren(h("p", { class: "empty" }, t("route.none_selected")));
      return;
    }
    const head = $("route-head") || h("div", { id: "route-head", class: "route-head" });
    const route = this.state.routeFor(this.selected);
    const content = route
      ? this.routeTable(route, body.querySelector("table.route"))
      : h("p", { class: "empty" }, t("route.no_route", { v: this.selected }));
    if (body.children.length !== 2 || body.children[0] !== head || body.children[1] !== content) {
      body.replaceChildren(head, content);
    }
    this.renderRouteHead();
  }

  /** The route's table.  The drawn table is kept, and so is each of its rows that would be
   *  drawn the same: a `stop`/`route` message (an ETA moving) may come between the press and
   *  the release of a dispatcher's click on a row's button, and a button drawn anew in between
   *  is not the one pressed, so the browser clicks neither and the click is lost. */
  routeTable(route, drawn) {
    const cols = ["n", "site", "window", "planned", "eta", "actual", "state"].map((c) => h("th", {}, t(`route.col.${c}`)));
    if (this.canAct) cols.push(h("th", {}));
    const thead = h("thead", {}, h("tr", {}, cols));
    const rows = route.stops.map((rs, i) => this.routeRow(route, rs, i));
    if (!drawn || drawn.dataset.routeId !== route.route_id) {
      return h("table", { class: "route", dataset: { routeId: route.route_id } }, thead, h("tbody", {}, rows));
    }
    if (drawn.tHead.outerHTML !== thead.outerHTML) drawn.tHead.replaceWith(thead);
    const tbody = drawn.tBodies[0];
    const old = new Map([...tbody.rows].map((tr) => [tr.dataset.stopId, tr]));
    rows.forEach((tr, i) => {
      const was = old.get(tr.dataset.stopId);
      const keep = was && was.outerHTML === tr.outerHTML ? was : tr;
      if (tbody.rows[i] !== keep) tbody.insertBefore(keep, tbody.rows[i] || null);
    });
    while (tbody.rows.length > rows.length) tbody.lastElementChild.remove();
    return drawn;
  }

  routeRow(route, rs, i) {
    const st = this.state.stops.get(rs.stop_id) || {};
    const state = st.state || rs.state || "pending";
    const site = this.state.sites.get(rs.site_id);
    const eta = st.eta !== undefined ? st.eta : rs.eta;
    const windowEnd = rs.window_end || st.window_end;
    const lateEta = eta && windowEnd && Date.parse(eta) > Date.parse(windowEnd);
    const cells = [
      h("td", { class: "num" }, String(i + 1)),
      h("td", { class: "site", title: rs.site_id }, site ? site.name || rs.site_id : rs.site_id || ""),
      h("td", { class: "time" }, `${this.time(rs.window_start || st.window_start)}–${this.time(windowEnd)}`),
      h("td", { class: "time" }, this.time(rs.planned_arrival || st.planned_arrival)),
      h("td", { class: `time${lateEta ? " late" : ""}` }, FINAL_STOP.has(state) ? "" : this.time(eta)),
      h("td", { class: "time" }, this.time(rs.arrival || st.arrival)),
      h("td", {}, h("span", { class: `badge st-${state}`, style: `--c:${STOP_COLOURS[state] || STOP_COLOURS.none}` }, t(`stop.${state}`))),
    ];
    if (this.canAct) {
      const remaining = this.remainingStops(route);
      const k = remaining.indexOf(rs.stop_id);
      const acts = FINAL_STOP.has(state)
        ? []
        : [
            h("button", { type: "button", class: "act act-up", title: t("route.up"), disabled: k <= 0, onclick: () => this.move(route.route_id, rs.stop_id, -1) }, "↑"),
            h("button", { type: "button", class: "act act-down", title: t("route.down"), disabled: k < 0 || k >= remaining.length - 1, onclick: () => this.move(route.route_id, rs.stop_id, 1) }, "↓"),
            h("button", { type: "button", class: "act act-reassign", onclick: () => this.reassignDialog(rs.stop_id, route.route_id) }, t("route.reassign")),
            h("button", { type: "button", class: "act act-cancel-stop", onclick: () => this.cancelDialog(rs.stop_id) }, t("route.cancel")),
          ];
      cells.push(h("td", { class: "acts" }, acts));
    }
    return h("tr", { class: `st-${state}`, dataset: { stopId: rs.stop_id } }, cells);
  }

  /** The route's stops still to serve, in the route's order: what `reorder` rearranges. */
  remainingStops(route) {
    return route.stops
      .filter((rs) => !FINAL_STOP.has((this.state.stops.get(rs.stop_id) || {}).state || rs.state))
      .map((rs) => rs.stop_id);
  }

  /** Move a stop one place earlier (-1) or later (+1) among the remaining ones, as the route
   *  stands now (its row may have been drawn before the route's last change). */
  async move(routeId, stopId, delta) {
    const route = this.state.routes.get(routeId);
    if (!route) return;
    const order = this.remainingStops(route);
    const i = order.indexOf(stopId);
    const j = i + delta;
    if (i < 0 || j < 0 || j >= order.length) return;
    [order[i], order[j]] = [order[j], order[i]];
    const reply = await this.command({ type: "reorder", route_id: route.route_id, stop_ids: order });
    if (!reply.ok) this.toast(this.errorText(reply.error), "error");
  }

  renderRouteHead() {
    const head = $("route-head");
    if (!head || !this.selected) return;
    const v = this.state.vehicles.get(this.selected);
    const route = this.state.routeFor(this.selected);
    const parts = [h("b", {}, t("route.vehicle", { v: this.selected }))];
    if (v) {
      parts.push(h("span", { class: `vstate vs-${v.state}` }, t(`vehicle.${v.state}`)));
      if (typeof v.speed_kmh === "number") parts.push(h("span", {}, t("route.speed", { v: Math.round(v.speed_kmh) })));
      if (v.t) parts.push(h("span", { class: "muted" }, t("route.last_fix", { t: this.time(v.t, true) })));
    }
    if (route && typeof route.behind_s === "number") {
      const m = Math.round(route.behind_s / 60);
      parts.push(h("span", { class: m > 0 ? "behind" : "ontime" }, m > 0 ? t("route.behind", { m }) : t("route.ahead")));
    }
    head.replaceChildren(...parts);
  }

  reassignDialog(stopId, routeId) {
    const fromVehicle = (this.state.routes.get(routeId) || {}).vehicle_id;
    const ids = [...this.state.vehicles.keys()].filter((id) => id !== fromVehicle).sort(naturalCompare);
    this.dialog({
      title: t("dialog.reassign.title", { stop: stopId }),
      label: t("dialog.reassign.to"),
      options: ids,
      submit: (to) => this.command({ type: "reassign", stop_id: stopId, to_vehicle: to }),
    });
  }

  cancelDialog(stopId) {
    this.dialog({
      title: t("dialog.cancel.title", { stop: stopId }),
      label: t("dialog.cancel.reason"),
      maxLength: MAX_REASON,
      submit: (reason) => this.command({ type: "cancel", stop_id: stopId, reason }),
    });
  }

  /** The one modal: a choice (options) or a text; stays open showing the server's refusal. */
  dialog({ title, label, options, maxLength, submit }) {
    const dlg = $("dlg");
    const select = $("dlg-select");
    const text = $("dlg-text");
    const err = $("dlg-error");
    $("dlg-title").textContent = title;
    $("dlg-label-text").textContent = label;
    select.hidden = !options;
    text.hidden = Boolean(options);
    select.replaceChildren(...(options || []).map((o) => h("option", { value: o }, o)));
    text.value = "";
    if (maxLength) text.maxLength = maxLength;
    err.hidden = true;
    const form = $("dlg-form");
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const value = options ? select.value : text.value.trim();
      if (!value) return;
      $("dlg-ok").disabled = true;
      const reply = await submit(value);
      $("dlg-ok").disabled = false;
      if (reply.ok) {
        dlg.close();
        this.toast(t("reply.ok"), "ok");
      } else {
        err.textContent = this.errorText(reply.error);
        err.hidden = false;
      }
    };
    dlg.showModal();
    (options ? select : text).focus();
  }

  // track ----------------------------------------------------------------------------------
  async toggleTrack() {
    if (this.trackFor) {
      this.mapView.hideTrack();
      this.trackFor = null;
      this.renderTrackButton();
      return;
    }
    const vehicleId = this.selected;
    if (!vehicleId) return;
    const msg = await this.command({ type: "track", vehicle_id: vehicleId, minutes: TRACK_MINUTES, max_points: TRACK_POINTS });
    if (msg.type !== "track") {
      this.toast(this.errorText(msg.error), "error");
      return;
    }
    if (this.selected !== vehicleId) return; // the dispatcher moved on meanwhile
    this.renderTrackInfo(msg);
    if (msg.error === "store_error") this.toast(t("track.store_error", { message: msg.message || "" }), "error");
    if (!msg.points || msg.points.length === 0) {
      if (msg.error !== "store_error") this.toast(t("route.track_empty"), "info");
      return;
    }
    this.mapView.showTrack(msg, (s) => {
      const name = (this.state.sites.get(s.site_id) || {}).name || s.site_id || "";
      return `${t("map.stop_on_track", { from: this.time(s.start), to: s.end ? this.time(s.end) : "…" })} ${name}`;
    });
    this.trackFor = vehicleId;
    this.renderTrackButton();
  }

  onTrack(msg) {
    const resolve = this.pending.get(msg.id);
    if (resolve) {
      this.pending.delete(msg.id);
      resolve(msg);
    }
  }

  renderTrackButton() {
    const b = $("track-btn");
    b.disabled = !this.selected;
    b.textContent = this.trackFor ? t("route.track_hide") : t("route.track");
    if (!this.trackFor) this.renderTrackInfo(null);
  }

  /** Where the shown track came from (the store, or the server's memory and why): a
   *  dispatcher must know when an hour's track may be incomplete. */
  renderTrackInfo(msg) {
    const el = $("track-info");
    if (!msg) {
      el.hidden = true;
      el.textContent = "";
      delete el.dataset.source;
      delete el.dataset.error;
      return;
    }
    const source = msg.source || "memory";
    const key = msg.error ? `track.${msg.error}_short` : `track.from_${source}`;
    el.textContent = t(key);
    el.title = msg.message || "";
    el.dataset.source = source;
    el.dataset.error = msg.error || "";
    el.className = msg.error ? "track-info track-warn" : "track-info muted";
    el.hidden = false;
  }

  // tooltips -------------------------------------------------------------------------------
  siteTooltip(q) {
    if (q.depot) return t("map.depot", { name: q.depot.name || q.depot.depot_id || "" });
    const s = this.state.sites.get(q.site_id);
    if (!s) return q.site_id;
    const stop = [...this.state.stops.values()].find((st) => st.site_id === q.site_id);
    const lines = [t("map.site", { name: s.name || s.site_id }), t("map.client", { id: s.client_id }), t(`stop.${s.state || "none"}`)];
    if (stop) {
      lines.push(`${this.time(stop.window_start)}–${this.time(stop.window_end)} · ${stop.vehicle_id || ""}`);
      if (stop.eta && !FINAL_STOP.has(stop.state)) lines.push(`${t("route.col.eta")}: ${this.time(stop.eta)}`);
    }
    return lines.map(escapeHtml).join("<br>");
  }

  vehicleTooltip(id) {
    const v = this.state.vehicles.get(id);
    if (!v) return escapeHtml(id);
    const speed = typeof v.speed_kmh === "number" ? ` · ${t("route.speed", { v: Math.round(v.speed_kmh) })}` : "";
    return escapeHtml(`${id} · ${t(`vehicle.${v.state}`)}${speed}`);
  }

  // helpers --------------------------------------------------------------------------------
  time(iso, seconds = false) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const key = `${i18n.currentLang()}${seconds}`;
    let f = this.fmtCache.get(key);
    if (!f) {
      const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: this.config.time_zone || undefined };
      if (seconds) opts.second = "2-digit";
      try {
        f = new Intl.DateTimeFormat(i18n.currentLang() === "ru" ? "ru-RU" : "en-GB", opts);
      } catch (_) {
        delete opts.timeZone; // an unknown zone in the config: the browser's own
        f = new Intl.DateTimeFormat(undefined, opts);
      }
      this.fmtCache.set(key, f);
    }
    return f.format(d);
  }

  toast(text, kind) {
    const el = h("div", { class: `toast toast-${kind}` }, text);
    $("toasts").append(el);
    setTimeout(() => el.remove(), 8000);
  }
}

/** Put *children* (elements) in *parent* unless the same markup is drawn there already: a
 *  button drawn anew between the press and the release of a click on it swallows the click.
 *  (Their handlers read the state when clicked, so the drawn ones act as the new would.) */
function replaceChildrenIfChanged(parent, children) {
  if (parent.innerHTML === children.map((c) => c.outerHTML).join("")) return;
  parent.replaceChildren(...children);
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function naturalCompare(a, b) {
  return a.localeCompare(b, undefined, { numeric: true });
}

function loadScope() {
  try {
    const saved = localStorage.getItem(SCOPE_KEY);
    if (SCOPES.includes(saved)) return saved;
  } catch (_) {
    // storage blocked: everything
  }
  return "all";
}

function saveScope(scope) {
  try {
    localStorage.setItem(SCOPE_KEY, scope);
  } catch (_) {
    // not remembered: the next load shows everything
  }
}

function localStorageHas(key) {
  try {
    return localStorage.getItem(key) !== null;
  } catch (_) {
    return false;
  }
}

/** The token from ?token=... (then removed from the address bar, so it is not left on screen
 *  or in a copied link), else the one this tab signed in with. */
function takeToken() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token) {
    saveToken(token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
    return token;
  }
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch (_) {
    return null;
  }
}

function saveToken(token) {
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch (_) {
    // not kept across reloads: the dispatcher signs in again
  }
}

function forgetToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    // nothing kept
  }
}

async function main() {
  const r = await fetch("/console-config.json");
  const config = r.ok ? await r.json() : { ws_path: "/ws/console" };
  const app = new App(config);
  window.fleetwatch = { app, state: app.state, metrics: app.metrics, colours: { stop: STOP_COLOURS, vehicle: VEHICLE_COLOURS }, rgb };
  await app.start();
  window.fleetwatch.map = app.mapView;
  document.body.dataset.ready = "1";
}

main().catch((err) => {
  console.error("fleetwatch console failed to start", err);
  document.body.dataset.ready = "error";
  document.body.prepend(h("div", { class: "banner banner-error" }, `fleetwatch: ${err}`));
});
