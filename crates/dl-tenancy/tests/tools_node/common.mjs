// What every tool program of tools_node.rs shares (not part of any recipe): the environment,
// a scratch project directory per tool, the 200 reads over 4 connections with every row
// checked, and the one JSON line a program prints.
//
// Environment (from tools_node.rs):
//   DATABASE_URL     the override login's direct URI (migrations)
//   DB_URI           the read login's URI, pooled or direct (reads)
//   DB_OVERRIDE_URI  the override login's URI, pooled or direct (the seed's upsert)
//   DL_STEP          migrate | app
//   DL_NODE_MODULES  the installed node_modules (install.sh)
import { createRequire } from 'node:module'
import { cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const here = dirname(fileURLToPath(import.meta.url))
export const step = process.env.DL_STEP
export const pooled = process.env.DL_POOLED === 'true'
export const require = createRequire(process.env.DL_NODE_MODULES + '/')

export const READ_QUERY = 'SELECT identity_key, display_name FROM dl_resolved.people ORDER BY updated_at DESC LIMIT 20'
export const CONNECTIONS = 4
export const READS = 200

// A copy of tools_node/<tool>/ (the tool's project: config, migrations) in a scratch
// directory, with node_modules linked in, as an app's checkout would have it.
export function project (tool) {
  const dir = mkdtempSync(join(tmpdir(), `tools-node-${tool}-`))
  cpSync(join(here, tool), dir, { recursive: true })
  symlinkSync(process.env.DL_NODE_MODULES, join(dir, 'node_modules'))
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
  return dir
}

// Run a tool's CLI (node_modules/.bin/<bin>) in the project directory: its output, or the
// failure with stdout and stderr.
export function cli (dir, bin, args) {
  try {
    const out = execFileSync(join(dir, 'node_modules', '.bin', bin), args, {
      cwd: dir, env: { ...process.env, NODE_PATH: process.env.DL_NODE_MODULES }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']
    })
    return { ok: true, out: out.slice(-2000) }
  } catch (e) {
    return { ok: false, out: (String(e.stdout) + '\n' + String(e.stderr)).slice(-3000) }
  }
}

// A tool's migration command run twice in its project (the second run must change nothing):
// both runs, as the test reads them.
export function twice (dir, bin, args) {
  return [cli(dir, bin, args), cli(dir, bin, args)]
}

// The key a tool's upsert writes, and the display name its patch sets.
export const keyOf = (tool) => `person:tool-${tool}`
export const nameOf = (tool) => `Written by ${tool}`

// Whether a row of the read query is right: person:<i> is "Name <i>" (seeded by the test),
// person:tool-<t> is "Written by <t>" (another tool's upsert).
export function rightRow (row) {
  if (!row) return false
  let m = /^person:(\d+)$/.exec(row.identity_key)
  if (m) return row.display_name === `Name ${m[1]}`
  m = /^person:tool-(.+)$/.exec(row.identity_key)
  return m !== null && row.display_name === nameOf(m[1])
}

// READS runs of readOnce() (the read query, rows as objects) from CONNECTIONS concurrent
// workers (the tool's pool is sized CONNECTIONS): counts, errors, wrong rows.
export async function readLoop (readOnce) {
  const r = { reads: 0, errors: 0, wrong: 0, first_error: null }
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
    for (let i = 0; i < READS / CONNECTIONS; i++) {
      try {
        const rows = await readOnce()
        r.reads++
        if (rows.length !== 20) r.wrong++
        for (const row of rows) if (!rightRow(row)) r.wrong++
      } catch (e) {
        r.reads++
        r.errors++
        r.first_error ??= String(e.stack || e).slice(0, 500)
      }
    }
  }))
  return r
}

// Check the resolved row after the upsert: display name, status and the raw patch.
export function checkResolved (tool, row, status) {
  const raw = typeof row?.raw_payload === 'string' ? JSON.parse(row.raw_payload) : row?.raw_payload
  return row?.display_name === nameOf(tool) && row?.status === status && raw?.source === tool && raw?.tags?.length === 2
}

// The seed's upsert twice with the tool's `upsert(key, status, identityPatch, rawPatch)` (an
// insert, then the ON CONFLICT update), and the resolved row `resolvedRow(key)` reads after.
export async function upsertTwice (tool, upsert, resolvedRow) {
  const p = patches(tool)
  try {
    await upsert(keyOf(tool), 'verified', p.identity, p.raw)
    await upsert(keyOf(tool), 'reviewed', p.identity, p.raw)
    return { row: await resolvedRow(keyOf(tool)), upsertError: null }
  } catch (e) {
    return { row: null, upsertError: String(e.stack || e).slice(0, 800) }
  }
}

// The patches the upsert writes (jsonb parameters).
export const patches = (tool) => ({
  identity: { display_name: nameOf(tool), emails: ['a@example.com'] },
  raw: { source: tool, tags: ['x', 'y'] }
})

export function report (out) {
  console.log(JSON.stringify({ step, pooled, ...out }))
}

// Run one step; an exception is reported as the step's error (the program exits 0 so the
// Rust test shows the JSON line).
export async function main (tool, steps) {
  try {
    await steps[step]()
  } catch (e) {
    report({ tool, fatal: String(e.stack || e).slice(0, 1500) })
  }
}
