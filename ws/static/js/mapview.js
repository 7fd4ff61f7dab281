// The map: sites, depots, trucks and a selected truck's track as Leaflet vector layers.
//
// Why canvas and why three renderers: 2,000 trucks and 1,500 sites as DOM/SVG elements make
// every positions frame a layout storm; on canvas a frame is one redraw.  Sites, the track and
// the trucks each get a canvas of their own (in panes stacked in that order), so a positions
// frame redraws only the trucks' canvas and never the 1,500 sites under it.
// No tile layer unless configured: the service must work without internet.

/* global L */

export const STOP_COLOURS = {
  pending: "#5b7db1",
  at_risk: "#e0a100",
  late: "#e2591b",
  visited: "#2e9e4f",
  missed: "#c8102e",
  cancelled: "#7a7a7a",
  none: "#b9c0c8",
};

export const VEHICLE_COLOURS = {
  moving: "#1565c0",
  stopped: "#f39c12",
  at_site: "#00897b",
  silent: "#616161",
};

/** Below this zoom sites are dots of a fixed size; from it on, their real circles/polygons. */
export const GEOMETRY_ZOOM = 15;
const MOSCOW = [55.7558, 37.6173];

export class MapView {
  /**
   * @param {HTMLElement} el
   * @param {object} o
   * @param {string|null} o.tileUrl  a Leaflet tile URL template, or null for none
   * @param {string} o.tileAttribution
   * @param {(vehicleId: string) => void} o.onVehicleClick
   * @param {(siteId: string) => object} o.siteInfo    text for a site's tooltip
   * @param {(vehicle: object) => string} o.vehicleInfo
   * @param {() => void} [o.onMoveEnd]  the view changed (pan, zoom, fit): "map view" follows it
   */
  constructor(el, { tileUrl, tileAttribution, onVehicleClick, siteInfo, vehicleInfo, onMoveEnd }) {
    // fractional zoom: fitting the city to the screen leaves no wide empty margins
    this.map = L.map(el, { preferCanvas: true, zoomControl: true, zoomSnap: 0.25, zoomDelta: 0.5 });
    this.map.setView(MOSCOW, 11);
    for (const [name, z] of [["sites", 410], ["track", 420], ["vehicles", 430]]) {
      this.map.createPane(name).style.zIndex = String(z);
    }
    this.renderers = {
      sites: L.canvas({ pane: "sites", padding: 0.2 }),
      track: L.canvas({ pane: "track", padding: 0.2 }),
      vehicles: L.canvas({ pane: "vehicles", padding: 0.2, tolerance: 3 }),
    };
    this.tiles = null;
    if (tileUrl) this.setTiles(tileUrl, tileAttribution);
    this.onVehicleClick = onVehicleClick;
    this.siteInfo = siteInfo;
    this.vehicleInfo = vehicleInfo;
    this.siteDots = L.layerGroup();
    this.siteShapes = L.layerGroup();
    this.depotLayer = L.layerGroup().addTo(this.map);
    this.vehicleLayer = L.layerGroup().addTo(this.map);
    this.trackLayer = L.layerGroup().addTo(this.map);
    this.sites = new Map(); // site_id -> {dot, shape, state}
    this.vehicles = new Map(); // vehicle_id -> {marker, state}
    this.selected = null;
    this.fitted = false;
    this.map.on("zoomend", () => this.showSiteLayerForZoom());
    if (onMoveEnd) this.map.on("moveend", onMoveEnd);
    this.showSiteLayerForZoom();
  }

  /** A background map from a tile server (optional: the console works without one). */
  setTiles(url, attribution) {
    if (this.tiles) this.map.removeLayer(this.tiles);
    this.tiles = L.tileLayer(url, { attribution: attribution || "", maxZoom: 19 }).addTo(this.map);
  }

