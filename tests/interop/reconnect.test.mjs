// Every close code Tandem sends, triggered for real, against the real y-websocket 3.1 provider:
// does it reconnect, or give up for good (`closed`)? Stock y-websocket gives up after any code
// from 4400 to 4499 (`defaultShouldReconnect`); docs/protocol.md's close-code table says which
// side each code is on and why. Run: `cd tests && npm ci && npm run test:interop`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import WebSocket from 'ws'
import { startServer, tempDataDir, removeDir, waitFor } from '../lib/server.mjs'
import { client, synced } from '../lib/yclient.mjs'

const TIMEOUT = 20000



function destroy (clients) {
  for (const c of clients) { c.provider.destroy(); c.doc.destroy() }
}

/**
 * What the provider does after its current connection is closed: resolves to
 * `{ kind: 'closed', code, reason }` when it gives up (y-websocket's `closed` event), or
 * `{ kind: 'reconnected', code }` once a new connection is open (`code` is the first close
 * code seen; later failed attempts while a server is down do not replace it).
 */
function outcome ({ provider }, ms = TIMEOUT) {
  return new Promise((resolve, reject) => {
    let code = null
    const cleanup = () => {
      clearTimeout(timer)
      provider.off('connection-close', onClose)
      provider.off('closed', onClosed)
      provider.off('status', onStatus)
    }
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no outcome in time (close code ${code})`)) }, ms)
    const onClose = (event) => { if (code === null) code = event ? event.code : 'no event' }
    const onClosed = ({ code, reason }) => { cleanup(); resolve({ kind: 'closed', code, reason }) }
    const onStatus = ({ status }) => {
      if (status === 'connected' && code !== null) { cleanup(); resolve({ kind: 'reconnected', code }) }
    }
    provider.on('connection-close', onClose)
    provider.on('closed', onClosed)
    provider.on('status', onStatus)
  })
}

/** Resolves once `/metrics` shows `series` at `value` (re-read until then; the server has no push). */
async function metricReaches (server, series, value, ms = TIMEOUT) {
  const deadline = Date.now() + ms
  for (;;) {
    const text = await (await fetch(`${server.url}/metrics`)).text()
    const line = text.split('\n').find(l => l.startsWith(series + ' '))
    if (line && Number(line.split(' ')[1]) === value) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${series} == ${value}: ${line}`)
    await new Promise(resolve => setImmediate(resolve))
  }
}

async function withServer (args, fn) {
  const dir = tempDataDir()
  const server = await startServer(dir, args)
  try {
    await fn(server, dir)
  } finally {
    await server.stop()
    removeDir(dir)
  }
}

test('4400 (a text frame, malformed input): the provider gives up', async () => {
  await withServer([], async (server) => {
    const c = client(server.wsUrl, 'bad-frame')
    try {
      await synced(c)
      const next = outcome(c)
      c.provider.ws.send('text frames are not part of the protocol')
      const r = await next
      assert.deepEqual([r.kind, r.code], ['closed', 4400])
      assert.match(r.reason, /text frames/)
      assert.equal(c.provider.shouldConnect, false)
    } finally { destroy([c]) }
  })
})

test('4413 (a message over --max-frame-bytes): the provider gives up instead of resending it in a loop', async () => {
  await withServer(['--max-frame-bytes', '65536'], async (server) => {
    const c = client(server.wsUrl, 'oversize')
    try {
      await synced(c)
      const next = outcome(c)
      c.doc.getText('t').insert(0, 'x'.repeat(100 * 1024))
      const r = await next
      assert.deepEqual([r.kind, r.code], ['closed', 4413])
      assert.match(r.reason, /exceeds 65536 bytes/)
    } finally { destroy([c]) }
  })
})

test('4410 (room deleted through the API): the provider gives up, so it cannot bring the room back', async () => {
  await withServer([], async (server) => {
    const c = client(server.wsUrl, 'doomed')
    try {
      await synced(c)
      c.doc.getText('t').insert(0, 'to be deleted')
      const next = outcome(c)
      const res = await fetch(`${server.url}/api/rooms/doomed`, { method: 'DELETE' })
      assert.ok(res.ok, `DELETE answered ${res.status}`)
      const r = await next
      assert.deepEqual([r.kind, r.code], ['closed', 4410])
      // and it did not push its copy back
      const get = await fetch(`${server.url}/api/rooms/doomed`)
      assert.equal(get.status, 404)
    } finally { destroy([c]) }
  })
})

