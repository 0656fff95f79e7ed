#!/usr/bin/env node
// Produces the patched libfcgi source tree at <repo>/deps/libfcgi/ for node-gyp.
//
// Source, first that works:
//   a. LIBFCGI_SOURCE_DIR   an already unpacked fcgi2 / libfcgi 2.4.2 tree (copied)
//   b. apt (Debian/Ubuntu)  Debian's source package: `apt-get source libfcgi` with the
//                           system's deb-src entries, else with a private source list
//                           derived from the configured deb entries (private lists and
//                           cache in a temp dir; /etc/apt and /var/lib/apt are untouched)
//   c. pinned tarball       downloaded over HTTPS and checked against a pinned SHA-256
// then native/patches/*.patch are applied in order with `patch -p1 -F0`.
//
// Environment:
//   LIBFCGI_SOURCE_DIR=<dir>        use this tree (path a)
//   LIBFCGI_FETCH=auto|apt|tarball  force path b or c (default auto: b, then c)
//   LIBFCGI_OFFLINE=1               never use the network (a, or the cached source)
// Options: --force  rebuild deps/libfcgi even if its stamp says it is up to date.
//
// Idempotent: deps/libfcgi/.libfcgi-stamp.json records the source, the patch hashes and
// a hash of the resulting tree; a rerun with nothing changed does nothing.  The unpatched
// source is kept in deps/.libfcgi-pristine/ so a change of patches rebuilds without
// downloading again.  Remove deps/ to start from scratch.

import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DEPS = path.join(REPO, 'deps');
const TREE = path.join(DEPS, 'libfcgi');
const PRISTINE = path.join(DEPS, '.libfcgi-pristine');
const PATCH_DIR = path.join(REPO, 'native', 'patches');
const STAMP = '.libfcgi-stamp.json';
const PRISTINE_INFO = '.libfcgi-source.json';
const STAMP_FORMAT = 1;
const SELF = 'node scripts/fetch-libfcgi.mjs';

const UPSTREAM = {
  version: '2.4.2',
  origName: 'libfcgi_2.4.2.orig.tar.gz',
  sha256: '1fe83501edfc3a7ec96bb1e69db3fd5ea1730135bd73ab152186fd0b437013bc',
  urls: [
    'https://deb.debian.org/debian/pool/main/libf/libfcgi/libfcgi_2.4.2.orig.tar.gz',
    'https://github.com/FastCGI-Archives/fcgi2/archive/refs/tags/2.4.2.tar.gz',
  ],
};
const REQUIRED_FILES = ['include/fcgiapp.h', 'libfcgi/fcgiapp.c', 'libfcgi/os_unix.c'];

class FetchError extends Error {}

function step(msg) {
  process.stderr.write(`fetch-libfcgi: ${msg}\n`);
}

function fail(msg) {
  throw new FetchError(msg);
}

function rel(p) {
  const r = path.relative(REPO, p);
  return r && !r.startsWith('..') && !path.isAbsolute(r) ? r : p;
}

function truthy(v) {
  return /^(1|true|yes|on)$/i.test(v ?? '');
}

// ---------------------------------------------------------------- processes

function findProgram(name) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return null;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
    ...opts,
  });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  return { ok: !r.error && r.status === 0, status: r.status, error: r.error, output };
}

function tail(text, lines = 12) {
  return text.split('\n').slice(-lines).map((l) => `    ${l}`).join('\n');
}

function shellQuote(s) {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

// ---------------------------------------------------------------- hashing and files

function sha256(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function listFiles(root) {
  const out = [];
  const walk = (dir) => {
    for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, ent.name);
      if (ent.isDirectory()) {
        if (ent.name !== '.git') walk(p);
      } else out.push(path.relative(root, p).split(path.sep).join('/'));
    }
  };
  walk(root);
  return out.sort();
}

// Hash of every file (path and content) under root, ignoring our own bookkeeping files.
function hashTree(root) {
  const h = crypto.createHash('sha256');
  for (const f of listFiles(root)) {
    if (f === STAMP || f === PRISTINE_INFO) continue;
    const p = path.join(root, f);
    const st = fs.lstatSync(p);
    if (!st.isFile() && !st.isSymbolicLink()) continue;
    const data = st.isSymbolicLink() ? `symlink:${fs.readlinkSync(p)}` : fs.readFileSync(p);
    h.update(`${f}\0${sha256(data)}\n`);
  }
  return h.digest('hex');
}

