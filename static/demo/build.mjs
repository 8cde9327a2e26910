// Bundles every demo's entry module (src/<name>.js) with the npm packages it imports into
// dist/<name>.js: one ES module per page, minified, with a source map. `npm run build` runs it
// (after `npm ci`); `make demos` does both. dist/ is never committed.
import { build } from 'esbuild'
import { readdirSync, rmSync, writeFileSync } from 'node:fs'

const entryPoints = readdirSync('src')
  .filter((file) => file.endsWith('.js'))
  .map((file) => `src/${file}`)

rmSync('dist', { recursive: true, force: true })
await build({
  entryPoints,
  bundle: true,
  format: 'esm',
  target: 'es2020',
  outdir: 'dist',
  minify: true,
  sourcemap: true,
  legalComments: 'linked',
  logLevel: 'warning'
})
// What the Makefile and the tests compare with the sources' times to tell a stale build.
writeFileSync('dist/.built', new Date().toISOString() + '\n')
