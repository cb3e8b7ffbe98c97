// The demo in headless Debian chromium against the real binary: typing, presence, offline
// editing, persistence across reloads and server restarts, and the shared task list.
// Every page is its own browser context (its own storage: a separate person). Typing and
// clicking go through the real UI; state is read from the DOM or the page's read-only
// `window.tandem` handle. Screenshots land in test-artifacts/browser/.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { startServer, tempDataDir, removeDir } from '../lib/server.mjs'
import {
  launchBrowser, openPage, waitForState, screenshot, typeInEditor, editorText,
  waitForEditorToContain, waitForEditorText, shownTasks, addTask, taskItem, assertNoPageErrors,
  setName
} from '../lib/browser.mjs'

let browser
before(async () => { browser = await launchBrowser() })
after(async () => { await browser?.close() })

/** A server with a fresh data dir, pages opened on it, and cleanup that checks for errors. */
async function setup (t) {
  const dir = tempDataDir()
  const state = { dir, server: await startServer(dir), pages: [] }
  state.open = async (room, opts = {}) => {
    const page = await openPage(browser, `${state.server.url}/?room=${room}`, opts)
    state.pages.push(page)
    await waitForState(page, 'synced')
    return page
  }
  t.after(async () => {
    for (const p of state.pages) await p.context().close().catch(() => {})
    await state.server.stop()
    removeDir(dir)
  })
  return state
}

async function shoot (page, name) {
  const path = await screenshot(page, name)
  assert.ok(statSync(path).size > 5000, `${path} looks empty`)
}

test('1. two pages typing concurrently end with identical text holding both inputs', async (t) => {
  const s = await setup(t)
  const a = await s.open('concurrent', { name: 'Alice' })
  const b = await s.open('concurrent', { name: 'Bob' })
  const fromA = 'Alice types this line at the same time.\n'
  const fromB = 'Bob writes another one concurrently!'
  // Bob types at the start and Alice at the end. In an empty document those can be one spot:
  // if Bob's first letters arrive before Alice's Control+End, both carets sit after them and
  // the two inputs interleave (converged and complete, but neither stays contiguous). A line
  // break typed first keeps the two places apart.
  await typeInEditor(a, '\n')
  await waitForEditorText(b, '\n')
  await Promise.all([typeInEditor(a, fromA, 'end'), typeInEditor(b, fromB, 'start')])
  await waitForEditorToContain(a, [fromA, fromB])
  await waitForEditorToContain(b, [fromA, fromB])
  const final = await editorText(a)
  await waitForEditorText(b, final)
  assert.equal(final, `${fromB}\n${fromA}`)
  assert.equal(final.length, fromA.length + fromB.length + 1)
  for (const p of [a, b]) {
    // The rendered lines match the document (remote caret labels are not text).
    const lines = await p.$$eval('.cm-line', (ls) => ls.length)
    assert.equal(lines, final.split('\n').length)
    assert.equal(await p.evaluate(() => window.tandem.text()), final)
    assert.equal(await p.locator('#doc-meta').textContent(), `3 lines · ${final.length} chars`)
  }
  await shoot(a, '1-concurrent-typing-alice')
  await shoot(b, '1-concurrent-typing-bob')
  assertNoPageErrors(s.pages)
})

test('2. each page shows the other user: presence list and a named caret in their colour', async (t) => {
  const s = await setup(t)
  const a = await s.open('presence', { name: 'Alice' })
  const b = await s.open('presence', { name: 'Bob' })
  await typeInEditor(a, 'Hello from Alice\n')
  await waitForEditorToContain(b, ['Hello from Alice'])
  await typeInEditor(b, 'and Bob')
  await waitForEditorToContain(a, ['and Bob'])

  for (const [page, me, other] of [[a, 'Alice', 'Bob'], [b, 'Bob', 'Alice']]) {
    await page.waitForFunction((names) => {
      const shown = [...document.querySelectorAll('#presence .person-name')].map((e) => e.textContent)
      return shown.length === 2 && names.every((n) => shown.includes(n))
    }, [me, other])
    assert.equal(await page.locator('#presence-count').textContent(), '2')
    assert.equal(await page.locator('#presence .person', { hasText: me }).locator('.you').count(), 1)
    // The other user's caret is drawn with their name, in the colour their presence shows.
    await page.waitForFunction((n) =>
      [...document.querySelectorAll('.cm-ySelectionInfo')].some((e) => e.textContent === n), other)
    const otherColor = await page.evaluate((n) => window.tandem.peers().find((p) => p.name === n).color, other)
    const caretColor = await page.locator('.cm-ySelectionCaret', { hasText: other })
      .evaluate((e) => getComputedStyle(e).backgroundColor)
    const hex = otherColor.replace('#', '')
    const rgb = `rgb(${parseInt(hex.slice(0, 2), 16)}, ${parseInt(hex.slice(2, 4), 16)}, ${parseInt(hex.slice(4, 6), 16)})`
    assert.equal(caretColor, rgb)
    const avatarColor = await page.locator('#presence .person', { hasText: other }).locator('.avatar')
      .evaluate((e) => getComputedStyle(e).backgroundColor)
    assert.equal(avatarColor, rgb)
  }

  // A selection shows up on the other page too, and a renamed user is renamed everywhere.
  await b.locator('.cm-content').click()
  await b.keyboard.press('Control+A')
  await a.waitForFunction(() => document.querySelectorAll('.cm-ySelection').length > 0)
  await setName(a, 'Alice Liddell')
  await b.waitForFunction(() => [...document.querySelectorAll('#presence .person-name')]
    .some((e) => e.textContent === 'Alice Liddell'))
  await shoot(a, '2-presence-alice')
  await shoot(b, '2-presence-bob')

  // Leaving removes the user from the other page's list.
  await b.context().close()
  s.pages.splice(s.pages.indexOf(b), 1)
  await a.waitForFunction(() => document.querySelectorAll('#presence .person').length === 1)
  assertNoPageErrors([...s.pages, b])
})