function readJson(p) {
  try {
    return JSON.parse(fs.readFileSync(p, 'utf8'));
  } catch {
    return null;
  }
}

function copyTree(src, dst) {
  fs.cpSync(src, dst, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (p) => !['.git', '.pc', STAMP, PRISTINE_INFO].includes(path.basename(p)),
  });
}

function checkTree(dir, what) {
  const missing = REQUIRED_FILES.filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length) {
    fail(`${what} is not a libfcgi source tree (missing ${missing.join(', ')}): ` +
      'point LIBFCGI_SOURCE_DIR at the directory that contains include/ and libfcgi/');
  }
}

// The single top-level directory a tarball unpacked into.
function topDir(dir) {
  const ents = fs.readdirSync(dir, { withFileTypes: true });
  const dirs = ents.filter((e) => e.isDirectory());
  if (dirs.length === 1 && ents.length === 1) return path.join(dir, dirs[0].name);
  fail(`unexpected tarball layout in ${dir}: ${ents.map((e) => e.name).join(', ')}`);
}

function untar(file, dest) {
  fs.mkdirSync(dest, { recursive: true });
  const r = run('tar', ['-xf', file, '-C', dest]);
  if (!r.ok) {
    const hint = /xz/i.test(r.output) ? ' (for .xz archives: sudo apt-get install xz-utils)' : '';
    fail(`unpacking ${path.basename(file)} failed${hint}; command: tar -xf ${shellQuote(file)} -C ${shellQuote(dest)}\n${tail(r.output)}`);
  }
}

// ---------------------------------------------------------------- patches

function patchList() {
  let names = [];
  try {
    names = fs.readdirSync(PATCH_DIR).filter((n) => n.endsWith('.patch')).sort();
  } catch {
    fail(`cannot read ${rel(PATCH_DIR)}`);
  }
  return names.map((name) => ({ name, sha256: sha256(fs.readFileSync(path.join(PATCH_DIR, name))) }));
}

let patchFlavor = null;

function requirePatch() {
  if (patchFlavor) return;
  const r = run('patch', ['--version']);
  if (r.error) {
    const install = findProgram('apt-get') ? 'sudo apt-get install patch'
      : findProgram('dnf') ? 'sudo dnf install patch'
      : findProgram('apk') ? 'sudo apk add patch'
      : findProgram('brew') ? 'brew install gpatch'
      : 'install GNU patch with your package manager';
    fail(`the 'patch' program is required but was not found; install it with: ${install}`);
  }
  patchFlavor = /GNU patch/.test(r.output) ? 'gnu' : 'other';
}

// Apply one patch with no fuzz; returns null or the failure output.
function applyPatch(tree, patchFile, strip = 1) {
  const before = new Set(listFiles(tree));
  const args = [`-p${strip}`, '-F0', '-N', '-i', patchFile];
  if (patchFlavor === 'gnu') args.push('--no-backup-if-mismatch');
  const r = run('patch', args, { cwd: tree });
  // Leave no backup / reject files behind (non-GNU patch may create them).
  for (const f of listFiles(tree)) {
    if (!before.has(f) && /\.(orig|rej)$/.test(f)) fs.rmSync(path.join(tree, f), { force: true });
  }
  return r.ok ? null : r.output;
}

// ---------------------------------------------------------------- source a: directory

function sourceFromDir(dir, work) {
  const src = path.resolve(dir);
  step(`source: LIBFCGI_SOURCE_DIR=${src}`);
  checkTree(src, src);
  const base = path.join(work, 'base');
  copyTree(src, base);
  return { base, source: { kind: 'dir', path: src, hash: hashTree(src), description: `directory ${src}` } };
}

// ---------------------------------------------------------------- source b: apt

