#!/usr/bin/env bash
# Builds the OCI archive of the images Skiff's tests import, with no registry: busybox
# from Debian's `busybox-static`, and agnhost (busybox plus `/agnhost`, Skiff's own
# re-implementation of the subcommands of upstream's agnhost that the ported tests use,
# from crates/agnhost, linked statically), and kitten (busybox plus a layer of data
# files, standing in for upstream's image volume test image), assembled with `umoci`.
#
#   scripts/build-test-images.sh [OUT_DIR]     (default: target/test-images)
#
# Writes OUT_DIR/busybox.tar: a tar of an OCI image layout whose index names the
# images as upstream does (docker.io/library/busybox:latest,
# registry.k8s.io/e2e-test-images/busybox:1.36.1-1 and
# registry.k8s.io/e2e-test-images/agnhost:2.52), so `busybox` resolves to the first;
# and OUT_DIR/kitten.tar, naming registry.k8s.io/e2e-test-images/kitten:1.7 alone (tests
# push it to a registry to pull, so runtimes that import busybox.tar do not hold it).
# Idempotent: an existing archive newer than this script and agnhost's sources is kept.
set -euo pipefail

workspace="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$workspace/target/test-images}"
mkdir -p "$out"
archive="$out/busybox.tar"
kitten="$out/kitten.tar"
if [[ -s "$archive" && "$archive" -nt "$0" && -s "$kitten" && "$kitten" -nt "$0" && -z "$(find "$workspace/crates/agnhost" -newer "$archive" -print -quit)" ]]; then
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
need openssl openssl
need cargo "a Rust toolchain (rustup)"
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

# agnhost: the busybox image and one more layer holding the static binary. Its own
# target dir: the tests that call this script may hold the workspace's build lock.
cargo rustc --quiet --release --manifest-path "$workspace/Cargo.toml" -p skiff-agnhost --bin agnhost \
    --target-dir "$out/agnhost-build" -- -C target-feature=+crt-static -C strip=debuginfo
umoci tag --image "$layout:busybox" agnhost
umoci unpack --image "$layout:agnhost" "$work/agnhost"
install -m 0755 "$out/agnhost-build/release/agnhost" "$work/agnhost/rootfs/agnhost"
# The certificate and key `agnhost porter` serves its TLS ports with, as upstream's
# image carries them: valid for 127.0.0.1, ::1 and example.com, for decades.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 20000 \
    -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:example.com" \
    -keyout "$work/agnhost/rootfs/localhost.key" -out "$work/agnhost/rootfs/localhost.crt" 2>/dev/null
umoci repack --image "$layout:agnhost" "$work/agnhost"
umoci config --image "$layout:agnhost" --config.entrypoint /agnhost --config.cmd pause

# kitten: upstream's is Alpine with /data.json naming /kitten.jpg; the image volume
# tests read those files (and /etc/os-release, here Skiff's own) through a mount.
umoci tag --image "$layout:busybox" kitten
umoci unpack --image "$layout:kitten" "$work/kitten"
printf '{"image": "kitten.jpg", "source": "skiff test image"}\n' > "$work/kitten/rootfs/data.json"
printf 'not a picture of a kitten\n' > "$work/kitten/rootfs/kitten.jpg"
printf 'NAME="Skiff kitten test image"\nID=skiff-kitten\n' > "$work/kitten/rootfs/etc/os-release"
umoci repack --image "$layout:kitten" "$work/kitten"
umoci gc --layout "$layout"

# Name the manifests the way upstream does: one index entry per full reference
# (OCI's `org.opencontainers.image.ref.name` may hold a full reference).
jq '.manifests |= map(select(.annotations["org.opencontainers.image.ref.name"] == "kitten")
        | .annotations["org.opencontainers.image.ref.name"] = "registry.k8s.io/e2e-test-images/kitten:1.7")' \
    "$layout/index.json" > "$work/kitten-index.json"
jq '.manifests |= map(
        if .annotations["org.opencontainers.image.ref.name"] == "kitten" then
            empty
        elif .annotations["org.opencontainers.image.ref.name"] == "busybox" then
            (.annotations["org.opencontainers.image.ref.name"] = "docker.io/library/busybox:latest"),
            (.annotations["org.opencontainers.image.ref.name"] = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1")
        else
            .annotations["org.opencontainers.image.ref.name"] = "registry.k8s.io/e2e-test-images/agnhost:2.52"
        end)' \
    "$layout/index.json" > "$work/index.json"
mv "$work/index.json" "$layout/index.json"
tar --sort=name -C "$layout" -cf "$work/busybox.tar" .
mv "$work/kitten-index.json" "$layout/index.json"
tar --sort=name -C "$layout" -cf "$work/kitten.tar" .
mv "$work/kitten.tar" "$kitten"
mv "$work/busybox.tar" "$archive"
echo "built $archive and $kitten"
