#!/bin/sh
# Installs (or upgrades, or removes) Gatewarden from an unpacked release folder.
#
#   sudo ./install.sh [--device-id ID] [--node PATH]    install or upgrade on this gateway
#   sudo ./install.sh --uninstall [--purge]              remove; --purge also deletes keys and outbox
#   ./install.sh --root DIR ...                          the same into DIR (tests, image builds)
#
# Idempotent: running it again changes nothing but what differs. An upgrade unpacks the new
# release beside the old ones and switches the `current` link atomically; the config, keys and
# outbox stay. Layout (under DIR):
#   opt/gatewarden/releases/<version>/   opt/gatewarden/releases/current -> <version>
#   (the layout `gatewarden update apply` switches with update.releases_dir: /opt/gatewarden/releases)
#   etc/gatewarden/                      config (root:gatewarden 0750), keys/ (gatewarden 0700)
#   etc/gatewarden/data -> ../../var/lib/gatewarden   state: outbox, detector state, socket
#   etc/systemd/system/gatewarden.service, usr/local/bin/gatewarden
set -eu

ROOT=/
NODE=$(command -v node || true)
USER_NAME=gatewarden
DEVICE_ID=
MODE=install
PURGE=0
while [ $# -gt 0 ]; do
  case $1 in
    --root) ROOT=$2; shift 2 ;;
    --node) NODE=$2; shift 2 ;;
    --device-id) DEVICE_ID=$2; shift 2 ;;
    --uninstall) MODE=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=${ROOT%/}
SRC=$(cd "$(dirname "$0")" && pwd)
say() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

if [ "$MODE" = uninstall ]; then
  if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now gatewarden.service 2>/dev/null || true
  fi
  rm -f "$ROOT/etc/systemd/system/gatewarden.service" "$ROOT/usr/local/bin/gatewarden"
  rm -rf "$ROOT/opt/gatewarden"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT/etc/gatewarden" "$ROOT/var/lib/gatewarden"
    say "removed Gatewarden, its config, keys and outbox"
  else
    say "removed Gatewarden; kept $ROOT/etc/gatewarden (config, keys) and $ROOT/var/lib/gatewarden (outbox): --purge deletes them"
  fi
  exit 0
fi

[ -n "$NODE" ] && [ -x "$NODE" ] || die "no node found: install Node.js $(sed -n 's/.*"node_major": *\([0-9]*\).*/\1/p' "$SRC/RELEASE.json") or give --node PATH"
VERSION=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$SRC/RELEASE.json" | head -n 1)
[ -n "$VERSION" ] || die "$SRC/RELEASE.json is missing or unreadable: run install.sh from an unpacked release"

# The release must be whole and built for this Node major and architecture.
"$NODE" -e '
  const fs = require("fs"), path = require("path"), crypto = require("crypto");
  const dir = process.argv[1], rel = JSON.parse(fs.readFileSync(path.join(dir, "RELEASE.json"), "utf8"));
  const major = Number(process.versions.node.split(".")[0]);
  if (rel.node_major !== major) { console.error(`install.sh: error: this release was built for Node ${rel.node_major}, this node is ${process.version}: its native addons would not load`); process.exit(1); }
  if (rel.arch !== process.arch) { console.error(`install.sh: error: this release is for ${rel.arch}, this machine is ${process.arch}`); process.exit(1); }
  for (const [f, h] of Object.entries(rel.files)) {
    const got = crypto.createHash("sha256").update(fs.readFileSync(path.join(dir, f))).digest("hex");
    if (got !== h) { console.error(`install.sh: error: ${f} does not match RELEASE.json (damaged download?)`); process.exit(1); }
  }' "$SRC"

# The service user (system, no login), also in dialout for serial ports.
PFX=
if [ -n "$ROOT" ]; then
  PFX="--prefix $ROOT"
  mkdir -p "$ROOT/etc"
  for f in passwd group shadow gshadow; do [ -e "$ROOT/etc/$f" ] || : > "$ROOT/etc/$f"; done
  grep -q '^root:' "$ROOT/etc/passwd" || echo 'root:x:0:0:root:/root:/bin/sh' >> "$ROOT/etc/passwd"
  grep -q '^root:' "$ROOT/etc/group" || echo 'root:x:0:' >> "$ROOT/etc/group"
  grep -q '^dialout:' "$ROOT/etc/group" || echo 'dialout:x:20:' >> "$ROOT/etc/group"
fi
if ! grep -q "^$USER_NAME:" "$ROOT/etc/passwd"; then
  # shellcheck disable=SC2086
  useradd $PFX --system --user-group --home-dir /var/lib/gatewarden --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
  say "created system user $USER_NAME"
