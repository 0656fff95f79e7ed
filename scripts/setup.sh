#!/usr/bin/env bash
# Prepares a clone of libfcgi for development, from nothing to a loadable
# package: system packages (apt), npm packages, the native addon, dist/.
#
#   bash scripts/setup.sh           build tools, npm ci, the addon, dist/
#   bash scripts/setup.sh --test    the same plus what the tests drive:
#                                   nginx, apache2 with mod_fcgid, lighttpd,
#                                   cgi-fcgi, spawn-fcgi, curl
#                                   (the tests start their own Apache and
#                                   lighttpd; the system's apache2 and
#                                   lighttpd services are left stopped)
#   bash scripts/setup.sh --demo    the same plus nginx when it can be
#                                   installed (the demo also works without)
#
# Idempotent and quick when everything is in place: it only looks up tools
# with `command -v` and compares file times.  Each step runs only when needed:
#   npm ci                when node_modules/ is missing or older than package-lock.json
#                         (npm install if npm ci refuses the lock file, see below)
#   native addon          when build/Release/fcgi.node is missing or older than
#                         anything in native/ or binding.gyp
#   dist/ (tsup)          when dist/index.js is missing or older than src/
#   apt-get install       when a tool is missing: as root directly, otherwise with
#                         `sudo -n` if that works, otherwise it stops and prints the
#                         exact command to run
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=build
for arg in "$@"; do
  case "$arg" in
    --test) mode=test ;;
    --demo) [[ $mode == test ]] || mode=demo ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "setup: unknown option '$arg' (use --test or --demo)" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- Node.js

command -v node >/dev/null 2>&1 ||
  die "Node.js >= 20 is required and 'node' is not on PATH (install it from https://nodejs.org/ or your distribution)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
(( node_major >= 20 )) ||
  die "Node.js >= 20 is required; found $(node -v) at $(command -v node)"
command -v npm >/dev/null 2>&1 || die "npm is required and not on PATH (it comes with Node.js)"

# ---------------------------------------------------------------- system tools

# Where a tool is found even when sbin is not on a normal user's PATH.
have() {
  command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /usr/bin/$1 || -x /sbin/$1 ]]
}

has_apt=false
command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 && has_apt=true

missing_tools=()   # for the message on systems without apt
missing_pkgs=()    # Debian/Ubuntu package names
optional_pkgs=()   # --demo: nginx, nice to have

