// The demo over HTTPS: `tandem serve --tls-cert --tls-key` with a self-signed certificate made
// by the openssl CLI for this run; chromium trusts exactly that key (by its SPKI hash), so the
// page loads over https:// and opens its WebSocket over wss:// with certificate checks on.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { startServer, tempDataDir, removeDir, selfSignedCert } from '../lib/server.mjs'
import {
  CHROMIUM_ARGS, openPage, waitForState, typeInEditor, waitForEditorText, assertNoPageErrors
} from '../lib/browser.mjs'

test('the demo loads over https and two pages sync over wss', async (t) => {
  const dir = tempDataDir()
  const tls = selfSignedCert(dir)
  const server = await startServer(join(dir, 'data'), ['--tls-cert', tls.cert, '--tls-key', tls.key])
  const browser = await chromium.launch({
    executablePath: process.env.TANDEM_CHROMIUM || '/usr/bin/chromium',
    args: [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${tls.spkiHash}`],
    headless: true
  })
  const pages = []
  t.after(async () => {
    await browser.close()
    await server.stop()
    removeDir(dir)
  })
  assert.match(server.url, /^https:\/\//)
  for (const name of ['Alice', 'Bob']) {
    pages.push(await openPage(browser, `${server.url}/?room=secure`, { name }))
  }
  // the server speaks only TLS (and chromium refuses ws:// from an https page), so reaching
  // "synced" means the demo derived wss:// from the page's origin
  await Promise.all(pages.map(p => waitForState(p, 'synced')))
  for (const p of pages) assert.equal(await p.evaluate(() => location.protocol), 'https:')
  const line = 'typed on an https page\n'
  await typeInEditor(pages[0], line)
  await waitForEditorText(pages[1], line)
  assertNoPageErrors(pages)
})
