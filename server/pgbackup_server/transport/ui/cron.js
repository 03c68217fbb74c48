// A five-field cron expression in words: "every day at 02:00".
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const DAY_NAMES = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6 };

function num(field) { return /^\d+$/.test(field) ? Number(field) : null; }
function pad(n) { return String(n).padStart(2, "0"); }

function dayList(field) {
  const parts = field.toLowerCase().split(",");
  const out = [];
  for (const p of parts) {
    const range = p.split("-");
    const val = (x) => (x in DAY_NAMES ? DAY_NAMES[x] : /^\d$/.test(x) ? Number(x) % 7 : null);
    if (range.length === 2) {
      const a = val(range[0]), b = val(range[1]);
      if (a === null || b === null) return null;
      if (a === 1 && b === 5) { out.push("weekday"); continue; }
      out.push(`${DAYS[a]} to ${DAYS[b]}`);
    } else {
      const v = val(p);
      if (v === null) return null;
      out.push(DAYS[v]);
    }
  }
  return out.join(", ");
}

export function cronWords(expr, timezone) {
  const f = String(expr || "").trim().split(/\s+/);
  const tz = timezone ? ` ${timezone}` : "";
  if (f.length !== 5) return `cron ${expr}`;
  const [min, hour, dom, mon, dow] = f;
  const m = num(min), hr = num(hour);
  const step = /^\*\/(\d+)$/;
  if (mon !== "*") return `cron ${expr}${tz}`;
  if (hour === "*" && dom === "*" && dow === "*") {
    if (min === "*") return "every minute";
    if (step.test(min)) return `every ${min.match(step)[1]} minutes`;
    if (m !== null) return `every hour at minute ${m}`;
  }
  if (m !== null && step.test(hour) && dom === "*" && dow === "*") {
    return `every ${hour.match(step)[1]} hours at minute ${m}${tz}`;
  }
  if (m === null || hr === null) return `cron ${expr}${tz}`;
  const at = `at ${pad(hr)}:${pad(m)}${tz}`;
  if (dom === "*" && dow === "*") return `every day ${at}`;
  if (dom === "*") {
    const days = dayList(dow);
    if (days) return `every ${days} ${at}`;
  }
  if (dow === "*" && num(dom) !== null) return `on day ${dom} of every month ${at}`;
  return `cron ${expr}${tz}`;
}
