// A small chart of one database's successful backups over the last 90 days:
// size as bars, duration as a line, oldest on the left.
import { bytes, h, seconds, svg } from "./dom.js";

const W = 180, H = 44, DAY = 86400000;

export function sizeChart(runs, now = Date.now()) {
  const from = now - 90 * DAY;
  const points = runs
    .filter((r) => r.started_at && new Date(r.started_at).getTime() >= from)
    .map((r) => ({ t: new Date(r.started_at).getTime(), size: Number(r.size_bytes || 0),
      dur: Number(r.duration_seconds || 0) }))
    .sort((a, b) => a.t - b.t);
  if (!points.length) return h("span", { class: "muted" }, "no backups in 90 days");
  const maxSize = Math.max(...points.map((p) => p.size), 1);
  const maxDur = Math.max(...points.map((p) => p.dur), 0.001);
  const x = (t) => 2 + ((t - from) / (now - from)) * (W - 4);
  const bars = points.map((p) => svg("rect", {
    class: "bar", x: (x(p.t) - 1).toFixed(1), width: 2,
    y: (H - 2 - (p.size / maxSize) * (H - 6)).toFixed(1),
    height: Math.max((p.size / maxSize) * (H - 6), 1).toFixed(1),
  }));
  const line = points.map((p, i) =>
    `${i ? "L" : "M"}${x(p.t).toFixed(1)},${(H - 2 - (p.dur / maxDur) * (H - 6)).toFixed(1)}`);
  const sizes = points.map((p) => p.size), durs = points.map((p) => p.dur);
  const summary = `${points.length} backups in 90 days; size ${bytes(Math.min(...sizes))}` +
    `–${bytes(maxSize)}; duration ${seconds(Math.min(...durs))}–${seconds(maxDur)}`;
  return h("figure", { class: "chart" },
    svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": summary },
    svg("title", {}, summary),
    svg("line", { class: "axis", x1: 0, x2: W, y1: H - 1, y2: H - 1 }),
    bars,
    svg("path", { class: "dur", d: line.join(" ") })),
    h("figcaption", {}, h("span", { class: "key size" }, "size ", bytes(maxSize)), " ",
      h("span", { class: "key dur" }, "time ", seconds(maxDur))));
}
