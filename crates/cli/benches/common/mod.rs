//! What the benchmarks share: free ports on loopback and where the figures go.

use std::path::Path;

/// A base port with `n` consecutive free ports on 127.0.0.1.
pub fn free_base_port(n: u16) -> anyhow::Result<u16> {
    for attempt in 0..200u32 {
        let base = 20_000 + ((std::process::id().wrapping_mul(7919) + attempt * 131) % 40_000) as u16;
        let all_free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    anyhow::bail!("no {n} consecutive free ports found")
}

/// Writes the figures to `target/bench/<name>.json` and says so.
pub fn write_figures(name: &str, figures: &serde_json::Value) -> anyhow::Result<()> {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join(format!("{name}.json")), serde_json::to_string_pretty(figures)?)?;
    println!("figures written to target/bench/{name}.json");
    Ok(())
}
