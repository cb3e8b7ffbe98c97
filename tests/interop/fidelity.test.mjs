// Differential test (issue 14 §3): what a Yjs client writes comes back unchanged. Random
// documents with every content kind (tests/lib/fidelity.mjs) are pushed over WebSocket, POST v1
// and POST v2, read back over WebSocket (a fresh client's sync), GET v1 and GET v2, and compared
// value for value and type for type with what Yjs itself reads from the same bytes.
// Seeded: TANDEM_TEST_SEED=<n> replays a run; FIDELITY_DOCS sets the document count.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import { startServer, tempDataDir, removeDir, waitFor } from '../lib/server.mjs'
import { rng, randomDoc, legacyJsonDoc, describe, firstDiff } from '../lib/fidelity.mjs'

const SEED = Number(process.env.TANDEM_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
const DOCS = Number(process.env.FIDELITY_DOCS ?? 1000)
console.log(`fidelity: seed ${SEED} (replay with TANDEM_TEST_SEED=${SEED}), ${DOCS} documents`)

const sameSv = (a, b) => Buffer.from(Y.encodeStateVector(a)).equals(Buffer.from(Y.encodeStateVector(b)))

function provider (wsUrl, room, doc = new Y.Doc()) {
  const p = new WebsocketProvider(wsUrl, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
  return { doc, provider: p }
}

function destroy (...clients) {
  for (const c of clients) { c.provider.destroy(); c.doc.destroy() }
}

/** A fresh client's sync of `room`, once it has everything `reference` has. */
async function readOverWs (wsUrl, room, reference) {
  const c = provider(wsUrl, room)
  try {
    await waitFor(`${room} over WebSocket`, () => sameSv(c.doc, reference), [c.doc])
    return Y.encodeStateAsUpdate(c.doc)
  } finally {
    destroy(c)
  }
}

/** Sends every update as a raw y-protocols sync `update` frame on one connection. */
async function pushOverWs (wsUrl, room, updates) {
  const ws = new WebSocket(`${wsUrl}/${room}`)
  ws.binaryType = 'arraybuffer'
  let closed = null
  ws.on('close', (code, reason) => { closed = `${code} ${reason}` })
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  for (const u of updates) {
    const enc = encoding.createEncoder()
    encoding.writeVarUint(enc, 0) // messageSync
    syncProtocol.writeUpdate(enc, u)
    ws.send(encoding.toUint8Array(enc))
  }
  return { ws, closed: () => closed }
}

async function post (url, room, body, v2) {
  const res = await fetch(`${url}/api/rooms/${room}/update${v2 ? '?encoding=v2' : ''}`, {
    method: 'POST', body, headers: { 'content-type': 'application/octet-stream' }
  })
  const text = await res.text()
  assert.equal(res.status, 200, `POST ${v2 ? 'v2' : 'v1'} to ${room}: ${res.status} ${text}`)
}

async function getUpdate (url, room, v2) {
  const res = await fetch(`${url}/api/rooms/${room}/update${v2 ? '?encoding=v2' : ''}`).catch(e => {
    throw new Error(`GET ${room} ${v2 ? 'v2' : 'v1'}: ${e.message} (${e.cause?.message ?? e.cause})`)
  })
  assert.equal(res.status, 200, `GET ${room} ${v2 ? 'v2' : 'v1'}: ${res.status}`)
  return new Uint8Array(await res.arrayBuffer())
}

/** Runs `f` over `items` with at most `n` in flight. */
async function pool (items, n, f) {
  let next = 0
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) { const i = next++; await f(items[i], i) }
  }))
}

function compare (what, got, reference, roots) {
  const doc = new Y.Doc()
  try {
    what.endsWith('v2') ? Y.applyUpdateV2(doc, got) : Y.applyUpdate(doc, got)
  } catch (e) {
    return `${what}: Yjs cannot apply it: ${e.message}`
  }
  const d = firstDiff(describe(doc, roots), describe(reference, roots))
  return d && `${what}: ${d}`
}

