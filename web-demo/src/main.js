// The Tandem demo: one Yjs document per room, synced with the Tandem server over y-websocket.
//   - 'doc'   Y.Text   the CodeMirror document (y-codemirror.next binds it, carets via awareness)
//   - 'tasks' Y.Array  of Y.Map { id, text, done, order }; the list is shown sorted by
//                      (order, id), so reordering only rewrites one task's `order` and a
//                      concurrent move, check and delete of the same task all survive.
import './style.css'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { EditorState } from '@codemirror/state'
import {
  EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  drawSelection, placeholder, highlightSpecialChars
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'

const DEFAULT_ROOM = 'welcome'
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id))

// ---------------------------------------------------------------------------------------------
// Room: taken from ?room=NAME (the HTTP path stays `/`; the WebSocket path is the room).

function roomFromUrl () {
  const r = new URLSearchParams(location.search).get('room')
  return r && ROOM_RE.test(r) ? r : null
}

function roomUrl (room) {
  const u = new URL(location.href)
  u.search = '?' + new URLSearchParams({ room }).toString()
  u.hash = ''
  return u.toString()
}

function randomId (len) {
  const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789'
  const bytes = crypto.getRandomValues(new Uint8Array(len))
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('')
}

const room = roomFromUrl() || DEFAULT_ROOM
if (roomFromUrl() !== room) history.replaceState(null, '', roomUrl(room))
document.title = `${room} · Tandem`

// ---------------------------------------------------------------------------------------------
// Identity: a random name and colour per browser, the name editable and kept in localStorage.

const COLORS = [
  ['#e11d48', '#e11d4833'], ['#ea580c', '#ea580c33'], ['#ca8a04', '#ca8a0433'],
  ['#16a34a', '#16a34a33'], ['#0891b2', '#0891b233'], ['#2563eb', '#2563eb33'],
  ['#7c3aed', '#7c3aed33'], ['#c026d3', '#c026d333']
]
const ADJECTIVES = ['Brisk', 'Calm', 'Clever', 'Bright', 'Keen', 'Quiet', 'Swift', 'Witty', 'Bold', 'Merry']
const ANIMALS = ['Otter', 'Falcon', 'Panda', 'Lynx', 'Heron', 'Fox', 'Koala', 'Badger', 'Robin', 'Seal']

function storageGet (key) {
  try { return localStorage.getItem(key) } catch { return null }
}
function storageSet (key, value) {
  try { localStorage.setItem(key, value) } catch { /* storage disabled: keep it in memory */ }
}
function pick (list) {
  return list[crypto.getRandomValues(new Uint32Array(1))[0] % list.length]
}

let myName = (storageGet('tandem.name') || '').trim()
if (!myName) {
  myName = `${pick(ADJECTIVES)} ${pick(ANIMALS)}`
  storageSet('tandem.name', myName)
}
let colorIndex = Number(storageGet('tandem.color'))
if (!Number.isInteger(colorIndex) || colorIndex < 0 || colorIndex >= COLORS.length || storageGet('tandem.color') === null) {
  colorIndex = COLORS.indexOf(pick(COLORS))
  storageSet('tandem.color', String(colorIndex))
}
const [myColor, myColorLight] = COLORS[colorIndex]

// ---------------------------------------------------------------------------------------------
// Document and provider.

const doc = new Y.Doc()
const ytext = doc.getText('doc')
const ytasks = doc.getArray('tasks')

