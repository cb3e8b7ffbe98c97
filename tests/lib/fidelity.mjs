// Random Yjs documents with every content kind, and a value-for-value, type-for-type
// description of a Y.Doc to compare what the server returns with what Yjs itself reads.
import * as Y from 'yjs'

/** mulberry32: a small seeded PRNG. */
export function rng (seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (n) => Math.floor(next() * n)
  const pick = (xs) => xs[int(xs.length)]
  return { next, int, pick }
}

const STRINGS = ['', 'a', 'hello', 'é', '😀', 'a😀b', '𝄞 clef', '\u{1F468}\u200D\u{1F469}', 'ü\n\t"q"', '中文']
const NUMBERS = [0, 1, -1, 42, -42, 2 ** 31 - 1, -(2 ** 31 - 1), 2 ** 31, -(2 ** 31), 2 ** 40, 2 ** 53 - 1,
  -(2 ** 53 - 1), 1.5, -0.25, 0.1, 1e300, -1e-300, 3.4028234663852886e38, -0, NaN, Infinity, -Infinity]
const BIGINTS = [0n, 5n, -5n, 2n ** 31n, 2n ** 62n, -(2n ** 62n), 2n ** 63n - 1n, -(2n ** 63n)]

/** A random lib0 `Any` value (what `writeAny` accepts), nested up to `depth`. */
export function anyValue (r, depth = 2) {
  switch (r.int(depth > 0 ? 11 : 9)) {
    case 0: return null
    case 1: return undefined
    case 2: return r.int(2) === 0
    case 3: case 4: return r.pick(NUMBERS)
    case 5: return r.pick(BIGINTS)
    case 6: return r.pick(STRINGS)
    case 7: return new Uint8Array(Array.from({ length: r.int(5) }, () => r.int(256)))
    case 8: return r.int(1000) - 500
    case 9: return Array.from({ length: r.int(4) }, () => anyValue(r, depth - 1))
    default: {
      const o = {}
      for (let i = r.int(4); i > 0; i--) o[r.pick(['k', 'x', 'é', '😀', 'long key', String(i)])] = anyValue(r, depth - 1)
      return o
    }
  }
}

/** A value JSON.stringify/parse keeps exactly (embeds, formats, legacy JSON content). */
export function jsonValue (r, depth = 2) {
  switch (r.int(depth > 0 ? 7 : 5)) {
    case 0: return null
    case 1: return r.int(2) === 0
    case 2: return r.pick([0, 1, -7, 42, 1.5, -0.25, 1e21, 123456789])
    case 3: case 4: return r.pick(STRINGS)
    case 5: return Array.from({ length: r.int(3) }, () => jsonValue(r, depth - 1))
    default: {
      const o = {}
      for (let i = r.int(3); i > 0; i--) o[r.pick(['a', 'b', 'é', '😀'])] = jsonValue(r, depth - 1)
      return o
    }
  }
}

const ATTRS = () => [{ bold: true }, { italic: true, color: '#f00' }, { link: { href: 'https://x.y/😀' } }, { bold: null }, { size: 12 }]

function fillText (r, text) {
  for (let i = r.int(6) + 1; i > 0; i--) {
    const at = r.int(text.length + 1)
    switch (r.int(5)) {
      case 0: text.insertEmbed(at, { [r.pick(['image', 'video', '😀'])]: jsonValue(r) }, r.int(2) ? r.pick(ATTRS()) : undefined); break
      case 1: if (text.length > 0) { const s = r.int(text.length); text.format(s, r.int(text.length - s) + 1, r.pick(ATTRS())) } break
      case 2: if (text.length > 1) { const s = r.int(text.length - 1); text.delete(s, 1) } break
      default: text.insert(at, r.pick(STRINGS.filter(s => s)), r.int(3) === 0 ? r.pick(ATTRS()) : undefined)
    }
  }
}

function subdoc (r) {
  const opts = { guid: `sub-${r.int(1e9)}-é😀` }
  if (r.int(2)) opts.meta = anyValue(r)
  if (r.int(2)) opts.autoLoad = true
  if (r.int(3) === 0) opts.shouldLoad = false
  if (r.int(3) === 0) opts.gc = false
  return new Y.Doc(opts)
}