// Parse the system's apt source entries (one-line .list and deb822 .sources files).
function readAptEntries() {
  const files = [];
  if (fs.existsSync('/etc/apt/sources.list')) files.push('/etc/apt/sources.list');
  try {
    for (const n of fs.readdirSync('/etc/apt/sources.list.d').sort()) {
      if (n.endsWith('.list') || n.endsWith('.sources')) files.push(path.join('/etc/apt/sources.list.d', n));
    }
  } catch {
    // no sources.list.d
  }
  const entries = [];
  for (const file of files) {
    let text;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    if (file.endsWith('.sources')) entries.push(...parseDeb822(text));
    else entries.push(...parseOneLine(text));
  }
  return entries;
}

function parseOneLine(text) {
  const out = [];
  for (let line of text.split('\n')) {
    line = line.replace(/#.*/, '').trim();
    const m = /^(deb|deb-src)\s+(?:\[([^\]]*)\]\s*)?(\S+)\s+(\S+)(?:\s+(.*))?$/.exec(line);
    if (!m) continue;
    const opts = {};
    for (const kv of (m[2] ?? '').trim().split(/\s+/).filter(Boolean)) {
      const i = kv.indexOf('=');
      if (i > 0) opts[kv.slice(0, i).toLowerCase()] = kv.slice(i + 1);
    }
    out.push({
      uris: [m[3]],
      suites: [m[4]],
      components: (m[5] ?? '').split(/\s+/).filter(Boolean),
      signedBy: opts['signed-by'] ?? null,
      trusted: /^yes$/i.test(opts.trusted ?? ''),
    });
  }
  return out;
}

function parseDeb822(text) {
  const out = [];
  const paragraphs = [];
  let cur = null;
  let field = null;
  for (const raw of text.split('\n')) {
    if (raw.startsWith('#')) continue;
    if (raw.trim() === '') {
      cur = null;
      field = null;
      continue;
    }
    if (/^[ \t]/.test(raw)) {
      if (cur && field) cur[field].push(raw.slice(1));
      continue;
    }
    const m = /^([^:\s]+):\s*(.*)$/.exec(raw);
    if (!m) continue;
    if (!cur) {
      cur = {};
      paragraphs.push(cur);
    }
    field = m[1].toLowerCase();
    cur[field] = [m[2]];
  }
  for (const p of paragraphs) {
    const words = (f) => (p[f] ?? []).join(' ').split(/\s+/).filter(Boolean);
    if (/^no$/i.test((p.enabled ?? [''])[0].trim())) continue;
    const types = words('types');
    if (!types.includes('deb') && !types.includes('deb-src')) continue;
    let signedBy = null;
    let signedByKey = null;
    if (p['signed-by']) {
      const lines = p['signed-by'];
      if (lines.join('\n').includes('BEGIN PGP PUBLIC KEY BLOCK')) {
        signedByKey = lines.map((l) => (l.trim() === '.' ? '' : l)).join('\n').trim() + '\n';
      } else {
        signedBy = lines.join(' ').split(/[\s,]+/).filter(Boolean).join(',') || null;
      }
    }
    out.push({
      uris: words('uris'),
      suites: words('suites'),
      components: words('components'),
      signedBy,
      signedByKey,
      trusted: /^yes$/i.test((p.trusted ?? [''])[0].trim()),
    });
  }
  return out;
}

// deb-src lines for the same URIs/suites/components, keeping signed-by (and trusted).
function debSrcLines(entries, keyDir) {
  const lines = new Set();
  let keys = 0;
  for (const e of entries) {
    let signedBy = e.signedBy;
    if (e.signedByKey) {
      const keyFile = path.join(keyDir, `inline-key-${++keys}.asc`);
      fs.writeFileSync(keyFile, e.signedByKey);
      signedBy = keyFile;
    }
    const opts = [];
    if (signedBy) opts.push(`signed-by=${signedBy}`);
    if (e.trusted) opts.push('trusted=yes');
    for (const uri of e.uris) {
      if (/^cdrom:/i.test(uri)) continue;
      for (const suite of e.suites) {
        const comps = suite.endsWith('/') ? [] : e.components;
        if (!suite.endsWith('/') && comps.length === 0) continue;
        lines.add(['deb-src', opts.length ? `[${opts.join(' ')}]` : null, uri, suite, ...comps]
          .filter(Boolean).join(' '));
      }
    }
  }
  return [...lines];
}