# LIBFCGI_SETUP_ASSUME_MISSING="tool ...": treat these tools as missing (to
# try the install path of this script on a machine that has them). A "tool"
# given as a path (need /usr/lib/.../mod_fcgid.so PKG) is a file that must
# exist: a module, not a command.
need() {  # need TOOL PACKAGE [optional]
  local tool=$1 pkg=$2 optional=${3:-}
  if [[ " ${LIBFCGI_SETUP_ASSUME_MISSING:-} " != *" $tool "* ]]; then
    if [[ $tool == /* ]]; then
      [[ -e $tool ]] && return 0
    else
      have "$tool" && return 0
    fi
  fi
  if [[ -n $optional ]]; then
    optional_pkgs+=("$pkg")
  else
    missing_tools+=("$tool")
    missing_pkgs+=("$pkg")
  fi
}

# The native build: node-gyp (python3, make, a C++ compiler) and
# scripts/fetch-libfcgi.mjs (patch; on apt systems dpkg-source unpacks
# Debian's source package; ca-certificates for the HTTPS fallback).
need "${CXX:-g++}" g++
need make make
need python3 python3
need patch patch
if $has_apt; then
  need dpkg-source dpkg-dev
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] || { missing_tools+=(ca-certificates); missing_pkgs+=(ca-certificates); }
fi

case $mode in
  test)
    need nginx NGINX
    need apache2 apache2
    need /usr/lib/apache2/modules/mod_fcgid.so libapache2-mod-fcgid
    need lighttpd lighttpd
    need cgi-fcgi libfcgi-bin
    need spawn-fcgi spawn-fcgi
    need curl curl
    ;;
  demo)
    need nginx NGINX optional
    ;;
esac

# nginx-light where the distribution still has it (Debian 12, Ubuntu 22.04),
# else nginx.
nginx_package() {
  local cand
  cand=$(apt-cache policy nginx-light 2>/dev/null | awk '/Candidate:/ { print $2 }')
  if [[ -n $cand && $cand != "(none)" ]]; then echo nginx-light; else echo nginx; fi
}

resolve_pkgs() {  # prints the package names with NGINX resolved
  local p
  for p in "$@"; do
    if [[ $p == NGINX ]]; then nginx_package; else echo "$p"; fi
  done
}

sudo_cmd=()
apt_updated=false

# How we may run apt: 0 = as root or with sudo -n (sudo_cmd set), 1 = not at all.
apt_allowed() {
  $has_apt || return 1
  if [[ $(id -u) -eq 0 ]]; then
    sudo_cmd=()
    return 0
  fi
  if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    sudo_cmd=(sudo -n)
    return 0
  fi
  return 1
}

apt_run() {
  # DEBIAN_FRONTEND passed through env: sudo drops most of the environment.
  ${sudo_cmd[@]+"${sudo_cmd[@]}"} env DEBIAN_FRONTEND=noninteractive \
    apt-get -q -o DPkg::Lock::Timeout=300 "$@"
}

apt_install() {  # apt_install PKG... (NGINX resolved here)
  if ! $apt_updated; then
    say "apt-get update"
    apt_run update || say "apt-get update reported errors; trying to install anyway"
    apt_updated=true
  fi
  local pkgs
  mapfile -t pkgs < <(resolve_pkgs "$@")
  say "apt-get install ${pkgs[*]}"
  apt_run install -y --no-install-recommends "${pkgs[@]}"
}

if (( ${#missing_pkgs[@]} > 0 )); then
  if ! $has_apt; then
    die "missing tools: ${missing_tools[*]}. This script installs them only with apt (Debian/Ubuntu); install them with your package manager (the tool names are also the usual package names; cgi-fcgi comes with the fcgi / libfcgi package), then rerun: bash $0 $*"
  fi
  if ! apt_allowed; then
    die "missing tools: ${missing_tools[*]}. Installing them needs root; run:
    sudo apt-get update && sudo apt-get install -y --no-install-recommends $(resolve_pkgs "${missing_pkgs[@]}" | paste -sd ' ')
then rerun: bash $0 $*"
  fi
  say "missing tools: ${missing_tools[*]}"
  apt_install "${missing_pkgs[@]}"
  for t in "${missing_tools[@]}"; do
    [[ $t == ca-certificates ]] && continue
    if [[ $t == /* ]]; then
      [[ -e $t ]] || die "'$t' is still missing after apt-get install"
    else
      have "$t" || die "'$t' is still missing after apt-get install"
    fi
  done
  # Debian starts (and enables) the apache2 service on installation unless
  # /usr/sbin/policy-rc.d forbids it; the tests run their own Apache on a
  # free port and need no system web server on port 80.
  if [[ " ${missing_pkgs[*]} " == *" apache2 "* ]]; then
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
      ${sudo_cmd[@]+"${sudo_cmd[@]}"} systemctl disable --now apache2 >/dev/null 2>&1 || true
    elif command -v invoke-rc.d >/dev/null 2>&1; then
      ${sudo_cmd[@]+"${sudo_cmd[@]}"} invoke-rc.d apache2 stop >/dev/null 2>&1 || true
    fi
    say "apache2 installed; its system service is left stopped"
  fi
  # The same for lighttpd (its package starts it on port 80 too).
  if [[ " ${missing_pkgs[*]} " == *" lighttpd "* ]]; then
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
      ${sudo_cmd[@]+"${sudo_cmd[@]}"} systemctl disable --now lighttpd >/dev/null 2>&1 || true
    elif command -v invoke-rc.d >/dev/null 2>&1; then
      ${sudo_cmd[@]+"${sudo_cmd[@]}"} invoke-rc.d lighttpd stop >/dev/null 2>&1 || true
    fi
    say "lighttpd installed; its system service is left stopped"
  fi
fi

if (( ${#optional_pkgs[@]} > 0 )); then
  if apt_allowed; then
    apt_install "${optional_pkgs[@]}" || say "could not install nginx; the demo will do without it"
  else
    if $has_apt; then
      say "nginx is not installed (to see the demo behind nginx: sudo apt-get install -y $(resolve_pkgs NGINX)); the demo does without it"
    else
      say "nginx is not installed; the demo does without it"
    fi
  fi
fi

# ---------------------------------------------------------------- npm packages

# npm rewrites node_modules/.package-lock.json on every install, so its time
# says when node_modules was last brought in line with package-lock.json.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  # npm ci runs our install hook (scripts/install.mjs), which builds the addon
  # when there is none.
  say "npm ci (also builds the native addon when there is none)"
  npm_log=$(mktemp)
  trap 'rm -f "$npm_log"' EXIT
  if ! npm ci --no-audit --no-fund 2>"$npm_log"; then
    if grep -q 'can only install packages when your package.json and package-lock.json' "$npm_log"; then
      # A registry that lacks some optional platform packages (e.g. rollup's
      # builds for other systems) leaves a lock file that npm install accepts
      # and npm ci refuses.
      say "npm ci refused package-lock.json ($(grep -c '^npm error Missing:' "$npm_log" || true) optional entries missing); using npm install instead"
      npm install --no-audit --no-fund
    else
      cat "$npm_log" >&2
      die "npm ci failed (output above)"
    fi
  else
    cat "$npm_log" >&2
  fi
fi

# ---------------------------------------------------------------- native addon

addon=build/Release/fcgi.node
if [[ ! -f $addon ]] || [[ -n $(find native binding.gyp -newer "$addon" -print -quit) ]]; then
  if [[ -f $addon ]]; then say "native sources changed; rebuilding the addon"; else say "building the addon"; fi
  node scripts/fetch-libfcgi.mjs
  npx --no node-gyp rebuild -j max
fi

# ---------------------------------------------------------------- dist/

if [[ ! -f dist/index.js ]] || [[ -n $(find src tsup.config.ts -newer dist/index.js -print -quit) ]]; then
  say "building dist/ (tsup)"
  npx --no tsup
fi

say "ready ($mode)"