/** A random value for a map/array slot: an Any, binary, a nested type or a sub-document. */
function slotValue (r, depth) {
  switch (r.int(depth > 0 ? 9 : 5)) {
    case 0: return new Uint8Array(Array.from({ length: r.int(4) }, () => r.int(256)))
    case 1: return subdoc(r)
    case 5: { const m = new Y.Map(); fillLater.push(() => fillMap(r, m, depth - 1)); return m }
    case 6: { const a = new Y.Array(); fillLater.push(() => fillArray(r, a, depth - 1)); return a }
    case 7: { const t = new Y.Text(); fillLater.push(() => fillText(r, t)); return t }
    default: return anyValue(r)
  }
}

// nested types can only be filled once integrated
let fillLater = []

function fillMap (r, map, depth) {
  for (let i = r.int(5) + 1; i > 0; i--) {
    const key = r.pick(['a', 'b', 'c', 'é', '😀', 'key with space'])
    if (r.int(6) === 0) map.delete(key)
    else map.set(key, slotValue(r, depth))
  }
}

function fillArray (r, arr, depth) {
  for (let i = r.int(4) + 1; i > 0; i--) {
    if (r.int(5) === 0 && arr.length > 0) { arr.delete(r.int(arr.length), 1); continue }
    // (Y.Array.insert takes no top-level `undefined` or bigint; inside objects and arrays, and
    // in Y.Map.set, it does)
    const values = Array.from({ length: r.int(3) + 1 }, () => {
      const v = slotValue(r, depth)
      return v === undefined ? null : typeof v === 'bigint' ? [v] : v
    })
    arr.insert(r.int(arr.length + 1), values)
  }
}

function fillXml (r, frag) {
  for (let i = r.int(3) + 1; i > 0; i--) {
    switch (r.int(3)) {
      case 0: {
        const el = new Y.XmlElement(r.pick(['p', 'div', 'h1', 'my-el']))
        frag.insert(frag.length, [el])
        for (let j = r.int(3); j > 0; j--) el.setAttribute(r.pick(['class', 'id', 'data-x']), r.int(2) ? r.pick(STRINGS) : anyValue(r, 1))
        const t = new Y.XmlText()
        el.insert(0, [t])
        fillText(r, t)
        if (r.int(2)) t.setAttribute('lang', r.pick(STRINGS))
        break
      }
      case 1: {
        const t = new Y.XmlText()
        frag.insert(frag.length, [t])
        fillText(r, t)
        break
      }
      default: {
        const hook = new Y.XmlHook(r.pick(['hook', 'embed-hook']))
        frag.insert(frag.length, [hook])
        for (let j = r.int(3) + 1; j > 0; j--) hook.set(r.pick(['a', 'b', 'c']), anyValue(r, 1))
      }
    }
  }
}

/**
 * Document `i`: its own client id and roots `d<i>.map|arr|text|xml`. Returns
 * `{ update (v1), roots: [[name, kind], …] }`.
 */
export function randomDoc (r, i) {
  const doc = new Y.Doc()
  doc.clientID = 1000 + i
  const roots = [[`d${i}.map`, 'map'], [`d${i}.arr`, 'array'], [`d${i}.text`, 'text'], [`d${i}.xml`, 'xml']]
  doc.transact(() => {
    fillLater = []
    fillMap(r, doc.getMap(roots[0][0]), 2)
    fillArray(r, doc.getArray(roots[1][0]), 2)
    fillText(r, doc.getText(roots[2][0]))
    fillXml(r, doc.getXmlFragment(roots[3][0]))
  })
  // nested types, filled in later transactions (more items, origins, deletes)
  while (fillLater.length) {
    const todo = fillLater
    fillLater = []
    doc.transact(() => todo.forEach(f => f()))
  }
  return { update: Y.encodeStateAsUpdate(doc), roots }
}

function writeVarUint (out, n) {
  while (n > 0x7f) { out.push(0x80 | (n & 0x7f)); n = Math.floor(n / 128) }
  out.push(n)
}
function writeString (out, s) {
  const b = new TextEncoder().encode(s)
  writeVarUint(out, b.length)
  out.push(...b)
}

