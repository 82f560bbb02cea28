//! Programming time at scale, run by hand (`--ignored --nocapture`, as root): computing
//! and applying a full sync and a one-endpoint change for 1,000 and 10,000 services with
//! 10 endpoints each, in both proxy modes, each run in a throwaway network namespace.
//! The iptables mode's full sync of 10,000 services with the nf_tables iptables tools
//! takes minutes (see the `iptables` module), so the whole run takes about 10.

use std::process::Command;
use std::time::Instant;

use skiff_proxy::{
    model, Apply, Backend, Iptables, IptablesCommand, NftCommand, Nftables, RenderConfig,
};

struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let created = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(created.is_ok_and(|s| s.success()), "ip netns add {name}");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One mode at one size; the line to print.
fn measure<B: Backend, A: Apply>(backend: B, mut applier: A, services: usize) -> String {
    let config = RenderConfig {
        cluster_cidr: Some("10.0.0.0/8".parse().expect("cidr")),
        ..RenderConfig::default()
    };
    let old = model::synthetic(services, 10);
    let mut new = old.clone();
    if let Some(sp) = new.services.values_mut().nth(services / 2) {
        sp.cluster_endpoints.pop();
        sp.external_endpoints.pop();
    }

    let t = Instant::now();
    let old_rules = backend.render(&old, &config);
    let full = backend.full_transaction(&old_rules);
    let compute_full = t.elapsed();
    let t = Instant::now();
    applier.apply(&full).expect("full sync");
    let apply_full = t.elapsed();

    let t = Instant::now();
    let new_rules = backend.render(&new, &config);
    let update = backend
        .update_transaction(&old_rules, &new_rules, false)
        .expect("update");
    let compute_update = t.elapsed();
    let t = Instant::now();
    applier.apply(&update).expect("partial sync");
    let apply_update = t.elapsed();

    format!(
        "{:<8} {services:>6} services x 10 endpoints: full sync: {:>6} lines, {:>6} KiB, \
         compute {compute_full:>10.1?}, kernel {apply_full:>10.1?}; one endpoint removed: \
         {:>3} lines, compute (render + diff) {compute_update:>10.1?}, kernel {apply_update:>8.1?}",
        B::NAME,
        full.lines().count(),
        full.len() / 1024,
        update.lines().count(),
    )
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture as root"]
fn programming_time() {
    let id = std::process::id();
    let mut lines = Vec::new();
    for services in [1_000, 10_000] {
        let ns = Netns::new(format!("skp-bench-nft-{services}-{id}"));
        let nft = NftCommand::new(["ip", "netns", "exec", ns.0.as_str(), "nft"]);
        lines.push(measure(Nftables, nft, services));
        println!("{}", lines[lines.len() - 1]);

        // The kernel time of iptables' full sync includes its iptables-save (looking for
        // stale chains) and the `iptables -C` checks of the built-in chains' jumps. Both
        // backends of the iptables tools, as hosts have either.
        for legacy in [false, true] {
            let ns = Netns::new(format!("skp-bench-ipt-{services}-{id}"));
            let ipt = IptablesCommand::new(["ip", "netns", "exec", ns.0.as_str()]);
            let (ipt, tools) = if legacy {
                (ipt.legacy(), "legacy")
            } else {
                (ipt, "nft")
            };
            lines.push(format!(
                "{} ({tools} tools)",
                measure(Iptables, ipt, services)
            ));
            println!("{}", lines[lines.len() - 1]);
        }
    }
    println!("\n{}", lines.join("\n"));
}
