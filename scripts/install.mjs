#!/usr/bin/env node
// The package's npm `install` hook: makes sure there is an addon to load.
//
//   - build/Release/fcgi.node exists, or prebuilds/<platform>-<arch>/ holds a
//     .node file (what node-gyp-build loads)          -> nothing to do
//   - otherwise: node scripts/fetch-libfcgi.mjs       (patched libfcgi source)
//                node-gyp rebuild                     (npm's own node-gyp)
//
// In a clone of this repository `npm ci` runs this hook as well, which builds
// the addon on the first install; scripts/setup.sh rebuilds it when native/
// changes later.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function say(msg) {
  process.stderr.write(`libfcgi install: ${msg}\n`);
}

function fail(msg) {
  say(`error: ${msg}`);
  process.exit(1);
}

function hasAddon() {
  if (fs.existsSync(path.join(ROOT, 'build', 'Release', 'fcgi.node'))) return true;
  const dir = path.join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
  try {
    return fs.readdirSync(dir).some((f) => f.endsWith('.node'));
  } catch {
    return false;
  }
}

function onPath(name) {
  if (path.isAbsolute(name)) return isExecutable(name);
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir && isExecutable(path.join(dir, name)));
}

function isExecutable(p) {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function nodeGypScript() {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && fs.existsSync(fromNpm)) return fromNpm;
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // npm ships its own copy next to npm-cli.js
    const npmCli = process.env.npm_execpath;
    if (npmCli) {
      const bundled = path.join(path.dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
      if (fs.existsSync(bundled)) return bundled;
    }
  }
  return null;
}

// The tools a source build needs; names the missing ones with how to get them.
function checkTools() {
  const missing = [];
  const cxx = (process.env.CXX ?? 'g++').split(/\s+/)[0];
  if (!onPath(cxx)) missing.push(process.env.CXX ? `${cxx} (from $CXX)` : 'g++');
  if (!onPath('make')) missing.push('make');
  const python = process.env.npm_config_python || process.env.PYTHON;
  if (python ? !onPath(python) : !onPath('python3')) missing.push(python ? `${python} (from the python setting)` : 'python3');
  if (!onPath('patch')) missing.push('patch');
  if (missing.length === 0) return;
  const debian = onPath('apt-get')
    ? `\n  on Debian/Ubuntu: sudo apt-get install -y g++ make python3 patch dpkg-dev ca-certificates`
    : '';
  fail(`building the native addon needs ${missing.join(', ')}, not found on PATH.${debian}\n` +
    '  then run `npm rebuild libfcgi` (or reinstall).');
}

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit' });
  if (r.error) fail(`${what} could not start: ${r.error.message}`);
  if (r.status !== 0) {
    fail(`${what} failed (${r.signal ? `signal ${r.signal}` : `exit code ${r.status}`}); command: ` +
      `cd ${ROOT} && ${[cmd === process.execPath ? 'node' : cmd, ...args].join(' ')}`);
  }
}

// `npm install --package-lock-only` and `--dry-run` run this hook too, with no
// dependencies installed: nothing to build then.
if (process.env.npm_config_package_lock_only === 'true' || process.env.npm_config_dry_run === 'true') process.exit(0);
if (hasAddon()) process.exit(0);

say('no prebuilt addon for this platform; building it from source');
checkTools();
const gyp = nodeGypScript();
if (!gyp) fail('node-gyp was not found (it comes with npm); install it with: npm install -g node-gyp');
run(process.execPath, [path.join('scripts', 'fetch-libfcgi.mjs')], 'fetching the libfcgi source');
run(process.execPath, [gyp, 'rebuild'], 'node-gyp rebuild');
say('built build/Release/fcgi.node');
