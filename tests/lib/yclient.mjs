// A stock y-websocket client (yjs + y-websocket 3 on Node's `ws`) and the wait for its first
// sync: what every interop suite starts from.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

/** A fresh `Y.Doc` with a stock provider for `room` (no BroadcastChannel: tabs sync only via the server). */
export function client (wsUrl, room, { WebSocketPolyfill = WebSocket, params } = {}) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(wsUrl, room, doc, { WebSocketPolyfill, disableBc: true, params })
  return { doc, provider }
}

/** Resolves once the provider reports `synced` (at once if it already has). */
export const synced = ({ provider }) => provider.synced
  ? Promise.resolve()
  : new Promise(resolve => provider.on('sync', function on (s) { if (s) { provider.off('sync', on); resolve() } }))
