// Starts the real tandem binary for a test: random port, fresh data dir, address read from the
// first stdout line. Shared by the interop and browser suites.
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const TANDEM_BIN = process.env.TANDEM_BIN || join(repo, 'target', 'release', 'tandem')

export function tempDataDir () {
  return mkdtempSync(join(tmpdir(), 'tandem-test-'))
}

/**
 * Starts `tandem serve` on 127.0.0.1:0; resolves to { url, wsUrl, port, proc, stop, kill }.
 * With `--tls-cert`/`--tls-key` in `extraArgs` the urls are https:// and wss://.
 * `listen` picks the address instead (e.g. the port of a stopped server, to restart it where
 * open pages will reconnect).
 */
export async function startServer (dataDir, extraArgs = [], { listen = '127.0.0.1:0' } = {}) {
  const proc = spawn(TANDEM_BIN, ['serve', '--listen', listen, '--data', dataDir, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, TANDEM_LOG: process.env.TANDEM_LOG || 'warn' }
  })
  const exited = new Promise(resolve => proc.once('exit', (code, signal) => resolve({ code, signal })))
  const line = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout })
    rl.once('line', l => { rl.close(); resolve(l) })
    proc.once('exit', code => reject(new Error(`tandem exited with ${code} before listening`)))
  })
  const m = /^listening on (https?:\/\/\S+)$/.exec(line)
  if (!m) throw new Error(`unexpected first line: ${line}`)
  const url = m[1]
  return {
    url,
    wsUrl: url.replace(/^http/, 'ws'),
    port: Number(new URL(url).port),
    proc,
    exited,
    /** SIGTERM: graceful shutdown; resolves to the exit status. */
    stop: () => { proc.kill('SIGTERM'); return exited },
    /** SIGKILL: a crash. */
    kill: () => { proc.kill('SIGKILL'); return exited }
  }
}

export function removeDir (dir) {
  rmSync(dir, { recursive: true, force: true })
}

/**
 * Resolves once `cond()` is true, re-checking whenever one of `emitters` fires one of `events`.
 * Rejects after `ms` with `what` in the message. No polling, no sleeps.
 */
export function waitFor (what, cond, emitters, events = ['update'], ms = 20000) {
  return new Promise((resolve, reject) => {
    const offs = []
    const done = (err) => {
      clearTimeout(timer)
      for (const off of offs) off()
      err ? reject(err) : resolve()
    }
    const check = () => { try { if (cond()) done() } catch (e) { done(e) } }
    const timer = setTimeout(() => done(new Error(`timed out waiting for ${what}`)), ms)
    for (const em of emitters) {
      for (const ev of events) {
        em.on(ev, check)
        offs.push(() => em.off(ev, check))
      }
    }
    check()
  })
}

/**
 * A throwaway self-signed certificate for localhost / 127.0.0.1, made with the openssl CLI in
 * `dir`: the PEM paths for `--tls-cert` / `--tls-key`, the certificate itself (a client's `ca`),
 * and base64(sha256(SubjectPublicKeyInfo)), which chromium's
 * `--ignore-certificate-errors-spki-list` takes.
 */
export function selfSignedCert (dir) {
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'
  ], { stdio: ['ignore', 'ignore', 'pipe'] })
  const spki = execFileSync('openssl', ['pkey', '-in', key, '-pubout', '-outform', 'der'])
  const spkiHash = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: spki }).toString('base64')
  return { cert, key, ca: readFileSync(cert), spkiHash }
}
