//! Prints every batch of a partition directory's segment files, oldest
//! first: file, byte position, base offset, next offset, Raft index, term,
//! and whether it is a control batch. For diagnosing a replica's log by
//! hand (`cargo run -p strand-storage --example dump_log -- <dir>`).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    for f in files {
        let bytes = std::fs::read(&f)?;
        let mut pos = 0usize;
        for b in strand_storage::batches(&bytes) {
            match b {
                Ok(b) => {
                    println!(
                        "{} @{pos}: offsets {}..{} raft {} term {}{}",
                        f.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                        b.base_offset(),
                        b.next_offset(),
                        b.raft_index(),
                        b.term(),
                        if b.is_control() { " control" } else { "" }
                    );
                    pos += b.as_bytes().len();
                }
                Err(e) => {
                    println!("{} @{pos}: stop: {e}", f.display());
                    break;
                }
            }
        }
    }
    Ok(())
}
