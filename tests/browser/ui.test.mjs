// The demo's controls and layout in headless chromium: the room picker (default room, new room,
// join by name, shareable link + copy), the editable name kept across reloads, and a layout that
// fits a laptop and a phone. Screenshots land in test-artifacts/browser/.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startServer, tempDataDir, removeDir } from '../lib/server.mjs'
import {
  launchBrowser, openPage, waitForState, screenshot, typeInEditor, waitForEditorText,
  assertNoPageErrors, setName, addTask
} from '../lib/browser.mjs'

let browser
let server
let dir
before(async () => {
  browser = await launchBrowser()
  dir = tempDataDir()
  server = await startServer(dir)
})
after(async () => {
  await browser?.close()
  await server?.stop()
  if (dir) removeDir(dir)
})

test('the binary serves the committed bundle (it was built after web-demo/dist changed)', async () => {
  const dist = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web-demo', 'dist')
  for (const [path, file] of [['/', 'index.html'], ['/assets/app.js', 'assets/app.js'], ['/assets/app.css', 'assets/app.css']]) {
    const res = await fetch(server.url + path)
    assert.equal(res.status, 200, path)
    const served = Buffer.from(await res.arrayBuffer())
    assert.ok(served.equals(readFileSync(join(dist, file))),
      `${path} differs from web-demo/dist/${file}: rebuild the binary (cargo build --release -p tandem)`)
  }
})

test('room picker: default room, new room, join by name, shareable link', async (t) => {
  const a = await openPage(browser, `${server.url}/`, { permissions: ['clipboard-read', 'clipboard-write'] })
  t.after(() => a.context().close())
  await waitForState(a, 'synced')
  // The default room lands in the URL.
  assert.equal(new URL(a.url()).searchParams.get('room'), 'welcome')
  assert.equal(await a.locator('#room-input').inputValue(), 'welcome')
  assert.equal(await a.locator('#share-link').inputValue(), a.url())
  assert.equal(await a.title(), 'welcome · Tandem')

  // "New room" opens a fresh, empty room with its own link.
  await typeInEditor(a, 'text in the welcome room')
  await a.locator('#new-room').click()
  await a.waitForURL((u) => /^room-[a-z0-9]{8}$/.test(u.searchParams.get('room') || ''))
  await waitForState(a, 'synced')
  const room = new URL(a.url()).searchParams.get('room')
  assert.equal(await a.locator('#room-input').inputValue(), room)
  assert.equal(await a.evaluate(() => window.tandem.editorText()), '')
  const link = await a.locator('#share-link').inputValue()
  assert.equal(link, a.url())

  // Copy puts the link on the clipboard.
  await a.locator('#copy-link').click()
  await a.waitForFunction(() => document.getElementById('copy-link').textContent === 'Copied')
  assert.equal(await a.evaluate(() => navigator.clipboard.readText()), link)

  // Opening the shared link in another window joins the same document.
  const b = await openPage(browser, link)
  t.after(() => b.context().close())
  await waitForState(b, 'synced')
  await typeInEditor(b, 'joined through the link')
  await waitForEditorText(a, 'joined through the link')

  // Joining by name; an invalid name is refused in place.
  await a.locator('#room-input').fill('bad name!')
  await a.locator('#room-input').press('Enter')
  assert.equal(await a.locator('#room-input').evaluate((e) => e.validity.valid), false)
  assert.equal(new URL(a.url()).searchParams.get('room'), room)
  await a.locator('#room-input').fill('welcome')
  await a.locator('#room-join').click()
  await a.waitForURL((u) => u.searchParams.get('room') === 'welcome')
  await waitForState(a, 'synced')
  await waitForEditorText(a, 'text in the welcome room')
  await screenshot(a, 'ui-room-picker')
  assertNoPageErrors([a, b])
})

test('the name is editable and kept across reloads; the colour too', async (t) => {
  const a = await openPage(browser, `${server.url}/?room=names`)
  t.after(() => a.context().close())
  await waitForState(a, 'synced')
  const first = await a.evaluate(() => window.tandem.peers().find((p) => p.self))
  assert.match(first.name, /^[A-Z][a-z]+ [A-Z][a-z]+$/, 'a random two-word name')
  await setName(a, 'Zoë')
  await a.reload()
  await waitForState(a, 'synced')
  assert.equal(await a.locator('#name-input').inputValue(), 'Zoë')
  const me = await a.evaluate(() => window.tandem.peers().find((p) => p.self))
  assert.equal(me.name, 'Zoë')
  assert.equal(me.color, first.color)
  assert.equal(await a.locator('#presence .person', { hasText: 'Zoë' }).locator('.you').count(), 1)
  assertNoPageErrors([a])
})

test('layout fits a laptop and a phone without horizontal scrolling', async (t) => {
  const sizes = { laptop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } }
  const pages = []
  for (const [label, viewport] of Object.entries(sizes)) {
    const p = await openPage(browser, `${server.url}/?room=layout`, { viewport, name: label === 'laptop' ? 'Laptop Lee' : 'Phone Pat' })
    t.after(() => p.context().close())
    await waitForState(p, 'synced')
    pages.push([label, p])
  }
  const [, laptop] = pages[0]
  await typeInEditor(laptop, '# Release checklist\n\nEverything below is shared live with everyone in the room.\n')
  await addTask(laptop, 'Write release notes')
  await addTask(laptop, 'Tag the release')
  for (const [label, p] of pages) {
    await p.waitForFunction(() => document.querySelectorAll('#tasks .task').length === 2 &&
      document.querySelectorAll('#presence .person').length === 2)
    const m = await p.evaluate(() => {
      const r = (id) => document.querySelector(id).getBoundingClientRect()
      return {
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        editor: r('.editor-card'),
        sidebar: r('.sidebar'),
        topbar: r('.topbar')
      }
    })
    assert.ok(m.overflow <= 0, `${label}: page is ${m.overflow}px wider than the window`)
    if (label === 'laptop') {
      assert.ok(m.sidebar.left >= m.editor.right, 'laptop: sidebar beside the editor')
      assert.ok(m.editor.width > 700, 'laptop: the editor gets most of the width')
    } else {
      assert.ok(m.sidebar.top >= m.editor.bottom, 'phone: sidebar below the editor')
      assert.ok(m.editor.width >= 340, 'phone: editor spans the width')
    }
    await screenshot(p, `ui-layout-${label}`)
  }
  assertNoPageErrors(pages.map(([, p]) => p))
})
