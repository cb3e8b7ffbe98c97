// The shipped bundle (web-demo/dist, embedded in the binary) must be exactly what the source
// builds to: rebuild web-demo/src into a temp dir with the same build function that
// `npm --prefix web-demo run build` uses and compare every file byte for byte.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const webDemo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web-demo')
const dist = join(webDemo, 'dist')

function listFiles (dir) {
  const out = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...listFiles(p))
    else out.push(p)
  }
  return out
}

test('web-demo/dist is up to date with web-demo/src', async () => {
  assert.ok(existsSync(join(webDemo, 'node_modules', 'esbuild')),
    'web-demo dependencies are missing: run bash tests/setup.sh (npm ci in web-demo)')
  const { buildDemo } = await import(join(webDemo, 'build.mjs'))
  const out = mkdtempSync(join(tmpdir(), 'tandem-demo-build-'))
  try {
    const metafile = await buildDemo(out)
    const built = listFiles(out).map((p) => relative(out, p)).sort()
    const shipped = listFiles(dist).map((p) => relative(dist, p)).sort()
    assert.deepEqual(shipped, built, 'dist/ holds different files than a fresh build')
    assert.deepEqual(built, ['assets/app.css', 'assets/app.js', 'index.html'])
    for (const file of built) {
      const fresh = readFileSync(join(out, file))
      const committed = readFileSync(join(dist, file))
      assert.ok(fresh.equals(committed),
        `web-demo/dist/${file} is stale: rebuild with \`npm --prefix web-demo ci && npm --prefix web-demo run build\` and commit it`)
    }

    // Exactly one copy of each shared library in the bundle: two copies of yjs break
    // `instanceof` checks between the binding and the document.
    const inputs = Object.keys(metafile.inputs)
    for (const pkg of ['yjs', 'lib0', '@codemirror/state', '@codemirror/view', 'y-protocols']) {
      const roots = new Set(inputs
        .map((p) => p.match(new RegExp(`^(.*node_modules/${pkg.replace('/', '\\/')})/`))?.[1])
        .filter(Boolean))
      assert.equal(roots.size, 1, `${pkg} is bundled from ${[...roots].join(', ') || 'nowhere'}`)
    }
    for (const pkg of ['y-websocket', 'y-codemirror.next']) {
      assert.ok(inputs.some((p) => p.includes(`node_modules/${pkg}/`)), `${pkg} is not in the bundle`)
    }
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
})

test('the demo uses the stock client stack at the pinned versions', () => {
  const pkg = JSON.parse(readFileSync(join(webDemo, 'package.json'), 'utf8'))
  const lock = JSON.parse(readFileSync(join(webDemo, 'package-lock.json'), 'utf8'))
  const expected = { yjs: '13.6.33', 'y-websocket': '3.1.0', 'y-protocols': '1.0.7' }
  for (const [name, version] of Object.entries(expected)) {
    assert.equal(pkg.dependencies[name], version, `${name} pinned in package.json`)
    assert.equal(lock.packages[`node_modules/${name}`]?.version, version, `${name} in package-lock.json`)
  }
  for (const [name, version] of Object.entries({ ...pkg.dependencies, ...pkg.devDependencies })) {
    assert.match(version, /^\d+\.\d+\.\d+$/, `${name} must be pinned to an exact version`)
  }
})
