// Starts Hocuspocus with its SQLite extension for bench/compare.sh.
// Env: HOST (127.0.0.1), PORT (1234), DB (path of the SQLite file).
// Stock settings otherwise (store debounce included); SIGTERM/SIGINT stop it, storing pending
// documents first (Hocuspocus' stopOnSignals).
import { Server } from '@hocuspocus/server'
import { SQLite } from '@hocuspocus/extension-sqlite'

const server = new Server({
  address: process.env.HOST ?? '127.0.0.1',
  port: Number(process.env.PORT ?? 1234),
  quiet: true,
  extensions: [new SQLite({ database: process.env.DB ?? 'hocuspocus.sqlite' })],
})
await server.listen()
console.log(`hocuspocus listening on ${server.webSocketURL}`)