function aptDownloaded(dir) {
  const files = fs.readdirSync(dir);
  const dsc = files.find((f) => f.endsWith('.dsc'));
  return dsc ? { dir, files, dsc } : null;
}

// Download Debian's source package into a directory; returns aptDownloaded() or null.
function aptDownload(work) {
  const sandbox = isRoot ? ['-o', 'APT::Sandbox::User=root'] : [];

  step('trying `apt-get source libfcgi` with the system deb-src entries');
  const sysDir = path.join(work, 'apt-system');
  fs.mkdirSync(sysDir);
  let r = run('apt-get', [...sandbox, '-q', 'source', '--download-only', 'libfcgi'], { cwd: sysDir });
  if (r.ok && aptDownloaded(sysDir)) return { ...aptDownloaded(sysDir), how: 'system deb-src' };
  step('no usable system deb-src entry; deriving a private deb-src list from /etc/apt');

  const entries = readAptEntries();
  const priv = path.join(work, 'apt-private');
  for (const d of ['parts', 'keys', 'lists/partial', 'cache/archives/partial', 'download']) {
    fs.mkdirSync(path.join(priv, d), { recursive: true });
  }
  const lines = debSrcLines(entries, path.join(priv, 'keys'));
  if (lines.length === 0) {
    step('no deb entries in /etc/apt to derive a deb-src list from; skipping apt');
    return null;
  }
  const listFile = path.join(priv, 'sources.list');
  fs.writeFileSync(listFile, `${lines.join('\n')}\n`);
  const aptOpts = [
    '-o', `Dir::Etc::SourceList=${listFile}`,
    '-o', `Dir::Etc::SourceParts=${path.join(priv, 'parts')}`,
    '-o', `Dir::State::Lists=${path.join(priv, 'lists')}`,
    '-o', `Dir::Cache=${path.join(priv, 'cache')}`,
  ];
  const dl = path.join(priv, 'download');

  const attempt = (prefix, extra) => {
    const cmd = prefix.length ? prefix[0] : 'apt-get';
    const pre = prefix.length ? [...prefix.slice(1), 'apt-get'] : [];
    step(`${prefix.length ? 'sudo -n ' : ''}apt-get update with a private deb-src list (${lines.length} entries, lists in ${priv})`);
    const u = run(cmd, [...pre, ...extra, ...aptOpts, '-q', 'update']);
    if (!u.ok) step('apt-get update reported errors (some repositories may lack source indexes); trying anyway');
    step(`${prefix.length ? 'sudo -n ' : ''}apt-get source --download-only libfcgi`);
    const s = run(cmd, [...pre, ...extra, ...aptOpts, '-q', 'source', '--download-only', 'libfcgi'], { cwd: dl });
    if (s.ok && aptDownloaded(dl)) return { ...aptDownloaded(dl), how: 'private deb-src list' };
    const why = `${u.output}\n${s.output}`;
    step(`apt-get source failed:\n${tail(why.split('\n').filter((l) => /^(E|W|Err):/.test(l)).join('\n') || why, 6)}`);
    return null;
  };

  r = attempt([], sandbox);
  if (r) return r;
  if (!isRoot && findProgram('sudo') && run('sudo', ['-n', 'true']).ok) {
    usedSudo = true;
    r = attempt(['sudo', '-n'], ['-o', 'APT::Sandbox::User=root']);
    if (r) return r;
  }
  return null;
}

let usedSudo = false;

