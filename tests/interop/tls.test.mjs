// Stock y-websocket clients over wss:// against `tandem serve --tls-cert --tls-key`, with a
// self-signed certificate made by the openssl CLI for this run. The clients trust exactly that
// certificate (the `ws` polyfill gets it as `ca`); certificate checks stay on.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import https from 'node:https'
import WebSocket from 'ws'
import { startServer, tempDataDir, removeDir, waitFor, selfSignedCert } from '../lib/server.mjs'
import { client, synced } from '../lib/yclient.mjs'

/** A `ws` WebSocket that trusts `ca`, in the shape y-websocket's WebSocketPolyfill expects. */
const trusting = (ca) => class extends WebSocket {
  constructor (url, protocols) { super(url, protocols, { ca }) }
}



function httpsGet (url, ca) {
  return new Promise((resolve, reject) => {
    https.get(url, { ca }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', d => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    }).on('error', reject)
  })
}

test('stock y-websocket clients sync over wss:// with the certificate trusted', async () => {
  const dir = tempDataDir()
  const tls = selfSignedCert(dir)
  const server = await startServer(join(dir, 'data'), ['--tls-cert', tls.cert, '--tls-key', tls.key])
  const WS = trusting(tls.ca)
  const clients = [client(server.wsUrl, 'secure', { WebSocketPolyfill: WS }), client(server.wsUrl, 'secure', { WebSocketPolyfill: WS })]
  try {
    assert.match(server.url, /^https:\/\//)
    assert.match(server.wsUrl, /^wss:\/\//)
    assert.deepEqual(await httpsGet(`${server.url}/healthz`, tls.ca), { status: 200, body: 'ok' })

    await Promise.all(clients.map(synced))
    clients[0].doc.getText('text').insert(0, 'sent over wss')
    clients[1].doc.getMap('map').set('from', 'the other client')
    await waitFor('both edits on both clients', () => clients.every(c =>
      c.doc.getText('text').toString() === 'sent over wss' &&
      c.doc.getMap('map').get('from') === 'the other client'
    ), clients.map(c => c.doc))

    // a late joiner gets the stored state over wss too
    const late = client(server.wsUrl, 'secure', { WebSocketPolyfill: WS })
    clients.push(late)
    await synced(late)
    assert.equal(late.doc.getText('text').toString(), 'sent over wss')
  } finally {
    for (const c of clients) { c.provider.destroy(); c.doc.destroy() }
    const { code } = await server.stop()
    assert.equal(code, 0)
    removeDir(dir)
  }
})

test('a client that does not trust the certificate cannot connect', async () => {
  const dir = tempDataDir()
  const tls = selfSignedCert(dir)
  const server = await startServer(join(dir, 'data'), ['--tls-cert', tls.cert, '--tls-key', tls.key])
  const doubter = client(server.wsUrl, 'secure', { WebSocketPolyfill: WebSocket })
  try {
    const [event] = await new Promise(resolve => doubter.provider.once('connection-error', (...args) => resolve(args)))
    assert.ok(event, 'connection-error carries the failure')
    assert.equal(doubter.provider.synced, false)
    // the server is unharmed: a trusting client still gets through
    assert.deepEqual(await httpsGet(`${server.url}/healthz`, tls.ca), { status: 200, body: 'ok' })
  } finally {
    doubter.provider.destroy()
    doubter.doc.destroy()
    await server.stop()
    removeDir(dir)
  }
})