/**
 * Legacy `ContentJSON` (content ref 2) as Yjs < 13 wrote it: one item in root array `name` by
 * `client`, `len` strings, each `JSON.stringify(v)` or "undefined". Built by hand: current
 * Yjs never writes it but still reads it.
 */
export function legacyJsonDoc (r, i) {
  const name = `d${i}.legacy`
  const values = Array.from({ length: r.int(4) + 1 }, () => r.int(5) === 0 ? undefined : jsonValue(r))
  const out = []
  writeVarUint(out, 1) // one client
  writeVarUint(out, 1) // one struct
  writeVarUint(out, 500000 + i) // client
  writeVarUint(out, 0) // clock
  out.push(2) // info: ContentJSON, no origins, parent given
  writeVarUint(out, 1) // parent is a root type, named
  writeString(out, name)
  writeVarUint(out, values.length)
  for (const v of values) writeString(out, v === undefined ? 'undefined' : JSON.stringify(v))
  writeVarUint(out, 0) // empty delete set
  return { update: new Uint8Array(out), roots: [[name, 'array']] }
}

/** A description of a value: type and value, with -0/NaN/bigint/binary spelled out. */
function prim (v) {
  switch (typeof v) {
    case 'undefined': return 'undefined'
    case 'number': return Object.is(v, -0) ? 'number:-0' : `number:${v}`
    case 'bigint': return `bigint:${v}`
    case 'string': return `string:${v}`
    case 'boolean': return `boolean:${v}`
  }
  if (v === null) return 'null'
  if (v instanceof Uint8Array) return `binary:${Buffer.from(v).toString('hex')}`
  if (Array.isArray(v)) return v.map(prim)
  if (v instanceof Y.Doc) {
    return { subdoc: v.guid, meta: prim(v.meta), autoLoad: v.autoLoad, shouldLoad: v.shouldLoad, gc: v.gc }
  }
  if (v instanceof Y.AbstractType) return describeType(v)
  if (typeof v === 'object') {
    if (Object.getPrototypeOf(v) !== Object.prototype) return `object of class ${v.constructor?.name}`
    return { object: Object.keys(v).sort().map(k => [k, prim(v[k])]) }
  }
  return `unexpected ${typeof v}`
}

function delta (t) {
  return t.toDelta().map(op => ({ insert: prim(op.insert), attributes: op.attributes ? prim(op.attributes) : null }))
}

function describeType (t) {
  const attrs = (el) => Object.keys(el.getAttributes()).sort().map(k => [k, prim(el.getAttribute(k))])
  if (t instanceof Y.XmlHook) return { hook: t.hookName, entries: [...t.keys()].sort().map(k => [k, prim(t.get(k))]) }
  if (t instanceof Y.XmlElement) return { element: t.nodeName, attrs: attrs(t), children: t.toArray().map(prim) }
  if (t instanceof Y.XmlText) return { xmltext: delta(t), attrs: attrs(t) }
  if (t instanceof Y.XmlFragment) return { fragment: t.toArray().map(prim) }
  if (t instanceof Y.Text) return { text: delta(t) }
  if (t instanceof Y.Map) return { map: [...t.keys()].sort().map(k => [k, prim(t.get(k))]) }
  if (t instanceof Y.Array) return { array: t.toArray().map(prim) }
  return `unknown type ${t.constructor?.name}`
}

/** Describes the given roots of `doc`. */
export function describe (doc, roots) {
  const get = { map: n => doc.getMap(n), array: n => doc.getArray(n), text: n => doc.getText(n), xml: n => doc.getXmlFragment(n) }
  return roots.map(([name, kind]) => [name, describeType(get[kind](name))])
}

/** The first differing path between two descriptions, or null. */
export function firstDiff (a, b, path = '') {
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) {
    return a === b ? null : `${path}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`
  }
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (Array.isArray(a) !== Array.isArray(b) || ka.length !== kb.length) {
    return `${path}: ${JSON.stringify(a).slice(0, 300)} != ${JSON.stringify(b).slice(0, 300)}`
  }
  for (const k of ka) {
    const d = firstDiff(a[k], b[k], `${path}/${Array.isArray(a) && Array.isArray(a[k]) && typeof a[k][0] === 'string' ? a[k][0] : k}`)
    if (d) return d
  }
  return null
}