const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`
// disableBc: tabs in one browser sync through the server only, so "offline" really is offline.
const provider = new WebsocketProvider(wsBase, encodeURIComponent(room), doc, { disableBc: true })
const awareness = provider.awareness
awareness.setLocalStateField('user', { name: myName, color: myColor, colorLight: myColorLight })

// ---------------------------------------------------------------------------------------------
// Editor.

const undoManager = new Y.UndoManager(ytext)
const view = new EditorView({
  parent: $('editor'),
  state: EditorState.create({
    doc: ytext.toString(),
    extensions: [
      lineNumbers(),
      highlightActiveLineGutter(),
      highlightActiveLine(),
      highlightSpecialChars(),
      drawSelection(),
      EditorView.lineWrapping,
      placeholder('Start typing — everyone in this room sees it live…'),
      keymap.of([...yUndoManagerKeymap, indentWithTab, ...defaultKeymap]),
      yCollab(ytext, awareness, { undoManager }),
      EditorView.contentAttributes.of({ 'aria-label': 'Shared document', spellcheck: 'false' })
    ]
  })
})

function renderDocMeta () {
  const chars = ytext.length
  const lines = view.state.doc.lines
  $('doc-meta').textContent = `${lines} ${lines === 1 ? 'line' : 'lines'} · ${chars} ${chars === 1 ? 'char' : 'chars'}`
}
ytext.observe(renderDocMeta)
renderDocMeta()

// ---------------------------------------------------------------------------------------------
// Connection state: connecting / synced / offline, and the offline toggle.

let wantOnline = true
let wsStatus = 'connecting'

function connectionState () {
  if (!wantOnline) return 'offline'
  if (wsStatus === 'connected' && provider.synced) return 'synced'
  if (wsStatus === 'disconnected') return 'offline'
  return 'connecting'
}

const STATE_LABEL = { connecting: 'Connecting…', synced: 'Synced', offline: 'Offline' }

function renderConnection () {
  const state = connectionState()
  const badge = $('status')
  badge.dataset.state = state
  badge.textContent = STATE_LABEL[state]
  badge.title = wantOnline ? '' : 'Edits stay on this device and merge when you go back online'
  const toggle = $('offline-toggle')
  toggle.setAttribute('aria-pressed', String(!wantOnline))
  toggle.textContent = wantOnline ? 'Go offline' : 'Go online'
  $('offline-note').hidden = wantOnline
}

provider.on('status', ({ status }) => {
  wsStatus = status
  if (status === 'connected') {
    // Peers (and the server) dropped our awareness entry when we left but kept its clock; a
    // state re-sent with that same clock would be ignored until the 15 s renewal. Re-setting
    // the state bumps the clock, so we reappear in everyone's list as soon as we reconnect.
    awareness.setLocalStateField('user', { name: myName, color: myColor, colorLight: myColorLight })
  }
  renderConnection()
})
provider.on('sync', () => renderConnection())
$('offline-toggle').addEventListener('click', () => {
  wantOnline = !wantOnline
  if (wantOnline) {
    provider.connect()
  } else {
    provider.disconnect()
    wsStatus = 'disconnected'
  }
  renderConnection()
})
renderConnection()

// ---------------------------------------------------------------------------------------------
// Room picker and share link.

const roomInput = /** @type {HTMLInputElement} */ ($('room-input'))
roomInput.value = room
$('room-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const next = roomInput.value.trim()
  if (!ROOM_RE.test(next)) {
    roomInput.setCustomValidity('Use 1–64 letters, digits, - or _')
    roomInput.reportValidity()
    return
  }
  if (next !== room) location.assign(roomUrl(next))
})
roomInput.addEventListener('input', () => roomInput.setCustomValidity(''))
$('new-room').addEventListener('click', () => location.assign(roomUrl(`room-${randomId(8)}`)))

const shareInput = /** @type {HTMLInputElement} */ ($('share-link'))
shareInput.value = roomUrl(room)
shareInput.addEventListener('focus', () => shareInput.select())
$('copy-link').addEventListener('click', async () => {
  const button = $('copy-link')
  let ok = false
  try {
    await navigator.clipboard.writeText(shareInput.value)
    ok = true
  } catch {
    // Clipboard API unavailable (non-secure origin): select the text for a manual copy.
    shareInput.focus()
    shareInput.select()
    ok = document.execCommand('copy')
  }
  button.textContent = ok ? 'Copied' : 'Press Ctrl+C'
  button.classList.toggle('btn-done', ok)
  setTimeout(() => { button.textContent = 'Copy'; button.classList.remove('btn-done') }, 1600)
})

// ---------------------------------------------------------------------------------------------
// Presence.

const nameInput = /** @type {HTMLInputElement} */ ($('name-input'))
nameInput.value = myName
$('my-color').style.background = myColor
nameInput.addEventListener('input', () => {
  const name = nameInput.value.trim().slice(0, 32)
  if (!name) return
  myName = name
  storageSet('tandem.name', name)
  awareness.setLocalStateField('user', { name, color: myColor, colorLight: myColorLight })
})
nameInput.addEventListener('blur', () => { nameInput.value = myName })

function peers () {
  const list = []
  for (const [clientId, state] of awareness.getStates()) {
    if (!state || !state.user) continue
    list.push({
      clientId,
      name: String(state.user.name || 'Anonymous').slice(0, 32),
      color: /^#[0-9a-fA-F]{3,8}$/.test(state.user.color) ? state.user.color : '#64748b',
      self: clientId === doc.clientID
    })
  }
  list.sort((a, b) => (b.self - a.self) || a.name.localeCompare(b.name) || a.clientId - b.clientId)
  return list
}

function renderPresence () {
  const list = peers()
  const ul = $('presence')
  ul.replaceChildren(...list.map((p) => {
    const li = document.createElement('li')
    li.className = 'person'
    li.dataset.clientId = String(p.clientId)
    const avatar = document.createElement('span')
    avatar.className = 'avatar'
    avatar.style.background = p.color
    avatar.textContent = p.name.slice(0, 1).toUpperCase()
    const name = document.createElement('span')
    name.className = 'person-name'
    name.textContent = p.name
    li.append(avatar, name)
    if (p.self) {
      const you = document.createElement('span')
      you.className = 'you'
      you.textContent = 'you'
      li.append(you)
    }
    return li
  }))
  $('presence-count').textContent = String(list.length)
}
awareness.on('change', renderPresence)
renderPresence()

// ---------------------------------------------------------------------------------------------
// Tasks.

function taskList () {
  const list = []
  ytasks.forEach((m, index) => {
    if (!(m instanceof Y.Map)) return
    const order = Number(m.get('order'))
    list.push({
      map: m,
      index,
      id: String(m.get('id') ?? ''),
      text: String(m.get('text') ?? ''),
      done: m.get('done') === true,
      order: Number.isFinite(order) ? order : 0
    })
  })
  list.sort((a, b) => a.order - b.order || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  return list
}

function addTask (text) {
  const list = taskList()
  const m = new Y.Map()
  m.set('id', randomId(10))
  m.set('text', text)
  m.set('done', false)
  m.set('order', list.length ? list[list.length - 1].order + 1 : 1)
  ytasks.push([m])
}

function deleteTask (id) {
  doc.transact(() => {
    // Delete from the end so indices stay valid.
    for (let i = ytasks.length - 1; i >= 0; i--) {
      const m = ytasks.get(i)
      if (m instanceof Y.Map && m.get('id') === id) ytasks.delete(i, 1)
    }
  })
}

/** Moves the task at sorted position `from` by `delta` (-1 up, +1 down). */
function moveTask (from, delta) {
  const list = taskList()
  const to = from + delta
  if (to < 0 || to >= list.length) return
  // The new order lies strictly between the two neighbours of the target slot.
  const lo = delta < 0 ? (list[to - 1]?.order ?? list[to].order - 2) : list[to].order
  const hi = delta < 0 ? list[to].order : (list[to + 1]?.order ?? list[to].order + 2)
  const mid = (lo + hi) / 2
  doc.transact(() => {
    if (mid > lo && mid < hi) {
      list[from].map.set('order', mid)
    } else {
      // Ran out of precision (or ties): renumber the whole list in its new order.
      const [moved] = list.splice(from, 1)
      list.splice(to, 0, moved)
      list.forEach((t, i) => { if (t.order !== i + 1) t.map.set('order', i + 1) })
    }
  })
}

function iconButton (cls, label, text) {
  const b = document.createElement('button')
  b.type = 'button'
  b.className = `icon-btn ${cls}`
  b.setAttribute('aria-label', label)
  b.title = label
  b.textContent = text
  return b
}

function renderTasks () {
  const list = taskList()
  const ul = $('tasks')
  ul.replaceChildren(...list.map((t, pos) => {
    const li = document.createElement('li')
    li.className = 'task' + (t.done ? ' done' : '')
    li.dataset.id = t.id
    const label = document.createElement('label')
    label.className = 'task-label'
    const check = document.createElement('input')
    check.type = 'checkbox'
    check.className = 'task-check'
    check.checked = t.done
    check.addEventListener('change', () => t.map.set('done', check.checked))
    const text = document.createElement('span')
    text.className = 'task-text'
    text.textContent = t.text
    label.append(check, text)
    const up = iconButton('task-up', `Move "${t.text}" up`, '↑')
    up.disabled = pos === 0
    up.addEventListener('click', () => moveTask(pos, -1))
    const down = iconButton('task-down', `Move "${t.text}" down`, '↓')
    down.disabled = pos === list.length - 1
    down.addEventListener('click', () => moveTask(pos, +1))
    const del = iconButton('task-delete', `Delete "${t.text}"`, '×')
    del.addEventListener('click', () => deleteTask(t.id))
    li.append(label, up, down, del)
    return li
  }))
  const open = list.filter((t) => !t.done).length
  $('tasks-count').textContent = list.length ? `${open}/${list.length}` : '0'
  $('tasks-empty').hidden = list.length > 0
}
ytasks.observeDeep(renderTasks)
renderTasks()

const taskInput = /** @type {HTMLInputElement} */ ($('task-input'))
$('task-form').addEventListener('submit', (e) => {
  e.preventDefault()
  const text = taskInput.value.trim()
  if (!text) return
  addTask(text.slice(0, 200))
  taskInput.value = ''
  taskInput.focus()
})

// ---------------------------------------------------------------------------------------------
// A read-only debug handle (plain data only), used by the browser tests and handy in devtools.

window.tandem = Object.freeze({
  room,
  clientId: doc.clientID,
  state: () => connectionState(),
  text: () => ytext.toString(),
  editorText: () => view.state.doc.toString(),
  tasks: () => taskList().map(({ id, text, done }) => ({ id, text, done })),
  peers: () => peers().map(({ clientId, name, color, self }) => ({ clientId, name, color, self }))
})