test('4009 (update dependencies still missing after the resync request): the provider reconnects', async () => {
  await withServer([], async (server) => {
    const c = client(server.wsUrl, 'gap')
    try {
      await synced(c)
      // an update whose origin (an earlier clock of its author) nobody has
      const other = new Y.Doc()
      other.clientID = 31337
      other.getText('t').insert(0, 'first')
      const sv = Y.encodeStateVector(other)
      other.getText('t').insert(5, 'second')
      const gapped = Y.encodeStateAsUpdate(other, sv)
      const next = outcome(c)
      // as an update (the server asks for a resync), then as the SyncStep2 answering it
      const asUpdate = encoding.createEncoder()
      encoding.writeVarUint(asUpdate, 0) // messageSync
      syncProtocol.writeUpdate(asUpdate, gapped)
      c.provider.ws.send(encoding.toUint8Array(asUpdate))
      const asStep2 = encoding.createEncoder()
      encoding.writeVarUint(asStep2, 0) // messageSync
      encoding.writeVarUint(asStep2, syncProtocol.messageYjsSyncStep2)
      encoding.writeVarUint8Array(asStep2, gapped)
      c.provider.ws.send(encoding.toUint8Array(asStep2))
      const r = await next
      assert.deepEqual([r.kind, r.code], ['reconnected', 4009])
      await synced(c)
    } finally { destroy([c]) }
  })
})

test('4029 (too slow: stopped reading while the room sent large updates): the provider reconnects and catches up', async () => {
  await withServer(['--send-queue', '16'], async (server) => {
    const slow = client(server.wsUrl, 'busy')
    const writer = client(server.wsUrl, 'busy')
    try {
      await Promise.all([synced(slow), synced(writer)])
      const socket = slow.provider.ws._socket
      socket.pause() // the slow client stops reading
      const next = outcome(slow, 3 * TIMEOUT)
      const text = writer.doc.getText('t')
      for (let i = 0; i < 200; i++) {
        text.insert(text.length, 'x'.repeat(64 * 1024))
        // one per event-loop turn, so the writer keeps reading its echoes
        await new Promise(resolve => setImmediate(resolve))
      }
      // judged too slow and let go while it still reads nothing
      await metricReaches(server, 'tandem_slow_peer_disconnects_total', 1)
      await metricReaches(server, 'tandem_peers_connected', 1)
      socket.resume()
      const r = await next
      // the close frame itself reaches it only if its socket had room for it within 1 s;
      // otherwise the connection just ends (1006): both reconnect
      assert.equal(r.kind, 'reconnected')
      assert.ok(r.code === 4029 || r.code === 1006, `close code ${r.code}`)
      await waitFor('the slow client catches up',
        () => slow.doc.getText('t').length === text.length, [slow.doc])
    } finally { destroy([slow, writer]) }
  })
})

test('4000 (no answer to ping): the provider reconnects', async () => {
  await withServer(['--ping-secs', '1'], async (server) => {
    const c = client(server.wsUrl, 'silent')
    try {
      await synced(c)
      const socket = c.provider.ws._socket
      socket.pause() // no pongs
      const next = outcome(c)
      await metricReaches(server, 'tandem_peers_connected', 0)
      socket.resume()
      const r = await next
      assert.deepEqual([r.kind, r.code], ['reconnected', 4000])
    } finally { destroy([c]) }
  })
})

test('1001 (server shutting down): the provider reconnects to the restarted server', async () => {
  const dir = tempDataDir()
  let server = await startServer(dir)
  const c = client(server.wsUrl, 'restart')
  try {
    await synced(c)
    c.doc.getText('t').insert(0, 'kept')
    const next = outcome(c)
    const { code } = await server.stop()
    assert.equal(code, 0)
    server = await startServer(dir, [], { listen: `127.0.0.1:${server.port}` })
    const r = await next
    assert.deepEqual([r.kind, r.code], ['reconnected', 1001])
    await synced(c)
  } finally {
    destroy([c])
    await server.stop()
    removeDir(dir)
  }
})

test('50 clients each sending bad frames back to back all receive 4400 and its reason, not 1006', async () => {
  await withServer([], async (server) => {
    const closes = await Promise.all(Array.from({ length: 50 }, (_, i) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`${server.wsUrl}/burst`)
      const timer = setTimeout(() => reject(new Error(`client ${i} not closed in time`)), TIMEOUT)
      ws.on('open', () => {
        // text frames (refused by the connection) or unknown message types (refused by the room)
        for (let k = 0; k < 8; k++) ws.send(i % 2 ? Buffer.alloc(16 * 1024, 0x7f) : 'x'.repeat(16 * 1024))
      })
      ws.on('error', () => {}) // a reset shows up as close code 1006
      ws.on('close', (code, reason) => { clearTimeout(timer); resolve({ i, code, reason: reason.toString() }) })
    })))
    const wrong = closes.filter(c => c.code !== 4400 || c.reason === '')
    assert.deepEqual(wrong, [], `${wrong.length} of 50 clients did not see 4400`)
  })
})
