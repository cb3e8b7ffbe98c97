// Headless Debian chromium driven by playwright-core, for the browser suite. Never downloads a
// browser: it launches /usr/bin/chromium (TANDEM_CHROMIUM overrides the path).
import { chromium } from 'playwright-core'
import { mkdirSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const ARTIFACTS = join(repo, 'test-artifacts', 'browser')

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'
]

export function launchBrowser () {
  return chromium.launch({
    executablePath: process.env.TANDEM_CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    headless: true
  })
}

/**
 * Opens a page in its own browser context (own storage: a separate user) and records every
 * console error and uncaught page error in `page.errors`.
 * `allow` is a list of regexps for console errors the caller expects (e.g. refused connections
 * while the server is deliberately down).
 */
export async function openPage (browser, url, { viewport = { width: 1280, height: 800 }, name, permissions = [] } = {}) {
  const context = await browser.newContext({ viewport, permissions })
  const page = await context.newPage()
  page.label = name || 'page'
  page.errors = []
  page.allowErrors = []
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return
    const text = msg.text()
    if (page.allowErrors.some((re) => re.test(text))) return
    page.errors.push(`console.error: ${text}`)
  })
  page.on('pageerror', (err) => page.errors.push(`pageerror: ${err.message}`))
  page.on('requestfailed', (req) => {
    if (req.url().startsWith('ws')) return
    page.errors.push(`request failed: ${req.url()} ${req.failure()?.errorText}`)
  })
  page.on('response', (res) => {
    if (res.status() >= 400) page.errors.push(`HTTP ${res.status()}: ${res.url()}`)
  })
  await page.goto(url)
  if (name) await setName(page, name)
  return page
}

/** Types a new name into the "Your name" field, like a person would. */
export async function setName (page, name) {
  const input = page.locator('#name-input')
  await input.click()
  await input.press('Control+A')
  await input.pressSequentially(name)
  await input.press('Tab')
}

/** Waits until the connection badge reads `state` (connecting / synced / offline). */
export function waitForState (page, state, timeout = 20000) {
  return page.waitForFunction((s) => document.getElementById('status')?.dataset.state === s, state, { timeout })
}

export async function screenshot (page, name) {
  mkdirSync(ARTIFACTS, { recursive: true })
  const path = join(ARTIFACTS, `${name}.png`)
  await page.screenshot({ path, fullPage: true })
  return path
}

/** Puts the caret at the start or end of the editor and types `text` with real key presses. */
export async function typeInEditor (page, text, where = 'end') {
  await page.locator('.cm-content').click()
  // keystrokes sent before CodeMirror has taken focus would go nowhere
  await page.waitForSelector('.cm-editor.cm-focused', { timeout: 10000 })
  await page.keyboard.press(where === 'start' ? 'Control+Home' : 'Control+End')
  await page.keyboard.type(text)
}

/** The editor's text as CodeMirror renders it. */
export function editorText (page) {
  return page.evaluate(() => window.tandem.editorText())
}

/** Waits until the editor text contains every string in `parts`; on timeout the error shows
 * what the editor, the shared document and the connection badge held. */
export async function waitForEditorToContain (page, parts, timeout = 20000) {
  try {
    await page.waitForFunction(
      (ps) => { const t = window.tandem.editorText(); return ps.every((p) => t.includes(p)) },
      parts, { timeout })
  } catch (e) {
    const seen = await page.evaluate(() => ({
      editor: window.tandem.editorText(),
      doc: window.tandem.text(),
      status: document.getElementById('status')?.dataset.state
    })).catch(() => null)
    throw new Error(`${e.message}\nwanted ${JSON.stringify(parts)}\nhad ${JSON.stringify(seen)}`)
  }
}

/** Waits until the editor text equals `text`. */
export function waitForEditorText (page, text, timeout = 20000) {
  return page.waitForFunction((t) => window.tandem.editorText() === t, text, { timeout })
}

/** The task list as shown: [{ text, done }] in display order, read from the DOM. */
export function shownTasks (page) {
  return page.$$eval('#tasks .task', (lis) => lis.map((li) => ({
    text: li.querySelector('.task-text').textContent,
    done: li.querySelector('.task-check').checked
  })))
}

/** Adds a task through the form, like a person: type, then click "Add". */
export async function addTask (page, text) {
  await page.locator('#task-input').click()
  await page.keyboard.type(text)
  await page.locator('#task-add').click()
}

/** The <li> of the task whose text is `text`. */
export function taskItem (page, text) {
  return page.locator('#tasks .task').filter({ has: page.locator('.task-text', { hasText: new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }) })
}

export function assertNoPageErrors (pages) {
  const errors = pages.flatMap((p) => p.errors.map((e) => `${p.label || 'page'}: ${e}`))
  if (errors.length) throw new Error(`errors in the browser:\n${errors.join('\n')}`)
}
