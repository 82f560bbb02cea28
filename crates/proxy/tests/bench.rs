//! Programming time at scale, run by hand (`--ignored --nocapture`, as root): computing
//! and applying a full sync and a one-endpoint change for 1,000 and 10,000 services with
//! 10 endpoints each, with nft in a throwaway network namespace.

use std::process::Command;
use std::time::Instant;

use skiff_proxy::nftables::{full_transaction, render, update_transaction};
use skiff_proxy::{model, Apply, NftCommand, RenderConfig};

#[test]
#[ignore = "benchmark: run with --ignored --nocapture as root"]
fn programming_time() {
    let ns = format!("skp-bench-{}", std::process::id());
    let created = Command::new("ip").args(["netns", "add", &ns]).status();
    assert!(created.is_ok_and(|s| s.success()), "ip netns add");
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _cleanup = Cleanup(ns.clone());
    let mut nft = NftCommand::new(["ip", "netns", "exec", ns.as_str(), "nft"]);
    let config = RenderConfig {
        cluster_cidr: Some("10.0.0.0/8".parse().expect("cidr")),
        ..RenderConfig::default()
    };
    for services in [1_000, 10_000] {
        let old = model::synthetic(services, 10);
        let mut new = old.clone();
        if let Some(sp) = new.services.values_mut().nth(services / 2) {
            sp.cluster_endpoints.pop();
            sp.external_endpoints.pop();
        }

        let t = Instant::now();
        let old_rs = render(&old, &config);
        let full = full_transaction(&old_rs);
        let compute_full = t.elapsed();
        let t = Instant::now();
        nft.apply(&full).expect("full sync");
        let apply_full = t.elapsed();

        let t = Instant::now();
        let new_rs = render(&new, &config);
        let update = update_transaction(&old_rs, &new_rs, false).expect("update");
        let compute_update = t.elapsed();
        let t = Instant::now();
        nft.apply(&update).expect("partial sync");
        let apply_update = t.elapsed();

        println!(
            "{services} services x 10 endpoints: {} chains, {} rules; full sync: {} KiB, \
             compute {compute_full:?}, nft {apply_full:?}; one endpoint removed: {} lines, \
             compute (render + diff) {compute_update:?}, nft {apply_update:?}",
            old_rs.chains.len(),
            old_rs.rule_count(),
            full.len() / 1024,
            update.lines().count(),
        );
    }
}