test('3. offline toggle: both edit while one is offline, then they converge', async (t) => {
  const s = await setup(t)
  const a = await s.open('offline', { name: 'Alice' })
  const b = await s.open('offline', { name: 'Bob' })
  await typeInEditor(a, 'shared start\n')
  await waitForEditorToContain(b, ['shared start'])

  await a.locator('#offline-toggle').click()
  await waitForState(a, 'offline')
  assert.equal(await a.locator('#status').textContent(), 'Offline')
  assert.equal(await a.locator('#offline-toggle').getAttribute('aria-pressed'), 'true')
  assert.ok(await a.locator('#offline-note').isVisible())
  // Bob sees Alice leave; Alice keeps editing on her own.
  await b.waitForFunction(() => document.querySelectorAll('#presence .person').length === 1)

  const offlineA = 'written by Alice while offline\n'
  const onlineB = 'written by Bob while Alice is away\n'
  await Promise.all([typeInEditor(a, offlineA, 'end'), typeInEditor(b, onlineB, 'start')])
  await waitForEditorToContain(a, [offlineA])
  await waitForEditorToContain(b, [onlineB])
  // Nothing crosses while Alice is offline.
  assert.ok(!(await editorText(b)).includes(offlineA))
  assert.ok(!(await editorText(a)).includes(onlineB))
  await shoot(a, '3-offline-alice-before-merge')

  await a.locator('#offline-toggle').click()
  await waitForState(a, 'synced')
  assert.ok(!(await a.locator('#offline-note').isVisible()))
  await waitForEditorToContain(a, [offlineA, onlineB, 'shared start'])
  await waitForEditorToContain(b, [offlineA, onlineB, 'shared start'])
  const final = await editorText(a)
  await waitForEditorText(b, final)
  // Alice is back in Bob's list right after reconnecting, not only at the next 15 s awareness
  // renewal (the deadline is well below it).
  await b.waitForFunction(() => document.querySelectorAll('#presence .person').length === 2, null, { timeout: 8000 })
  await shoot(a, '3-offline-alice-after-merge')
  await shoot(b, '3-offline-bob-after-merge')
  assertNoPageErrors(s.pages)
})

