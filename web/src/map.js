// The map: MapLibre draws the basemap (the communes' outlines, offline; or a configured style from a
// tile server with the outlines on top) and deck.gl draws the assets in its own canvas above it, so
// that a change of the assets never redraws the basemap.

import * as maplibregl from "maplibre-gl";
import { MapboxOverlay } from "@deck.gl/mapbox";

const BACKGROUND = "#0b1016";

function communeLayers(fillOpacity) {
  return [
    { id: "communes-fill", type: "fill", source: "communes", paint: { "fill-color": "#111b26", "fill-opacity": fillOpacity } },
    { id: "communes-line", type: "line", source: "communes",
      paint: { "line-color": "#46607a", "line-width": ["interpolate", ["linear"], ["zoom"], 9, 0.8, 14, 2] } },
  ];
}

// The offline basemap holds the outlines from the start, so that MapLibre has compiled all its
// shaders by its first 'idle': compiling later waits on the GPU behind deck.gl's frames (with a
// software renderer, for seconds) and would freeze the page in steady state.
function offlineStyle(communes) {
  return {
    version: 8,
    sources: { communes: { type: "geojson", data: communes, attribution: communes.attribution || "" } },
    layers: [{ id: "background", type: "background", paint: { "background-color": BACKGROUND } }, ...communeLayers(1)],
  };
}

// Over a configured style (a tile server's), the outlines are drawn on top, lightly filled.
function addCommunes(map, communes) {
  if (map.getSource("communes")) return;
  map.addSource("communes", { type: "geojson", data: communes, attribution: communes.attribution || "" });
  for (const layer of communeLayers(0.15)) map.addLayer(layer);
}

export function bounds(communes) {
  let minLon = 180, minLat = 90, maxLon = -180, maxLat = -90;
  const visit = (coords) => {
    if (typeof coords[0] === "number") {
      minLon = Math.min(minLon, coords[0]); maxLon = Math.max(maxLon, coords[0]);
      minLat = Math.min(minLat, coords[1]); maxLat = Math.max(maxLat, coords[1]);
    } else for (const c of coords) visit(c);
  };
  for (const f of communes.features) visit(f.geometry.coordinates);
  return [[minLon, minLat], [maxLon, maxLat]];
}

// A label position for each commune: the centroid of its largest ring (good enough for 23 shapes).
export function communeLabels(communes) {
  return communes.features.map((f) => {
    const polygons = f.geometry.type === "MultiPolygon" ? f.geometry.coordinates : [f.geometry.coordinates];
    let best = null;
    let bestArea = -1;
    for (const polygon of polygons) {
      const ring = polygon[0];
      let area = 0, cx = 0, cy = 0;
      for (let k = 0; k < ring.length - 1; k++) {
        const [x0, y0] = ring[k];
        const [x1, y1] = ring[k + 1];
        const cross = x0 * y1 - x1 * y0;
        area += cross; cx += (x0 + x1) * cross; cy += (y0 + y1) * cross;
      }
      if (Math.abs(area) > bestArea && area !== 0) {
        bestArea = Math.abs(area);
        best = [cx / (3 * area), cy / (3 * area)];
      }
    }
    return { name: f.properties.name, insee: f.id ?? f.properties.insee, position: best || ring0(polygons) };
  });
}

function ring0(polygons) {
  return polygons[0][0][0];
}

export class CityMap {
  // onClick(lngLat, zoom) is called for a click on the map (not on a control).
  constructor(container, { styleUrl, communes, onClick, onAfterRender }) {
    this.communes = communes;
    const box = bounds(communes);
    this.map = new maplibregl.Map({
      container,
      style: styleUrl || offlineStyle(communes),
      bounds: box,
      fitBoundsOptions: { padding: 20 },
      attributionControl: { compact: true },
      maxZoom: 20,
      minZoom: 8,
      dragRotate: false,
      pitchWithRotate: false,
      touchPitch: false,
      fadeDuration: 0,
    });
    this.map.touchZoomRotate.disableRotation();
    this.map.keyboard.enable();
    this.map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "bottom-right");
    this.map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-left");
    if (styleUrl) {
      this.map.on("style.load", () => addCommunes(this.map, communes));
      // The tile server cannot be reached (no internet, a wrong URL): fall back to the offline basemap.
      const fallBack = (event) => {
        if (this.map.isStyleLoaded()) return;
        console.warn("map style unavailable, using the communes' outlines", styleUrl, event && event.error);
        this.map.off("error", fallBack);
        this.map.setStyle(offlineStyle(communes));
      };
      this.map.on("error", fallBack);
      this.map.once("style.load", () => this.map.off("error", fallBack));
    }
    this.map.on("click", (e) => onClick(e.lngLat, this.map.getZoom()));
    this.overlay = new MapboxOverlay({ interleaved: false, layers: [], onAfterRender, useDevicePixels: 1 });
    this.map.addControl(this.overlay);
    this.homeBounds = box;
  }

  // Resolves once the basemap is drawn with all its sources (or after timeoutMs: a slow tile server
  // must not hold the assets back).
  whenIdle(timeoutMs) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.map.once("idle", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  setLayers(layers) {
    this.overlay.setProps({ layers });
  }

  get deck() {
    return this.overlay._deck || null;
  }

  metersPerPixel(lat) {
    return (40075016.686 * Math.cos((lat * Math.PI) / 180)) / (512 * 2 ** this.map.getZoom());
  }

  // rightInset: pixels covered on the right (the open sheet): the point lands in the middle of the rest.
  flyTo(lon, lat, zoom = 17, rightInset = 0) {
    this.map.flyTo({ center: [lon, lat], zoom: Math.max(zoom, this.map.getZoom()), speed: 1.6, essential: true,
      offset: [-rightInset / 2, 0] });
  }

  home() {
    this.map.fitBounds(this.homeBounds, { padding: 20 });
  }

  resize() {
    this.map.resize();
  }
}
