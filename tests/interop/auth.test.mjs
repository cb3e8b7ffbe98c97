// Signed room tokens with the stock npm client: yjs 13.6 + y-websocket 3 WebsocketProvider
// passing `params: { token }`, against the real tandem binary started with --auth-secret and
// tokens minted by the real `tandem token` command.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { startServer, tempDataDir, removeDir, waitFor, TANDEM_BIN } from '../lib/server.mjs'
import { synced } from '../lib/yclient.mjs'

const SECRET = 'interop-auth-secret'
const ROOM = 'auth-room'
const MESSAGE_AUTH = 2 // y-protocols message type of auth messages

/** `tandem token ...` with the secret in TANDEM_AUTH_SECRET, as an operator would run it. */
function mint (room, access, sub) {
  const out = execFileSync(TANDEM_BIN, ['token', '--room', room, '--access', access, '--ttl', '1h', '--sub', sub], {
    env: { ...process.env, TANDEM_AUTH_SECRET: SECRET },
    encoding: 'utf8'
  })
  const token = out.trim()
  assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, `tandem token printed a compact JWT: ${out}`)
  return token
}

/**
 * A stock provider with a token. Its auth messages (permission denied) are re-emitted as a
 * `permission-denied` event so tests can wait on them; the stock handler still runs.
 */
function client (wsUrl, token) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(wsUrl, ROOM, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    params: { token }
  })
  const denied = []
  const stock = provider.messageHandlers[MESSAGE_AUTH]
  provider.messageHandlers[MESSAGE_AUTH] = (encoder, decoder, p, emitSynced, type) => {
    const peek = decoder.arr.subarray(decoder.pos)
    // [0 = permission denied][varstring reason]: skip the type byte and the length varuint
    if (peek[0] === 0) {
      let i = 1
      while (peek[i] & 0x80) i++
      denied.push(Buffer.from(peek.subarray(i + 1)).toString('utf8'))
    }
    const warn = console.warn
    console.warn = () => {} // the stock handler only logs; keep the test output clean
    try { stock(encoder, decoder, p, emitSynced, type) } finally { console.warn = warn }
    provider.emit('permission-denied', [denied[denied.length - 1]])
  }
  return { doc, provider, denied, text: () => doc.getText('text').toString() }
}


function destroy (clients) {
  for (const c of clients) { c.provider.destroy(); c.doc.destroy() }
}

async function serverText (server, adminToken) {
  const res = await fetch(`${server.url}/api/rooms/${ROOM}/json`, {
    headers: { authorization: `Bearer ${adminToken}` }
  })
  assert.equal(res.status, 200, `GET json: ${res.status}`)
  return (await res.json()).text ?? ''
}

test('tokens from `tandem token`: writers sync, a reader only receives, a wrong-room token never connects', async () => {
  const dir = tempDataDir()
  const server = await startServer(dir, ['--auth-secret', SECRET])
  const admin = mint(ROOM, 'admin', 'ops')
  const a = client(server.wsUrl, mint(ROOM, 'write', 'alice'))
  const b = client(server.wsUrl, mint(ROOM, 'write', 'bob'))
  const clients = [a, b]
  try {
    // two writers sync text both ways
    await Promise.all([synced(a), synced(b)])
    a.doc.getText('text').insert(0, 'hello from a')
    await waitFor('b sees a', () => b.text() === 'hello from a', [b.doc])
    b.doc.getText('text').insert(b.text().length, ', and b')
    await waitFor('a sees b', () => a.text() === 'hello from a, and b', [a.doc])

    // a read-only provider receives the document
    const r = client(server.wsUrl, mint(ROOM, 'read', 'reader'))
    clients.push(r)
    await synced(r)
    await waitFor('reader gets the document', () => r.text() === a.text(), [r.doc])

    // its own edit is refused: the server says so with the auth message...
    r.doc.getText('text').insert(0, 'EVIL ')
    await waitFor('permission denied to the reader', () => r.denied.length > 0, [r.provider], ['permission-denied'])
    assert.match(r.denied[0], /read-only/)
    // ...and it reaches nobody. A writer's later edit passes the same room after the refused
    // one, so once it has arrived everywhere a forwarded "EVIL" would have arrived first.
    a.doc.getText('text').insert(a.text().length, ' [fence]')
    const expected = 'hello from a, and b [fence]'
    await waitFor('fence at b', () => b.text() === expected, [b.doc])
    await waitFor('reader still receives writers\' edits', () => r.text().endsWith(' [fence]'), [r.doc])
    assert.equal(a.text(), expected)
    assert.equal(r.text(), 'EVIL ' + expected, 'the reader keeps its local edit, unsynced')
    assert.equal(await serverText(server, admin), expected, 'server state has no reader edit')
    // the reader's state vector never made it into the room: the writers know no reader clock
    const sv = Y.decodeStateVector(Y.encodeStateVector(a.doc))
    assert.ok(!sv.has(r.doc.clientID), 'writer has no update from the reader')

    // a token for another room: the upgrade is refused, the provider never connects
    const w = client(server.wsUrl, mint('another-room', 'write', 'mallory'))
    clients.push(w)
    const errors = []
    const statuses = []
    let closes = 0
    w.provider.on('connection-error', (ev) => errors.push(String(ev?.message ?? ev)))
    w.provider.on('status', ({ status }) => statuses.push(status))
    w.provider.on('connection-close', () => { closes++ })
    // two refused attempts (the provider retries with back-off)
    await waitFor('two refused connection attempts', () => closes >= 2, [w.provider], ['connection-close'])
    w.provider.disconnect()
    assert.ok(errors.length >= 2, `connection errors: ${errors}`)
    for (const e of errors) assert.match(e, /Unexpected server response: 40[13]/)
    assert.ok(!statuses.includes('connected'), `statuses: ${statuses}`)
    assert.equal(w.text(), '', 'no document reached the wrong-room provider')
  } finally {
    destroy(clients)
    await server.stop()
    removeDir(dir)
  }
})
