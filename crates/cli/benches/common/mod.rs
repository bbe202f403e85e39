//! What the benchmarks share: free ports on loopback and where the figures go.

use std::path::Path;

/// A base port with `n` consecutive free ports on 127.0.0.1, below the kernel's range of
/// ephemeral ports: a port of that range that is free when probed can be taken a moment later as
/// the local end of some outgoing connection (the bench's own clients make thousands), and the
/// server meant for it then fails to start with "address already in use".
pub fn free_base_port(n: u16) -> anyhow::Result<u16> {
    let (low, high) = below_ephemeral_ports();
    let span = u32::from(high.saturating_sub(low).saturating_sub(n)).max(1);
    for attempt in 0..200u32 {
        let base = low + ((std::process::id().wrapping_mul(7919).wrapping_add(attempt * 131)) % span) as u16;
        let all_free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    anyhow::bail!("no {n} consecutive free ports found between {low} and {high}")
}

/// The ports to choose from: 20,000 up to where the ephemeral ports start
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32,768 by default), or 20,000 to 60,000 where that
/// cannot be read or leaves too few.
fn below_ephemeral_ports() -> (u16, u16) {
    const LOW: u16 = 20_000;
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()));
    match first_ephemeral {
        Some(first) if first >= LOW + 2_000 => (LOW, first),
        _ => (LOW, 60_000),
    }
}

/// Writes the figures to `target/bench/<name>.json` and says so.
pub fn write_figures(name: &str, figures: &serde_json::Value) -> anyhow::Result<()> {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join(format!("{name}.json")), serde_json::to_string_pretty(figures)?)?;
    println!("figures written to target/bench/{name}.json");
    Ok(())
}
