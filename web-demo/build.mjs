// Builds the web demo into OUTDIR (default: dist): OUTDIR/index.html, OUTDIR/assets/app.js and
// OUTDIR/assets/app.css. No content hashes and no timestamps, so the output is a pure function of
// src/ and the locked dependencies; tests/browser/bundle.test.mjs rebuilds into a temp dir with
// this same function and compares byte for byte with the committed dist/.
import { build } from 'esbuild'
import { copyFileSync, mkdirSync, rmSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

/** Builds into `outdir`; resolves to esbuild's metafile (the inputs that went into the bundle). */
export async function buildDemo (outdir) {
  outdir = resolve(outdir)
  rmSync(join(outdir, 'assets'), { recursive: true, force: true })
  rmSync(join(outdir, 'index.html'), { force: true })
  mkdirSync(join(outdir, 'assets'), { recursive: true })
  const result = await build({
    absWorkingDir: here,
    entryPoints: { app: 'src/main.js' },
    outdir: join(outdir, 'assets'),
    bundle: true,
    format: 'esm',
    target: ['es2020'],
    minify: true,
    sourcemap: false,
    charset: 'utf8',
    legalComments: 'eof',
    logLevel: 'warning',
    metafile: true
  })
  copyFileSync(join(here, 'src', 'index.html'), join(outdir, 'index.html'))
  return result.metafile
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] || join(here, 'dist')
  await buildDemo(out)
  console.log(`built ${out}`)
}