test('4. content survives a page reload, a crash and a restart of the server', async (t) => {
  const s = await setup(t)
  const a = await s.open('durable', { name: 'Alice' })
  const text = 'This paragraph must outlive reloads and restarts.\n'
  await typeInEditor(a, text)
  // Another person receiving it means the server has it on disk (persist before send).
  const b = await s.open('durable', { name: 'Bob' })
  await waitForEditorText(b, text)
  await b.context().close()

  await a.reload()
  await waitForState(a, 'synced')
  await waitForEditorText(a, text)
  await a.context().close()

  // No page holds the text any more: after a crash (SIGKILL) and restart it comes from disk.
  const { port } = s.server
  await s.server.kill()
  s.server = await startServer(s.dir, [], { listen: `127.0.0.1:${port}` })
  const c = await s.open('durable', { name: 'Carol' })
  await waitForEditorText(c, text)

  // Restart the server under an open page: it reconnects by itself, and a reload still shows
  // everything. Refused connections while the server is down are expected console errors.
  c.allowErrors.push(/^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/durable' failed/)
  await s.server.stop()
  await c.waitForFunction(() => document.getElementById('status').dataset.state !== 'synced')
  s.server = await startServer(s.dir, [], { listen: `127.0.0.1:${port}` })
  await waitForState(c, 'synced')
  const more = 'Added after the restart.\n'
  await typeInEditor(c, more)
  await waitForEditorText(c, text + more)
  const d = await s.open('durable', { name: 'Dave' })
  await waitForEditorText(d, text + more)
  await c.reload()
  await waitForState(c, 'synced')
  await waitForEditorText(c, text + more)
  await shoot(c, '4-after-restart-and-reload')
  assertNoPageErrors([a, b, ...s.pages])
})

test('5. the task list converges across concurrent adds, checks, moves and deletes', async (t) => {
  const s = await setup(t)
  const a = await s.open('tasks', { name: 'Alice' })
  const b = await s.open('tasks', { name: 'Bob' })

  // Concurrent adds, both online.
  await Promise.all([
    (async () => { for (const x of ['A1', 'A2', 'A3']) await addTask(a, x) })(),
    (async () => { for (const x of ['B1', 'B2', 'B3']) await addTask(b, x) })()
  ])
  await a.waitForFunction(() => document.querySelectorAll('#tasks .task').length === 6)
  await b.waitForFunction(() => document.querySelectorAll('#tasks .task').length === 6)
  const listA = await shownTasks(a)
  await b.waitForFunction((want) => JSON.stringify([...document.querySelectorAll('#tasks .task')]
    .map((li) => li.querySelector('.task-text').textContent)) === want, JSON.stringify(listA.map((x) => x.text)))
  assert.deepEqual(listA.map((x) => x.text).sort(), ['A1', 'A2', 'A3', 'B1', 'B2', 'B3'])
  const L = listA.map((x) => x.text)

  // Conflicting edits: Bob goes offline, both change the same tasks, Bob comes back.
  await b.locator('#offline-toggle').click()
  await waitForState(b, 'offline')
  // Alice: check L0, delete L1, check L3, add A4.
  await taskItem(a, L[0]).locator('.task-check').check()
  await taskItem(a, L[1]).locator('.task-delete').click()
  await taskItem(a, L[3]).locator('.task-check').check()
  await addTask(a, 'A4')
  // Bob: delete L0, check L1, move L3 up (above L2), check L5.
  await taskItem(b, L[0]).locator('.task-delete').click()
  await taskItem(b, L[1]).locator('.task-check').check()
  await taskItem(b, L[3]).locator('.task-up').click()
  await taskItem(b, L[5]).locator('.task-check').check()
  assert.deepEqual((await shownTasks(b)).map((x) => x.text), [L[1], L[3], L[2], L[4], L[5]])
  await shoot(b, '5-tasks-bob-offline')

  await b.locator('#offline-toggle').click()
  await waitForState(b, 'synced')
  // Deleted beats checked; a move and a concurrent check of the same task both survive.
  const expected = [
    { text: L[3], done: true },
    { text: L[2], done: false },
    { text: L[4], done: false },
    { text: L[5], done: true },
    { text: 'A4', done: false }
  ]
  for (const p of [a, b]) {
    await p.waitForFunction((want) => JSON.stringify([...document.querySelectorAll('#tasks .task')]
      .map((li) => ({ text: li.querySelector('.task-text').textContent, done: li.querySelector('.task-check').checked }))) === want,
    JSON.stringify(expected))
  }
  assert.equal(await a.locator('#tasks-count').textContent(), '3/5')

  // And once more online: a move down and a delete converge too.
  await taskItem(a, L[3]).locator('.task-down').click()
  await taskItem(b, 'A4').locator('.task-delete').click()
  const final = [expected[1], expected[0], expected[2], expected[3]]
  for (const p of [a, b]) {
    await p.waitForFunction((want) => JSON.stringify([...document.querySelectorAll('#tasks .task')]
      .map((li) => ({ text: li.querySelector('.task-text').textContent, done: li.querySelector('.task-check').checked }))) === want,
    JSON.stringify(final))
  }
  await shoot(a, '5-tasks-alice-converged')
  await shoot(b, '5-tasks-bob-converged')
  assertNoPageErrors(s.pages)
})

test('undo reverts only your own edits, never the other person\'s', async (t) => {
  const s = await setup(t)
  const a = await s.open('undo', { name: 'Alice' })
  const b = await s.open('undo', { name: 'Bob' })
  await typeInEditor(a, 'alice-line\n')
  await waitForEditorText(b, 'alice-line\n')
  await typeInEditor(b, 'bob-line\n')
  await waitForEditorText(a, 'alice-line\nbob-line\n')
  await a.locator('.cm-content').click()
  // Typing is grouped into undo steps by time, so press until Alice's line is gone (a few
  // presses at most); Bob's line must survive every one of them.
  const pressUntil = async (key, want) => {
    for (let i = 0; i < 30 && (await editorText(a)) !== want; i++) {
      await a.keyboard.press(key)
      assert.ok((await editorText(a)).includes('bob-line\n'), `${key} touched Bob's edit`)
    }
    assert.equal(await editorText(a), want)
  }
  await pressUntil('Control+z', 'bob-line\n')
  await waitForEditorText(b, 'bob-line\n')
  await pressUntil('Control+y', 'alice-line\nbob-line\n')
  await waitForEditorText(b, 'alice-line\nbob-line\n')
  assertNoPageErrors(s.pages)
})