fi
grep -q "^dialout:.*[:,]$USER_NAME\(,\|\$\)" "$ROOT/etc/group" || usermod $PFX -a -G dialout "$USER_NAME"
uid=$(awk -F: -v u="$USER_NAME" '$1 == u { print $3 }' "$ROOT/etc/passwd")
gid=$(awk -F: -v u="$USER_NAME" '$1 == u { print $4 }' "$ROOT/etc/passwd")

# The release, then the atomic switch of `current`.
dest="$ROOT/opt/gatewarden/releases/$VERSION"
if [ -f "$dest/RELEASE.json" ] && cmp -s "$dest/RELEASE.json" "$SRC/RELEASE.json"; then
  say "release $VERSION already installed"
else
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  cp -a "$SRC/." "$dest.tmp/"
  chown -R 0:0 "$dest.tmp"
  chmod -R go-w "$dest.tmp"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  say "installed release $VERSION"
fi
# An upgrade never switches to a release that would refuse the existing config: the new release
# validates it first and names every key to change (the old release stays current).
if [ -f "$ROOT/etc/gatewarden/gatewarden.yaml" ]; then
  if ! "$NODE" "$dest/dist/gatewarden.cjs" config validate --config "$ROOT/etc/gatewarden/gatewarden.yaml" >/dev/null; then
    die "the existing config does not validate under release $VERSION (errors above): change the keys it names, then run install.sh again; the current release stays"
  fi
fi
rel="$ROOT/opt/gatewarden/releases"
prev=$(readlink "$rel/current" 2>/dev/null || true)
ln -sfn "$VERSION" "$rel/current.tmp"
mv -T "$rel/current.tmp" "$rel/current"
# Keep the new release and the one before it (to go back to); older ones only cost SD space.
for d in "$rel"/*; do
  case ${d##*/} in "$VERSION"|"${prev##*/}"|current) ;; *) rm -rf "$d" ;; esac
done

# Folders and their modes: config readable by the service, state and keys its own.
install -d -m 0755 "$ROOT/usr/local/bin" "$ROOT/etc/systemd/system" "$ROOT/var/lib"
install -d -m 0750 -o 0 -g "$gid" "$ROOT/etc/gatewarden"
install -d -m 0700 -o "$uid" -g "$gid" "$ROOT/etc/gatewarden/keys" "$ROOT/var/lib/gatewarden"
[ -L "$ROOT/etc/gatewarden/data" ] || ln -s ../../var/lib/gatewarden "$ROOT/etc/gatewarden/data"

# The command, the unit (with this node and these paths), the config schema for editors.
cat > "$ROOT/usr/local/bin/gatewarden.tmp" <<WRAP
#!/bin/sh
exec $NODE /opt/gatewarden/releases/current/dist/gatewarden.cjs "\$@"
WRAP
chmod 0755 "$ROOT/usr/local/bin/gatewarden.tmp"
mv "$ROOT/usr/local/bin/gatewarden.tmp" "$ROOT/usr/local/bin/gatewarden"
sed -e "s#@NODE@#$NODE#g; s#@PREFIX@#/opt/gatewarden#g; s#@CONFDIR@#/etc/gatewarden#g" "$SRC/systemd/gatewarden.service" > "$ROOT/etc/systemd/system/gatewarden.service"
chmod 0644 "$ROOT/etc/systemd/system/gatewarden.service"
install -m 0644 "$SRC/gatewarden.schema.json" "$ROOT/etc/gatewarden/gatewarden.schema.json"

# A first config and identity; never overwritten.
CLI="$NODE $ROOT/opt/gatewarden/releases/current/dist/gatewarden.cjs"
if [ ! -f "$ROOT/etc/gatewarden/gatewarden.yaml" ]; then
  # shellcheck disable=SC2086
  $CLI init --dir "$ROOT/etc/gatewarden" ${DEVICE_ID:+--device-id "$DEVICE_ID"} >/dev/null
  chown 0:"$gid" "$ROOT/etc/gatewarden/gatewarden.yaml"
  chmod 0640 "$ROOT/etc/gatewarden/gatewarden.yaml"
  chown -R "$uid:$gid" "$ROOT/etc/gatewarden/keys"
  say "created $ROOT/etc/gatewarden/gatewarden.yaml and this gateway's identity"
else
  say "kept the existing config $ROOT/etc/gatewarden/gatewarden.yaml"
fi

if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  say "next: gatewarden doctor --config /etc/gatewarden/gatewarden.yaml, then systemctl enable --now gatewarden"
else
  say "installed into ${ROOT:-/}; check it with: $CLI doctor --config $ROOT/etc/gatewarden/gatewarden.yaml"
fi