  showSiteLayerForZoom() {
    const detailed = this.map.getZoom() >= GEOMETRY_ZOOM;
    const [on, off] = detailed ? [this.siteShapes, this.siteDots] : [this.siteDots, this.siteShapes];
    if (this.map.hasLayer(off)) this.map.removeLayer(off);
    if (!this.map.hasLayer(on)) this.map.addLayer(on);
  }

  // -- sites and depots ---------------------------------------------------------------------
  setSites(sites, depots) {
    this.siteDots.clearLayers();
    this.siteShapes.clearLayers();
    this.sites.clear();
    for (const s of sites) this.addSite(s);
    this.depotLayer.clearLayers();
    for (const d of depots || []) {
      if (typeof d.lat !== "number" || typeof d.lon !== "number") continue;
      L.circleMarker([d.lat, d.lon], {
        renderer: this.renderers.sites,
        radius: 8,
        color: "#222",
        weight: 3,
        fillColor: "#fff",
        fillOpacity: 1,
      })
        .bindTooltip(() => this.siteInfo({ depot: d }))
        .addTo(this.depotLayer);
    }
    if (!this.fitted && sites.length) {
      const b = L.latLngBounds(sites.map((s) => [s.lat, s.lon]));
      // no animation: a zoom animation ends on a later frame and would undo a view the user
      // (or a test) set meanwhile
      if (b.isValid()) this.map.fitBounds(b, { padding: [20, 20], animate: false });
      this.fitted = true;
    }
  }

  addSite(s) {
    const style = siteStyle(s.state);
    const dot = L.circleMarker([s.lat, s.lon], {
      renderer: this.renderers.sites,
      radius: s.state ? 4 : 3,
      weight: 1,
      ...style,
    });
    let shape;
    if (Array.isArray(s.polygon) && s.polygon.length >= 3) {
      shape = L.polygon(s.polygon.map(([lon, lat]) => [lat, lon]), {
        renderer: this.renderers.sites,
        weight: 2,
        ...style,
      });
    } else {
      shape = L.circle([s.lat, s.lon], {
        renderer: this.renderers.sites,
        radius: s.radius_m || 30,
        weight: 2,
        ...style,
      });
    }
    const tip = () => this.siteInfo({ site_id: s.site_id });
    dot.bindTooltip(tip);
    shape.bindTooltip(tip);
    dot.addTo(this.siteDots);
    shape.addTo(this.siteShapes);
    this.sites.set(s.site_id, { dot, shape, state: s.state });
  }

  setSiteState(siteId, state) {
    const e = this.sites.get(siteId);
    if (!e || e.state === state) return;
    e.state = state;
    const style = siteStyle(state);
    e.dot.setStyle(style);
    e.dot.setRadius(state ? 4 : 3);
    e.shape.setStyle(style);
  }

  panToSite(siteId) {
    const e = this.sites.get(siteId);
    if (e) this.map.panTo(e.dot.getLatLng());
  }

  // -- vehicles -----------------------------------------------------------------------------
  setVehicles(vehicles) {
    this.vehicleLayer.clearLayers();
    this.vehicles.clear();
    this.updateVehicles(vehicles);
  }

  /** Move/restyle the given vehicles; one canvas redraw follows on the next frame. */
  updateVehicles(vehicles) {
    for (const v of vehicles) {
      if (typeof v.lat !== "number" || typeof v.lon !== "number") continue;
      const e = this.vehicles.get(v.vehicle_id);
      if (e === undefined) {
        const marker = L.circleMarker([v.lat, v.lon], {
          renderer: this.renderers.vehicles,
          ...vehicleStyle(v.state, v.vehicle_id === this.selected),
        });
        const id = v.vehicle_id;
        marker.bindTooltip(() => this.vehicleInfo(id));
        marker.on("click", () => this.onVehicleClick(id));
        marker.addTo(this.vehicleLayer);
        this.vehicles.set(id, { marker, state: v.state });
        continue;
      }
      e.marker.setLatLng([v.lat, v.lon]);
      if (e.state !== v.state) {
        e.state = v.state;
        e.marker.setStyle(vehicleStyle(v.state, v.vehicle_id === this.selected));
      }
    }
  }

