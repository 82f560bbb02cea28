//! `skiff images …`: managing the image store from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::images::registries::RegistriesConfig;
use crate::images::ImageStore;

#[derive(Debug, Clone, clap::Args)]
pub struct ImagesArgs {
    /// The runtime's root (as `skiff runtime --root`).
    #[arg(long, default_value = "/var/lib/skiff/runtime", global = true)]
    pub root: PathBuf,
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImagesCommand {
    /// Load an OCI archive (tar of an OCI layout) or a `docker save` archive.
    Import { file: PathBuf },
    /// List images.
    Ls,
    /// Remove an image by name or id.
    Rm { image: String },
    /// Pull an image from a registry.
    Pull {
        image: String,
        #[arg(long, default_value = "/etc/skiff/registries.yaml")]
        registries_config: PathBuf,
    },
}

/// Runs one `skiff images` command, printing to stdout.
pub async fn images(args: ImagesArgs) -> anyhow::Result<()> {
    let root = args.root.join("images");
    let store =
        Arc::new(ImageStore::open(&root).with_context(|| format!("open {}", root.display()))?);
    match args.command {
        ImagesCommand::Import { file } => {
            let st = store.clone();
            let recs = tokio::task::spawn_blocking(move || {
                crate::images::archive::import_archive(&st, &file)
            })
            .await??;
            for r in recs {
                println!("imported {} {}", r.id, r.repo_tags.join(","));
            }
        }
        ImagesCommand::Ls => {
            println!("{:<60} {:<20} {:>10}", "IMAGE", "ID", "SIZE");
            for r in store.list() {
                let short = r.id.trim_start_matches("sha256:").get(..12).unwrap_or("");
                let names = if r.repo_tags.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    r.repo_tags.clone()
                };
                for n in names {
                    println!("{n:<60} {short:<20} {:>10}", r.size);
                }
            }
        }
        ImagesCommand::Rm { image } => {
            // Containers of a running runtime may use the layers: keep the
            // layers of every container recorded on disk.
            let in_use = layers_in_use(&args.root);
            let st = store.clone();
            let name = image.clone();
            match tokio::task::spawn_blocking(move || st.remove(&name, &in_use)).await?? {
                Some(r) => println!("removed {}", r.id),
                None => anyhow::bail!("image {image:?} not found"),
            }
        }
        ImagesCommand::Pull {
            image,
            registries_config,
        } => {
            let reg = RegistriesConfig::load(&registries_config)?;
            let r = crate::images::pull::pull(store, &reg, &image, &Default::default()).await?;
            println!("pulled {} {}", r.id, r.repo_tags.join(","));
        }
    }
    Ok(())
}

fn layers_in_use(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root.join("containers")) else {
        return out;
    };
    for e in rd.flatten() {
        if let Ok(r) = crate::runtime::load::<crate::runtime::ContainerRecord>(
            &e.path().join(crate::runtime::container::RECORD),
        ) {
            out.extend(r.layers_in_use().cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Images {
        #[command(flatten)]
        args: ImagesArgs,
    }

    #[derive(Parser)]
    struct Runtime {
        #[command(flatten)]
        args: crate::RuntimeArgs,
    }

    #[test]
    fn flags_parse() {
        let i =
            Images::try_parse_from(["images", "import", "/x.tar", "--root", "/r"]).expect("parse");
        assert_eq!(i.args.root, PathBuf::from("/r"));
        assert!(
            matches!(i.args.command, ImagesCommand::Import { ref file } if file == &PathBuf::from("/x.tar"))
        );
        let r = Runtime::try_parse_from(["runtime"]).expect("parse");
        assert_eq!(r.args.socket, PathBuf::from("/run/skiff/cri.sock"));
        assert_eq!(r.args.root, PathBuf::from("/var/lib/skiff/runtime"));
        assert!(!r.args.disable_cni);
    }
}
