#!/usr/bin/env bash
# Builds the OCI archives that Skiff's runtime tests import, from Debian packages
# only (no registry needed): busybox from `busybox-static`, assembled with `umoci`.
#
#   scripts/build-test-images.sh [OUT_DIR]     (default: target/test-images)
#
# Writes OUT_DIR/busybox.tar: a tar of an OCI image layout whose index names the
# image as upstream does (docker.io/library/busybox:latest and
# registry.k8s.io/e2e-test-images/busybox:1.36.1-1), so `busybox` resolves to it.
# Idempotent: an existing archive newer than this script is kept.
set -euo pipefail

out="${1:-$(cd "$(dirname "$0")/.." && pwd)/target/test-images}"
mkdir -p "$out"
archive="$out/busybox.tar"
if [[ -s "$archive" && "$archive" -nt "$0" ]]; then
    echo "$archive is up to date"
    exit 0
fi

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "build-test-images: '$1' not found; install the Debian package '$2' (apt-get install $2)" >&2
        exit 1
    fi
}
need umoci umoci
need jq jq
busybox=/bin/busybox
linkage="$(LC_ALL=C ldd "$busybox" 2>&1 || true)"
if [[ ! -x "$busybox" || ( "$linkage" != *"not a dynamic executable"* && "$linkage" != *"statically linked"* ) ]]; then
    echo "build-test-images: $busybox is missing or not static; install the Debian package 'busybox-static'" >&2
    exit 1
fi

work="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

layout="$work/layout"
umoci init --layout "$layout"
umoci new --image "$layout:busybox"
# umoci unpack/repack gives a layer whose ownership is root's, as in upstream images.
umoci unpack --image "$layout:busybox" "$work/bundle"
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/home" "$root/var" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
done
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
nogroup:x:65534:
GROUP
umoci repack --image "$layout:busybox" "$work/bundle"
umoci config --image "$layout:busybox" \
    --os linux --architecture amd64 \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.cmd sh --config.workingdir /
umoci gc --layout "$layout"

# Name the manifest the way upstream does: one index entry per full reference
# (OCI's `org.opencontainers.image.ref.name` may hold a full reference).
jq '.manifests |= ([.[0]] | map(
        (. | .annotations["org.opencontainers.image.ref.name"] = "docker.io/library/busybox:latest"),
        (. | .annotations["org.opencontainers.image.ref.name"] = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1")))' \
    "$layout/index.json" > "$work/index.json"
mv "$work/index.json" "$layout/index.json"

tar --sort=name -C "$layout" -cf "$work/busybox.tar" .
mv "$work/busybox.tar" "$archive"
echo "built $archive"