  select(vehicleId) {
    const prev = this.selected;
    this.selected = vehicleId;
    for (const id of [prev, vehicleId]) {
      const e = id && this.vehicles.get(id);
      if (e) {
        e.marker.setStyle(vehicleStyle(e.state, id === vehicleId));
        e.marker.setRadius(id === vehicleId ? 9 : 5);
        if (id === vehicleId) e.marker.bringToFront();
      }
    }
  }

  panToVehicle(vehicleId) {
    const e = this.vehicles.get(vehicleId);
    if (e) this.map.panTo(e.marker.getLatLng());
  }

  // -- the selected truck's track -----------------------------------------------------------
  showTrack(track, stopLabel) {
    this.trackLayer.clearLayers();
    const pts = (track.points || []).map((p) => [p.lat, p.lon]);
    if (pts.length) {
      L.polyline(pts, { renderer: this.renderers.track, color: "#6a1b9a", weight: 3, opacity: 0.85 }).addTo(
        this.trackLayer,
      );
    }
    for (const s of track.stops || []) {
      L.circleMarker([s.lat, s.lon], {
        renderer: this.renderers.track,
        radius: 6,
        color: "#6a1b9a",
        weight: 2,
        fillColor: "#fff",
        fillOpacity: 1,
      })
        .bindTooltip(stopLabel(s))
        .addTo(this.trackLayer);
    }
    if (pts.length) this.map.fitBounds(L.latLngBounds(pts), { padding: [40, 40], maxZoom: 15, animate: false });
  }

  hideTrack() {
    this.trackLayer.clearLayers();
  }

  get trackShown() {
    return this.trackLayer.getLayers().length > 0;
  }

  /** The visible area as the protocol's region, [min_lon, min_lat, max_lon, max_lat], clamped
   *  to the world (a zoomed-out map reaches past it) and rounded to ~1 m. */
  regionBounds() {
    const b = this.map.getBounds();
    const r = (x) => Math.round(x * 1e5) / 1e5;
    const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
    return [
      r(clamp(b.getWest(), -180, 180)),
      r(clamp(b.getSouth(), -90, 90)),
      r(clamp(b.getEast(), -180, 180)),
      r(clamp(b.getNorth(), -90, 90)),
    ];
  }

  // -- for tests and operators (window.fleetwatch.debug) --------------------------------------
  /** The RGBA of the pixel a renderer drew at (lat, lon): proves a layer reached the canvas. */
  pixelAt(rendererName, lat, lon) {
    const r = this.renderers[rendererName];
    const ctx = r._ctx;
    const p = this.map.latLngToLayerPoint([lat, lon]).subtract(r._bounds.min);
    const dpr = window.devicePixelRatio || 1;
    return Array.from(ctx.getImageData(Math.round(p.x * dpr), Math.round(p.y * dpr), 1, 1).data);
  }
}

function siteStyle(state) {
  const c = STOP_COLOURS[state || "none"] || STOP_COLOURS.none;
  return {
    color: c,
    fillColor: c,
    fillOpacity: state ? 0.55 : 0.3,
    opacity: 1,
    dashArray: state === "cancelled" ? "4 3" : null,
  };
}

function vehicleStyle(state, selected) {
  const c = VEHICLE_COLOURS[state] || VEHICLE_COLOURS.moving;
  return {
    radius: selected ? 9 : 5,
    color: selected ? "#000" : "#fff",
    weight: selected ? 3 : 1.5,
    fillColor: c,
    fillOpacity: 1,
    opacity: 1,
  };
}

/** "#rrggbb" -> [r, g, b] (tests compare drawn pixels with the legend's colours). */
export function rgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}
