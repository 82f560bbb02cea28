//! `dns-suffix` and `dns-server-list`: what the container's `/etc/resolv.conf` says,
//! printed comma-separated, as upstream's agnhost prints them (its DNS tests check a
//! pod's `dnsConfig` this way).

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The search list: the words after `search`.
pub fn suffixes(resolv_conf: &str) -> Option<Vec<String>> {
    resolv_conf
        .lines()
        .find_map(|line| line.strip_prefix("search"))
        .map(|rest| rest.split_whitespace().map(str::to_string).collect())
}

/// Every `nameserver`'s address.
pub fn servers(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|line| line.strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_string))
        .collect()
}

fn read() -> Result<String, String> {
    std::fs::read_to_string(RESOLV_CONF).map_err(|e| format!("reading {RESOLV_CONF}: {e}"))
}

pub fn print_suffixes() -> Result<(), String> {
    let list = suffixes(&read()?).ok_or("could not find the DNS search list")?;
    println!("{}", list.join(","));
    Ok(())
}

pub fn print_servers() -> Result<(), String> {
    let list = servers(&read()?);
    if list.is_empty() {
        return Err("could not find any DNS server".to_string());
    }
    println!("{}", list.join(","));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_read() {
        let conf = "search resolv.conf.local other.local\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions ndots:2\n";
        assert_eq!(
            suffixes(conf).expect("search"),
            ["resolv.conf.local", "other.local"]
        );
        assert_eq!(servers(conf), ["1.1.1.1", "8.8.8.8"]);
        assert_eq!(suffixes("nameserver 1.1.1.1\n"), None);
    }
}