test(`${DOCS} random documents come back value for value over WebSocket, GET v1 and GET v2`, async () => {
  const r = rng(SEED)
  const docs = Array.from({ length: DOCS }, (_, i) => i % 10 === 9 ? legacyJsonDoc(r, i) : randomDoc(r, i))
  const roots = docs.flatMap(d => d.roots)
  // Yjs' own reading of the same bytes
  const reference = new Y.Doc()
  for (const d of docs) Y.applyUpdate(reference, d.update)

  const dir = tempDataDir()
  const server = await startServer(dir)
  try {
    const rooms = { ws: `fid-ws-${SEED}`, post1: `fid-post1-${SEED}`, post2: `fid-post2-${SEED}` }
    const pushed = await pushOverWs(server.wsUrl, rooms.ws, docs.map(d => d.update))
    await pool(docs, 8, d => post(server.url, rooms.post1, d.update, false))
    await pool(docs, 8, d => post(server.url, rooms.post2, Y.convertUpdateFormatV1ToV2(d.update), true))

    const diffs = []
    for (const [how, room] of Object.entries(rooms)) {
      const ws = await readOverWs(server.wsUrl, room, reference).catch(e => {
        throw new Error(`${e.message} (pushed over WebSocket, connection closed: ${pushed.closed()})`)
      })
      diffs.push(compare(`pushed by ${how}, read over WebSocket`, ws, reference, roots))
      diffs.push(compare(`pushed by ${how}, GET v1`, await getUpdate(server.url, room, false), reference, roots))
      diffs.push(compare(`pushed by ${how}, GET v2`, await getUpdate(server.url, room, true), reference, roots))
    }
    pushed.ws.close()
    const found = diffs.filter(Boolean)
    assert.deepEqual(found, [], `seed ${SEED}: ${found.length} differences`)

    // GET /json renders every kind without failing; a BigInt is a JSON integer (its digits)
    const res = await fetch(`${server.url}/api/rooms/${rooms.post1}/json`)
    assert.equal(res.status, 200, await res.clone().text())
    JSON.parse(await res.text())
  } finally {
    await server.stop()
    removeDir(dir)
  }
})

const BIGS = { small: 5n, big: 2n ** 62n, negative: -(2n ** 63n) }

function checkBigints (map, where) {
  for (const [k, v] of Object.entries(BIGS)) {
    assert.equal(typeof map.get(k), 'bigint', `${where}: ${k} is ${typeof map.get(k)}`)
    assert.equal(map.get(k), v, `${where}: ${k}`)
  }
  assert.ok(Object.is(map.get('negZero'), -0), `${where}: -0 came back as ${map.get('negZero')}`)
}

test('BigInt and -0 reach a live peer, survive compaction and a restart, and render in /json', async () => {
  const dir = tempDataDir()
  let server = await startServer(dir, ['--compact-entries', '1'])
  const room = `bigint-${SEED}`
  try {
    const a = provider(server.wsUrl, room)
    const b = provider(server.wsUrl, room)
    try {
      await Promise.all([a, b].map(c => new Promise(resolve => c.provider.once('sync', resolve))))
      const map = a.doc.getMap('m')
      a.doc.transact(() => {
        for (const [k, v] of Object.entries(BIGS)) map.set(k, v)
        map.set('negZero', -0)
      })
      // a few more updates so the log compacts past the first one
      for (let i = 0; i < 3; i++) map.set(`n${i}`, i)
      const mb = b.doc.getMap('m')
      await waitFor('the broadcast', () => mb.get('n2') === 2 && mb.has('negZero'), [b.doc])
      checkBigints(mb, 'broadcast to a live peer')
    } finally {
      destroy(a, b)
    }
    assert.equal((await server.stop()).code, 0)
    server = await startServer(dir, ['--compact-entries', '1'])
    for (const v2 of [false, true]) {
      const doc = new Y.Doc()
      const u = await getUpdate(server.url, room, v2)
      v2 ? Y.applyUpdateV2(doc, u) : Y.applyUpdate(doc, u)
      checkBigints(doc.getMap('m'), `GET ${v2 ? 'v2' : 'v1'} after compaction and restart`)
    }
    const reference = new Y.Doc()
    Y.applyUpdate(reference, await getUpdate(server.url, room, false))
    const synced = new Y.Doc()
    Y.applyUpdate(synced, await readOverWs(server.wsUrl, room, reference))
    checkBigints(synced.getMap('m'), 'WebSocket sync after restart')
    const json = await (await fetch(`${server.url}/api/rooms/${room}/json`)).text()
    // exact digits, also beyond 2^53
    assert.match(json, /"big":4611686018427387904\b/)
    assert.match(json, /"negative":-9223372036854775808\b/)
  } finally {
    await server.stop()
    removeDir(dir)
  }
})
