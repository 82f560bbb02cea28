//! `skiff images` commands and archive formats: OCI layouts and `docker save`
//! archives, imported into a fresh store. Needs root (layers keep root-owned
//! files and overlay whiteouts) and the test image build tools.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;

use skiff_runtime::images::ImageStore;
use skiff_runtime::{ImagesArgs, ImagesCommand};

/// Rewrites our OCI archive as `docker save` would write it: a manifest.json
/// naming a config file and `ID/layer.tar` files, plus a duplicate layer
/// given as a symlink, as docker does for shared layers.
fn docker_save_archive(oci: &std::path::Path, out: &std::path::Path) {
    let mut files = std::collections::HashMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(oci).expect("open"));
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read");
        files.insert(name.trim_start_matches("./").to_string(), data);
    }
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).expect("index");
    let mdigest = index["manifests"][0]["digest"].as_str().expect("digest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&files[&format!("blobs/sha256/{}", &mdigest[7..])])
            .expect("manifest");
    let config_hex = &manifest["config"]["digest"].as_str().expect("config")[7..];
    let layer_hex = &manifest["layers"][0]["digest"].as_str().expect("layer")[7..];
    // docker save layers are uncompressed tars.
    let mut layer = Vec::new();
    flate2::read::GzDecoder::new(&files[&format!("blobs/sha256/{layer_hex}")][..])
        .read_to_end(&mut layer)
        .expect("gunzip");
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("append");
    };
    add(
        &format!("{config_hex}.json"),
        &files[&format!("blobs/sha256/{config_hex}")],
    );
    add("aaaa/layer.tar", &layer);
    let mf = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["example.com/tools/busybox:docker"],
        "Layers": ["aaaa/layer.tar", "bbbb/layer.tar"],
    }]);
    add("manifest.json", &serde_json::to_vec(&mf).expect("json"));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_mtime(0);
    b.append_link(&mut h, "bbbb/layer.tar", "../aaaa/layer.tar")
        .expect("symlink");
    b.finish().expect("finish");
}

#[tokio::test]
async fn images_cli_and_docker_save_archives() {
    let oci = common::busybox_archive();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let run = |command: ImagesCommand| {
        skiff_runtime::images(ImagesArgs {
            root: root.clone(),
            command,
        })
    };
    run(ImagesCommand::Import { file: oci.clone() })
        .await
        .expect("import OCI");
    let docker = dir.path().join("docker.tar");
    docker_save_archive(&oci, &docker);
    run(ImagesCommand::Import { file: docker })
        .await
        .expect("import docker save");
    run(ImagesCommand::Ls).await.expect("ls");

    let store = ImageStore::open(&root.join("images")).expect("open");
    let oci_img = store.resolve("busybox").expect("busybox from OCI");
    let docker_img = store
        .resolve("example.com/tools/busybox:docker")
        .expect("busybox from docker save");
    // Same config blob: same image id, whatever the archive format.
    assert_eq!(oci_img.id, docker_img.id);
    assert_eq!(docker_img.layers.len(), 2);
    assert!(store
        .layer_dir(&docker_img.layers[0].digest)
        .expect("dir")
        .join("bin/busybox")
        .exists());

    // A corrupt blob is refused.
    let bad = dir.path().join("bad.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&bad).expect("create"));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        let name = format!("blobs/sha256/{}", "0".repeat(64));
        b.append_data(&mut h, name, &b"bad"[..]).expect("append");
        b.finish().expect("finish");
    }
    let err = run(ImagesCommand::Import { file: bad })
        .await
        .expect_err("digest mismatch");
    assert!(format!("{err:#}").contains("digest mismatch"), "{err:#}");

    run(ImagesCommand::Rm {
        image: "busybox".into(),
    })
    .await
    .expect("rm");
    let store = ImageStore::open(&root.join("images")).expect("open");
    assert!(store.resolve("busybox").is_none());
    assert!(
        store.resolve(&oci_img.id).is_none(),
        "one image, both names gone"
    );
    assert!(run(ImagesCommand::Rm {
        image: "busybox".into()
    })
    .await
    .is_err());
}
