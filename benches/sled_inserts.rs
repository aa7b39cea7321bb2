//! sled on its own: 1,000,000 sequential keys (shaped like Wafer's online
//! keys, 48-byte values) inserted into one tree in several ways, to tell
//! sled's own cost apart from Wafer's in the wide materialization case.
//! Prints a table; results go in benches/README.md.
//!
//! cargo bench --bench sled_inserts

use std::time::Instant;

const KEYS: u64 = 1_000_000;
const CHUNK: u64 = 65_536;

fn key(i: u64, short: bool) -> Vec<u8> {
    let mut key = if short {
        Vec::new()
    } else {
        b"\x01driver_ranking\x00driver_hourly_stats\x00".to_vec()
    };
    key.extend_from_slice(&(1000 + i).to_be_bytes());
    key
}

#[derive(Clone, Copy)]
enum Write {
    GetThenInsert,
    Insert,
    Batch,
}

fn run(name: &str, write: Write, short: bool, tuned: bool, threads: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = sled::Config::new().path(dir.path());
    if tuned {
        config = config
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(2 << 30)
            .flush_every_ms(None);
    }
    let db = config.open().expect("sled");
    let tree = db.open_tree("online").expect("tree");
    let value = vec![7u8; 48];
    let started = Instant::now();
    let mut start = 0;
    while start < KEYS {
        let end = (start + CHUNK).min(KEYS);
        let per = (end - start).div_ceil(threads);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (from, to) = (start + t * per, (start + (t + 1) * per).min(end));
                let (tree, value) = (&tree, &value);
                scope.spawn(move || match write {
                    Write::GetThenInsert => {
                        for i in from..to {
                            let key = key(i, short);
                            tree.get(&key).expect("get");
                            tree.insert(key, value.as_slice()).expect("insert");
                        }
                    }
                    Write::Insert => {
                        for i in from..to {
                            tree.insert(key(i, short), value.as_slice())
                                .expect("insert");
                        }
                    }
                    Write::Batch => {
                        let mut batch = sled::Batch::default();
                        for i in from..to {
                            let key = key(i, short);
                            tree.get(&key).expect("get");
                            batch.insert(key, value.as_slice());
                        }
                        tree.apply_batch(batch).expect("batch");
                    }
                });
            }
        });
        start = end;
    }
    db.flush().expect("flush");
    println!("| {name} | {:.2} s |", started.elapsed().as_secs_f64());
}

fn main() {
    println!("| 1,000,000 sequential keys into sled | time |\n|---|---:|");
    run(
        "get + insert (what Wafer does)",
        Write::GetThenInsert,
        false,
        false,
        1,
    );
    run("insert only", Write::Insert, false, false, 1);
    run("insert only, 8-byte keys", Write::Insert, true, false, 1);
    run(
        "get + insert, HighThroughput, 2 GiB cache, no periodic flush",
        Write::GetThenInsert,
        false,
        true,
        1,
    );
    run(
        "get + insert, two threads",
        Write::GetThenInsert,
        false,
        false,
        2,
    );
    run(
        "get + apply_batch per 64k keys",
        Write::Batch,
        false,
        false,
        1,
    );
}