// Unpack Debian's source package (orig tarball + Debian patches) into <work>/apt-tree.
function aptUnpack(dl, work) {
  const orig = dl.files.find((f) => f === UPSTREAM.origName);
  const version = dl.dsc.replace(/^libfcgi_/, '').replace(/\.dsc$/, '');
  if (!orig) {
    step(`apt offers libfcgi ${version}, not upstream ${UPSTREAM.version}; not using it`);
    return null;
  }
  const origHash = sha256(fs.readFileSync(path.join(dl.dir, orig)));
  if (origHash !== UPSTREAM.sha256) {
    step(`apt's ${orig} has sha256 ${origHash}, not the pinned ${UPSTREAM.sha256}; not using it`);
    return null;
  }
  step(`got Debian source libfcgi ${version} (orig tarball sha256 ok)`);
  const dest = path.join(work, 'apt-tree');
  if (findProgram('dpkg-source')) {
    step('unpacking with dpkg-source -x (applies Debian\'s patches)');
    const r = run('dpkg-source', ['-x', dl.dsc, dest], { cwd: dl.dir });
    if (!r.ok) {
      fail(`dpkg-source failed; command: cd ${shellQuote(dl.dir)} && dpkg-source -x ${dl.dsc} ${shellQuote(dest)}\n${tail(r.output)}`);
    }
    fs.rmSync(path.join(dest, '.pc'), { recursive: true, force: true });
  } else {
    step('dpkg-source not found; unpacking the tarballs and applying debian/patches/series');
    const tmp = path.join(work, 'apt-unpack');
    untar(path.join(dl.dir, orig), tmp);
    fs.renameSync(topDir(tmp), dest);
    const debTar = dl.files.find((f) => /\.debian\.tar\.[a-z0-9]+$/.test(f));
    const diffGz = dl.files.find((f) => f.endsWith('.diff.gz'));
    if (debTar) {
      untar(path.join(dl.dir, debTar), dest);
      const series = path.join(dest, 'debian', 'patches', 'series');
      const text = fs.existsSync(series) ? fs.readFileSync(series, 'utf8') : '';
      for (let line of text.split('\n')) {
        line = line.replace(/(^|\s)#.*/, '').trim();
        if (!line) continue;
        const [name, ...opts] = line.split(/\s+/);
        const strip = Number((opts.find((o) => /^-p\d+$/.test(o)) ?? '-p1').slice(2));
        step(`applying Debian patch ${name}`);
        const err = applyPatch(dest, path.join(dest, 'debian', 'patches', name), strip);
        if (err) fail(`Debian patch ${name} does not apply; command: cd ${shellQuote(dest)} && patch -p${strip} -F0 -i debian/patches/${name}\n${tail(err)}`);
      }
    } else if (diffGz) {
      step(`applying ${diffGz}`);
      const diff = path.join(work, 'debian.diff');
      const z = run('gzip', ['-dc', path.join(dl.dir, diffGz)]);
      if (!z.ok) fail(`gzip -dc ${diffGz} failed\n${tail(z.output)}`);
      fs.writeFileSync(diff, z.output);
      const err = applyPatch(dest, diff, 1);
      if (err) fail(`${diffGz} does not apply\n${tail(err)}`);
    }
  }
  checkTree(dest, `Debian source ${version}`);
  return {
    base: dest,
    source: {
      kind: 'apt',
      version,
      hash: sha256(fs.readFileSync(path.join(dl.dir, dl.dsc))),
      description: `Debian source package libfcgi ${version} (apt, ${dl.how})`,
    },
  };
}

function sourceFromApt(work) {
  if (!findProgram('apt-get')) {
    step('apt-get not found; skipping the Debian source package');
    return null;
  }
  const dl = aptDownload(work);
  if (!dl) return null;
  return aptUnpack(dl, work);
}

// ---------------------------------------------------------------- source c: tarball

async function download(url, dest) {
  try {
    const res = await fetch(url, { redirect: 'follow', signal: AbortSignal.timeout(120_000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    fs.writeFileSync(dest, Buffer.from(await res.arrayBuffer()));
  } catch (e) {
    const why = e.cause?.code ?? e.cause?.message ?? e.message;
    // Node's fetch ignores proxy settings; curl honours them.
    if (!findProgram('curl')) throw new Error(why);
    const r = run('curl', ['-fsSL', '--max-time', '120', '-o', dest, url]);
    if (!r.ok) throw new Error(`${why}; ${r.output.split('\n').pop()}`);
  }
}

async function sourceFromTarball(work) {
  if (!findProgram('tar')) fail('the \'tar\' program is required; install it with: sudo apt-get install tar');
  const file = path.join(work, UPSTREAM.origName);
  for (const url of UPSTREAM.urls) {
    step(`downloading ${url}`);
    try {
      await download(url, file);
    } catch (e) {
      step(`download failed: ${e.message}`);
      continue;
    }
    const got = sha256(fs.readFileSync(file));
    if (got !== UPSTREAM.sha256) {
      step(`sha256 mismatch (got ${got}, want ${UPSTREAM.sha256}); ignoring this download`);
      continue;
    }
    step('sha256 ok; unpacking');
    const tmp = path.join(work, 'tarball');
    untar(file, tmp);
    const dest = topDir(tmp);
    checkTree(dest, `the ${UPSTREAM.origName} tarball`);
    return {
      base: dest,
      source: {
        kind: 'tarball',
        version: UPSTREAM.version,
        hash: UPSTREAM.sha256,
        description: `fcgi2 ${UPSTREAM.version} tarball (sha256 ${UPSTREAM.sha256.slice(0, 12)}…)`,
      },
    };
  }
  fail([
    `could not download the libfcgi ${UPSTREAM.version} source. Fetch it yourself and point the build at it:`,
    `  curl -fLO ${UPSTREAM.urls[0]}`,
    `  echo '${UPSTREAM.sha256}  ${UPSTREAM.origName}' | sha256sum -c`,
    `  tar -xzf ${UPSTREAM.origName}`,
    `  LIBFCGI_SOURCE_DIR="$PWD/fcgi2-${UPSTREAM.version}" ${SELF}`,
  ].join('\n'));
}

// ---------------------------------------------------------------- main

function wantedKinds(mode) {
  return mode === 'auto' ? ['apt', 'tarball'] : [mode];
}

function acceptableSource(src, mode, dirHash) {
  if (!src) return false;
  if (mode === 'dir') return src.kind === 'dir' && src.hash === dirHash;
  return wantedKinds(mode).includes(src.kind);
}

function samePatches(a, b) {
  return Array.isArray(a) && a.length === b.length &&
    a.every((p, i) => p.name === b[i].name && p.sha256 === b[i].sha256);
}

function savePristine(base, source) {
  const tmp = `${PRISTINE}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  copyTree(base, tmp);
  fs.writeFileSync(path.join(tmp, PRISTINE_INFO), `${JSON.stringify({ source, treeHash: hashTree(tmp) }, null, 2)}\n`);
  fs.rmSync(PRISTINE, { recursive: true, force: true });
  fs.renameSync(tmp, PRISTINE);
}

function cachedPristine(mode) {
  const info = readJson(path.join(PRISTINE, PRISTINE_INFO));
  if (!info || !acceptableSource(info.source, mode)) return null;
  if (hashTree(PRISTINE) !== info.treeHash) return null;
  return { base: PRISTINE, source: info.source };
}

// Copy base to a fresh build dir and apply our patches; returns the build dir or the error.
function buildPatched(base, patches) {
  const build = path.join(DEPS, `.libfcgi-build-${process.pid}`);
  fs.rmSync(build, { recursive: true, force: true });
  copyTree(base, build);
  for (const p of patches) {
    step(`applying ${p.name}`);
    const err = applyPatch(build, path.join(PATCH_DIR, p.name));
    if (err) {
      fs.rmSync(build, { recursive: true, force: true });
      return { error: { patch: p.name, output: err } };
    }
  }
  return { build };
}

async function main() {
  const force = process.argv.includes('--force');
  const offline = truthy(process.env.LIBFCGI_OFFLINE);
  const envDir = process.env.LIBFCGI_SOURCE_DIR?.trim();
  const fetchMode = (process.env.LIBFCGI_FETCH ?? 'auto').trim().toLowerCase() || 'auto';
  if (!['auto', 'apt', 'tarball'].includes(fetchMode)) {
    fail(`LIBFCGI_FETCH must be auto, apt or tarball (got '${process.env.LIBFCGI_FETCH}')`);
  }
  const mode = envDir ? 'dir' : fetchMode;
  const patches = patchList();
  let dirHash = null;
  if (mode === 'dir') {
    checkTree(path.resolve(envDir), `LIBFCGI_SOURCE_DIR=${envDir}`);
    dirHash = hashTree(path.resolve(envDir));
  }

  const stamp = readJson(path.join(TREE, STAMP));
  if (!force && stamp && stamp.format === STAMP_FORMAT && samePatches(stamp.patches, patches) &&
      acceptableSource(stamp.source, mode, dirHash) && fs.existsSync(TREE) && hashTree(TREE) === stamp.treeHash) {
    step(`${rel(TREE)} is up to date (${stamp.source.description}, ${patches.length} patches)`);
    return;
  }
  if (stamp) step(`${rel(TREE)} is out of date; rebuilding`);

  requirePatch();
  fs.mkdirSync(DEPS, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'libfcgi-fetch-'));
  try {
    let got = null;
    let fromCache = false;
    if (mode === 'dir') {
      got = sourceFromDir(envDir, work);
    } else {
      got = cachedPristine(mode);
      if (got) {
        fromCache = true;
        step(`using the cached source in ${rel(PRISTINE)} (${got.source.description})`);
      } else if (offline) {
        fail('LIBFCGI_OFFLINE=1 is set and no source is cached; run with ' +
          `LIBFCGI_SOURCE_DIR=/path/to/fcgi2-${UPSTREAM.version} ${SELF} (or unset LIBFCGI_OFFLINE)`);
      } else {
        if (mode !== 'tarball') got = sourceFromApt(work);
        if (!got && mode === 'apt') {
          fail(`LIBFCGI_FETCH=apt: could not get Debian's libfcgi source package; run ${SELF} without LIBFCGI_FETCH to fall back to the pinned tarball`);
        }
        if (!got) got = await sourceFromTarball(work);
      }
    }

    let result = buildPatched(got.base, patches);
    if (result.error && got.source.kind === 'apt' && mode === 'auto' && !offline) {
      step(`${result.error.patch} does not apply to ${got.source.description}; falling back to the pinned tarball`);
      got = await sourceFromTarball(work);
      fromCache = false;
      result = buildPatched(got.base, patches);
    }
    if (result.error) {
      const hint = {
        dir: `LIBFCGI_SOURCE_DIR must be an unpatched fcgi2 ${UPSTREAM.version} tree; or unset it and run: ${SELF}`,
        apt: `to build from the pinned upstream tarball instead run: rm -rf ${rel(PRISTINE)} && LIBFCGI_FETCH=tarball ${SELF}`,
        tarball: `the patch itself needs fixing; check it with: patch -p1 -F0 --dry-run -i ${rel(path.join(PATCH_DIR, result.error.patch))} ` +
          `(run in an unpacked fcgi2-${UPSTREAM.version})`,
      }[got.source.kind];
      fail(`${result.error.patch} does not apply to ${got.source.description}:\n${tail(result.error.output)}\n${hint}`);
    }
    if (!fromCache && mode !== 'dir') savePristine(got.base, got.source);

    const build = result.build;
    const stampData = {
      format: STAMP_FORMAT,
      generatedBy: 'scripts/fetch-libfcgi.mjs',
      source: got.source,
      patches,
      treeHash: hashTree(build),
    };
    fs.writeFileSync(path.join(build, STAMP), `${JSON.stringify(stampData, null, 2)}\n`);
    fs.rmSync(TREE, { recursive: true, force: true });
    fs.renameSync(build, TREE);
    step(`${rel(TREE)} ready: ${got.source.description} + ${patches.length} patches`);
  } finally {
    fs.rmSync(path.join(DEPS, `.libfcgi-build-${process.pid}`), { recursive: true, force: true });
    fs.rmSync(`${PRISTINE}.tmp-${process.pid}`, { recursive: true, force: true });
    try {
      fs.rmSync(work, { recursive: true, force: true });
    } catch {
      // files written by `sudo apt-get` belong to root
      if (usedSudo) run('sudo', ['-n', 'rm', '-rf', work]);
    }
  }
}

try {
  await main();
} catch (e) {
  if (e instanceof FetchError) {
    process.stderr.write(`fetch-libfcgi: error: ${e.message}\n`);
  } else {
    process.stderr.write(`fetch-libfcgi: unexpected error: ${e?.stack ?? e}\n` +
      `fetch-libfcgi: rerun with a clean state: rm -rf ${rel(DEPS)} && ${SELF}\n`);
  }
  process.exitCode = 1;
}
