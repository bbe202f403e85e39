//! This machine's physical limits, measured in the same run on the filesystem of the bench's
//! data directory: the latency of writing a 4 KiB page and making it durable with `fdatasync`,
//! over a preallocated file (the floor: no file metadata to journal) and at the end of a growing
//! file; the latency of a commit shaped like one of our sequential writes (the WAL frames SQLite
//! writes for it, then its fsync); and the sequential write bandwidth.

use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stats::Latencies;

/// The fsync floor and the sequential bandwidth.
pub struct Disk {
    /// Overwrite 4 KiB of a preallocated file + fdatasync, per call: the floor.
    pub fsync: Latencies,
    /// Append 4 KiB + fdatasync, per call (the file's size changes, so the filesystem journals).
    pub fsync_append: Latencies,
    /// [`COMMIT_FRAMES`] WAL frames written over a preallocated file as SQLite writes them (each
    /// frame's 24-byte header, then its 4 KiB page), then fsync, per call: what the disk alone
    /// costs one of W3a's commits.
    pub commit: Latencies,
    /// Sequential writes of 1 MiB blocks, then one fsync: bytes per second.
    pub write_bandwidth: f64,
}

const FSYNC_ROUNDS: usize = 1000;
/// The WAL frames one local write commits: the pages of the `versions` row and of its index, of
/// the object's row, of the audit and event rows, of the sequence counters and of the clock (as
/// traced with `strace -e pwrite64,fsync` on the store's benchmark).
pub const COMMIT_FRAMES: usize = 7;
const WAL_FRAME_HEADER: usize = 24;
const BANDWIDTH_BYTES: usize = 256 << 20;

pub fn measure(dir: &Path) -> anyhow::Result<Disk> {
    let page = [0x5au8; 4096];
    let one_page = |file: &mut File| {
        file.write_all(&page)?;
        file.sync_data()
    };
    let fsync = timed_syncs(&dir.join("fsync-floor.bin"), page.len(), one_page)?;
    let fsync_append = timed_syncs(&dir.join("fsync-append.bin"), 0, one_page)?;
    let header = [0xc3u8; WAL_FRAME_HEADER];
    let commit =
        timed_syncs(&dir.join("commit-shaped.bin"), COMMIT_FRAMES * (header.len() + page.len()), |file| {
            for _ in 0..COMMIT_FRAMES {
                file.write_all(&header)?;
                file.write_all(&page)?;
            }
            // The bundled SQLite calls fsync (it is built without `HAVE_FDATASYNC`).
            file.sync_all()
        })?;

    let path = dir.join("bandwidth.bin");
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let block = vec![0xa5u8; 1 << 20];
    let started = Instant::now();
    for _ in 0..BANDWIDTH_BYTES / block.len() {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    let took = started.elapsed().max(Duration::from_micros(1));
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Disk { fsync, fsync_append, commit, write_bandwidth: BANDWIDTH_BYTES as f64 / took.as_secs_f64() })
}

/// Times [`FSYNC_ROUNDS`] calls of `round` on a new file at `path`, each writing on from where
/// the last stopped. With `preallocated` bytes a round, the whole file is written and synced
/// first, so the rounds overwrite allocated blocks (through, not `set_len`: a sparse file would
/// allocate its blocks during the rounds); with 0, every round appends.
fn timed_syncs(
    path: &Path,
    preallocated: usize,
    mut round: impl FnMut(&mut File) -> std::io::Result<()>,
) -> anyhow::Result<Latencies> {
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
    if preallocated > 0 {
        let filler = vec![0u8; preallocated];
        for _ in 0..FSYNC_ROUNDS {
            file.write_all(&filler)?;
        }
        file.sync_all()?;
        file.seek(SeekFrom::Start(0))?;
    }
    let mut took = Vec::with_capacity(FSYNC_ROUNDS);
    for _ in 0..FSYNC_ROUNDS {
        let started = Instant::now();
        round(&mut file)?;
        took.push(started.elapsed());
    }
    drop(file);
    std::fs::remove_file(path)?;
    Ok(Latencies::new(took))
}
