// Renders the JSON lines bench/compare.sh collected into BENCHMARKS.md, between the
// `<!-- compare:begin -->` / `<!-- compare:end -->` markers (text outside them is kept).
// Usage: node render.mjs RESULTS_DIR OUT COMMAND STARTED "SERVERS"
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execSync } from 'node:child_process'

const [dir, out, command, started, serversArg] = process.argv.slice(2)
const servers = serversArg.split(/\s+/).filter(Boolean)
// `relay` is the floor (`tandem bench-relay`: forwards frames, nothing else), not a peer.
const peers = servers.filter((s) => !s.startsWith('tandem') && s !== 'relay')
// `tandem-async` (Tandem in async durability, like every peer) runs fanout and saturate only,
// the relay fanout only.
const full = servers.filter((s) => s !== 'tandem-async' && s !== 'relay')
const saturating = servers.filter((s) => s !== 'relay')
const floor = servers.includes('relay') ? ['relay'] : []
const tandems = servers.filter((s) => s.startsWith('tandem'))
const label = (s) => ({ tandem: 'Tandem', 'tandem-async': 'Tandem (async)', relay: 'Floor (relay)' })[s]

const read = (s, wl) => {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, `${s}.${wl}.json`), 'utf8'))
  } catch {
    return { failed: 'no result' }
  }
}
const version = (s) => {
  try { return fs.readFileSync(path.join(dir, `${s}.version`), 'utf8').trim() } catch { return '?' }
}
const fmt = (v, d = 1) => (v === undefined || v === null || Number.isNaN(v) ? '–' : Number(v).toFixed(d))
const sh = (c) => { try { return execSync(c, { encoding: 'utf8' }).trim() } catch { return '?' } }

// Tandem's value over the best peer's; `lower` says whether lower is better.
function ratio (get, lower, valid = (r) => !r.failed, who = 'tandem') {
  const t = read(who, this)
  const vals = peers.map((p) => read(p, this)).filter(valid).map(get).filter((v) => typeof v === 'number' && v > 0)
  if (!valid(t) || typeof get(t) !== 'number' || vals.length === 0) return '–'
  const best = lower ? Math.min(...vals) : Math.max(...vals)
  return `${(get(t) / best).toFixed(2)}× (best peer ${fmt(best, best < 10 ? 2 : 0)})`
}

const lines = []
const p = (s = '') => lines.push(s)
const cpuModel = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) || [])[1] || '?'
p(`Measured ${started} on ${os.cpus().length} cores (${cpuModel}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ` +
  `${sh('uname -sr')}; load average at render ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}.`)
// /proc/stat's first line: cpu user nice system idle iowait irq softirq steal ...
const cpuTimes = (f) => {
  try { return fs.readFileSync(path.join(dir, f), 'utf8').trim().split(/\s+/).slice(1, 9).map(Number) } catch { return null }
}
const [t0, t1] = [cpuTimes('procstat.start'), cpuTimes('procstat.end')]
const steal = t0 && t1
  ? `${(100 * (t1[7] - t0[7]) / (t1.reduce((a, b) => a + b, 0) - t0.reduce((a, b) => a + b, 0))).toFixed(1)} %`
  : 'not recorded'
p('Generator and servers share the machine: ' +
  'absolute figures are noisy; compare ratios within one run. ' +
  `CPU steal during the run (time the hypervisor gave to other guests): ${steal}; a high share slows every server, unevenly.`)
p()
p(`Command: \`${command}\``)
p()
p('| server | version |')
p('|---|---|')
for (const s of servers) p(`| ${s} | ${version(s)} |`)
p(`| generator | \`tandem bench\` (Rust: tokio-tungstenite + yrs); ${sh('rustc --version')}; node ${process.version} |`)
p()
p('Ratios are Tandem ÷ best peer: below 1 is better for CPU, latency, memory and time; above 1 is better for throughput.')
if (floor.length) {
  p()
  p('`relay` is the floor, not a peer: `tandem bench-relay` answers each SyncStep1 with an empty SyncStep2 and ' +
    'forwards every other frame to the room\'s other clients, with no CRDT, no storage and no echo. ' +
    'In fanout its CPU is what the transport alone costs on this machine; no server that delivers each update promptly ' +
    'can spend less. It writes every frame on its own, with no batching, so it is no floor for saturate and does not run it.')
}
p()

for (const [wl, title] of [['fanout-10x10', '10 rooms × 10 clients × 10 Hz'], ['fanout-100x5', '100 rooms × 5 clients × 5 Hz']]) {
  p(`### fanout: ${title}`)
  p()
  p('| server | deliveries/s | missing | connect failures | p50 ms | p95 ms | p99 ms | max ms | server CPU % | server peak RSS MiB | generator CPU % |')
  p('|---|---|---|---|---|---|---|---|---|---|---|')
  for (const s of servers) {
    const r = read(s, wl)
    if (r.failed) { p(`| ${s} | failed: ${r.failed} ||||||||||`); continue }
    p(`| ${s} | ${fmt(r.deliveries_per_sec, 0)} | ${r.missing} | ${r.connect_failures} | ${fmt(r.latency.p50_ms, 2)} | ${fmt(r.latency.p95_ms, 2)} | ${fmt(r.latency.p99_ms, 2)} | ${fmt(r.latency.max_ms, 2)} | ${fmt(r.server_cpu_pct)} | ${fmt(r.server_peak_rss_mib)} | ${fmt(r.generator_cpu_pct)} |`)
  }
  const ok = (r) => !r.failed && r.missing === 0
  for (const who of [...tandems, ...floor]) {
    p(`| **${label(who)} ÷ best peer** | | | | | | p99 ${ratio.call(wl, (r) => r.latency.p99_ms, true, ok, who)} | | CPU ${ratio.call(wl, (r) => r.server_cpu_pct, true, ok, who)} | RSS ${ratio.call(wl, (r) => r.server_peak_rss_mib, true, ok, who)} | |`)
  }
  p()
}

