// Interop with the real npm client stack: yjs 13.6 + y-websocket 3 WebsocketProvider on Node
// with `ws`, against the real tandem binary. Run: `cd tests && npm ci && npm run test:interop`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { startServer, tempDataDir, removeDir, waitFor } from '../lib/server.mjs'
import { client, synced } from '../lib/yclient.mjs'

// JSON with sorted keys: map key order reflects local insertion order, which legitimately
// differs between replicas
const canonical = (v) => Array.isArray(v)
  ? v.map(canonical)
  : v && typeof v === 'object'
    ? Object.fromEntries(Object.keys(v).sort().map(k => [k, canonical(v[k])]))
    : v

const snapshot = ({ doc }) => JSON.stringify(canonical({
  text: doc.getText('text').toString(),
  map: doc.getMap('map').toJSON(),
  array: doc.getArray('array').toJSON()
}))

const sameState = (clients) => {
  const svs = clients.map(c => Buffer.from(Y.encodeStateVector(c.doc)).toString('base64'))
  const snaps = clients.map(snapshot)
  return svs.every(s => s === svs[0]) && snaps.every(s => s === snaps[0])
}

async function converge (clients, what) {
  await waitFor(what, () => sameState(clients), clients.map(c => c.doc))
}

function destroy (clients) {
  // destroying the doc also stops the awareness timer the provider created
  for (const c of clients) { c.provider.destroy(); c.doc.destroy() }
}

test('several clients with concurrent text, map and array edits converge', async () => {
  const dir = tempDataDir()
  const server = await startServer(dir)
  const clients = [0, 1, 2, 3].map(() => client(server.wsUrl, 'concurrent'))
  try {
    await Promise.all(clients.map(synced))
    clients.forEach((c, i) => {
      c.doc.transact(() => {
        c.doc.getText('text').insert(0, `<${i}>`)
        c.doc.getMap('map').set('shared', i)
        c.doc.getMap('map').set(`own-${i}`, { nested: [i, 'x'] })
        c.doc.getArray('array').insert(0, [i, `item-${i}`])
      })
    })
    // a second round on top of whatever has arrived so far
    clients.forEach((c, i) => {
      const t = c.doc.getText('text')
      t.insert(t.length, `(${i})`)
      if (c.doc.getArray('array').length > 1) c.doc.getArray('array').delete(0, 1)
    })
    await converge(clients, 'convergence')
    const text = clients[0].doc.getText('text').toString()
    for (let i = 0; i < 4; i++) {
      assert.ok(text.includes(`<${i}>`) && text.includes(`(${i})`), `text has client ${i}'s input: ${text}`)
      assert.deepEqual(clients[0].doc.getMap('map').get(`own-${i}`), { nested: [i, 'x'] })
    }
  } finally {
    destroy(clients)
    await server.stop()
    removeDir(dir)
  }
})

test('offline edits merge on reconnect', async () => {
  const dir = tempDataDir()
  const server = await startServer(dir)
  const a = client(server.wsUrl, 'offline')
  const b = client(server.wsUrl, 'offline')
  try {
    await Promise.all([synced(a), synced(b)])
    a.doc.getText('text').insert(0, 'base ')
    await converge([a, b], 'base text')
    a.provider.disconnect()
    a.doc.getText('text').insert(0, 'offline-a ')
    a.doc.getArray('array').push(['from a'])
    b.doc.getText('text').insert(b.doc.getText('text').length, 'online-b')
    b.doc.getMap('map').set('k', 'b')
    a.doc.getMap('map').set('k2', 'a')
    a.provider.connect()
    await converge([a, b], 'convergence after reconnect')
    const text = b.doc.getText('text').toString()
    assert.ok(text.includes('offline-a') && text.includes('online-b') && text.includes('base'), text)
    assert.deepEqual(b.doc.getArray('array').toJSON(), ['from a'])
    assert.deepEqual(a.doc.getMap('map').toJSON(), { k: 'b', k2: 'a' })
  } finally {
    destroy([a, b])
    await server.stop()
    removeDir(dir)
  }
})

test('awareness states travel between npm clients and vanish when one leaves', async () => {
  const dir = tempDataDir()
  const server = await startServer(dir)
  const a = client(server.wsUrl, 'presence')
  const b = client(server.wsUrl, 'presence')
  try {
    await Promise.all([synced(a), synced(b)])
    a.provider.awareness.setLocalStateField('user', { name: 'Ada', color: '#f00' })
    const aId = a.doc.clientID
    await waitFor('a seen by b', () => b.provider.awareness.getStates().get(aId)?.user?.name === 'Ada',
      [b.provider.awareness], ['change'])
    destroy([a])
    await waitFor('a removed at b', () => !b.provider.awareness.getStates().has(aId),
      [b.provider.awareness], ['change'])
  } finally {
    destroy([b])
    await server.stop()
    removeDir(dir)
  }
})

for (const how of ['stop', 'kill']) {
  test(`content is intact after a server restart (${how === 'stop' ? 'SIGTERM' : 'SIGKILL'})`, async () => {
    const dir = tempDataDir()
    let server = await startServer(dir)
    const a = client(server.wsUrl, 'durable')
    const b = client(server.wsUrl, 'durable')
    let expected
    try {
      await Promise.all([synced(a), synced(b)])
      a.doc.getText('text').insert(0, 'written before the restart')
      b.doc.getMap('map').set('answer', 42)
      b.doc.getArray('array').push([1, 2, 3])
      // both see both: the server applied, logged and flushed everything (sync durability)
      await converge([a, b], 'pre-restart convergence')
      expected = snapshot(a)
    } finally {
      destroy([a, b])
    }
    const status = await server[how]()
    if (how === 'stop') assert.equal(status.code, 0)
    server = await startServer(dir)
    const c = client(server.wsUrl, 'durable')
    try {
      await synced(c)
      assert.equal(snapshot(c), expected)
    } finally {
      destroy([c])
      await server.stop()
      removeDir(dir)
    }
  })
}