p('### saturate: 10 rooms × 10 clients, rate ×1.5 per step until p99 > 50 ms or a delivery is missing')
p()
p('| server | highest sustained deliveries/s | at Hz per client | p99 ms there | server CPU % there | why it stopped |')
p('|---|---|---|---|---|---|')
for (const s of saturating) {
  const r = read(s, 'saturate')
  if (r.failed) { p(`| ${s} | failed: ${r.failed} |||||`); continue }
  const b = r.best || {}
  p(`| ${s} | ${fmt(r.max_sustained_deliveries_per_sec, 0)} | ${fmt(b.params?.hz)} | ${fmt(b.latency?.p99_ms, 2)} | ${fmt(b.server_cpu_pct)} | ${r.stop_reason} |`)
}
for (const who of tandems) {
  p(`| **${label(who)} ÷ best peer** | ${ratio.call('saturate', (r) => r.max_sustained_deliveries_per_sec, false, undefined, who)} | | | | |`)
}
p()

p('### ingest: automerge-paper (B4) trace, one writer + 3 readers, then restart and verify')
p()
p('Tandem is stopped with SIGKILL (sync durability); peers with SIGTERM after a settle period, since they persist in the background.')
p()
p('| server | updates | seconds | updates/s | server CPU s | restart | final text verified | writer clocks lost |')
p('|---|---|---|---|---|---|---|---|')
for (const s of full) {
  const r = read(s, 'ingest')
  if (r.failed) { p(`| ${s} | failed: ${r.failed} |||||||`); continue }
  p(`| ${s} | ${r.updates} | ${fmt(r.secs, 2)} | ${fmt(r.updates_per_sec, 0)} | ${fmt(r.server_cpu_secs, 2)} | ${r.restart} | ${r.verified} | ${r.lost_clocks} |`)
}
p(`| **Tandem ÷ best peer** | | ${ratio.call('ingest', (r) => r.secs, true, (r) => !r.failed && r.verified)} | | | | | |`)
p()

p('### coldload: store S1 / C1 / A1, restart, fresh client connect → full verified text (median ms)')
p()
const docs = ['S1.yjs', 'C1.yjs', 'A1.yjs']
p(`| server | ${docs.join(' | ')} | all verified |`)
p(`|---|${docs.map(() => '---').join('|')}|---|`)
const doc = (r, f) => (r.docs || []).find((d) => d.file === f)
for (const s of full) {
  const r = read(s, 'coldload')
  if (r.failed) { p(`| ${s} | failed: ${r.failed} ||||`); continue }
  p(`| ${s} | ${docs.map((f) => fmt(doc(r, f)?.median_ms)).join(' | ')} | ${(r.docs || []).every((d) => d.verified)}${r.cold ? '' : ' (warm)'} |`)
}
const t = read('tandem', 'coldload')
if (!t.failed) {
  p(`| raw yrs decode+apply+encode (in-process) | ${docs.map((f) => fmt(doc(t, f)?.raw_yrs_ms)).join(' | ')} | |`)
  p(`| **Tandem ÷ raw yrs** | ${docs.map((f) => fmt(doc(t, f)?.ratio_to_raw, 2) + '×').join(' | ')} | |`)
}
p(`| **Tandem ÷ best peer** | ${docs.map((f) => ratio.call('coldload', (r) => doc(r, f)?.median_ms, true, (r) => !r.failed && doc(r, f)?.verified)).join(' | ')} | |`)
p()

p('### connections: idle clients over clients/10 rooms (one small document each)')
p()
p('| server | clients | connected | KiB per idle connection | KiB per loaded small room (+1 connection) | RSS with all, MiB |')
p('|---|---|---|---|---|---|')
for (const s of full) {
  const r = read(s, 'connections')
  if (r.failed) { p(`| ${s} | failed: ${r.failed} |||||`); continue }
  p(`| ${s} | ${r.clients} | ${r.connected} | ${fmt(r.kib_per_connection)} | ${fmt(r.kib_per_room)} | ${fmt(r.rss_all_kib / 1024)} |`)
}
p(`| **Tandem ÷ best peer** | | | ${ratio.call('connections', (r) => r.kib_per_connection, true)} | ${ratio.call('connections', (r) => r.kib_per_room, true)} | |`)

const generated = `<!-- compare:begin (generated by bench/compare.sh; edits here are overwritten) -->\n${lines.join('\n')}\n<!-- compare:end -->`
let doc0 = ''
try { doc0 = fs.readFileSync(out, 'utf8') } catch {}
const re = /<!-- compare:begin[\s\S]*?<!-- compare:end -->/
const next = re.test(doc0)
  ? doc0.replace(re, () => generated)
  : `# Benchmarks\n\nProduced by \`bench/compare.sh\`; see README.md § Benchmarks.\n\n## Latest side-by-side run\n\n${generated}\n`
fs.writeFileSync(out, next)
