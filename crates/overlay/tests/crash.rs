//! A writer killed at random points never costs the previous registry.
//!
//! The test re-runs its own binary as a writer process (the ignored test `writer_process`)
//! that loads the registry, then adds a member and saves, over and over. The parent kills it
//! with SIGKILL after a random delay, loads the file, and checks that it loads whole and holds
//! members `m0..mN` for an N that never goes down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatekit_overlay::*;
use gatekit_packet::Instant;
use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};
use std::time::Duration;

const ENV: &str = "GK_OVERLAY_CRASH_FILE";

fn key(i: u32) -> PublicKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[8] = 1;
    PublicKey::from_bytes(b)
}

fn add(r: &mut Registry) {
    let n = r.len() as u32;
    let seg = if n.is_multiple_of(2) { "even" } else { "odd" };
    r.add_member(
        NewMember::new(key(n), &format!("m{n}"), seg).tag("t"),
        Instant::from_secs(1_764_000_000 + u64::from(n)),
    )
    .unwrap();
}

fn initial(path: &Path) -> usize {
    let plan = AddressPlan::new(PlanSpec {
        prefixes: vec![
            "10.60.0.0/16".parse().unwrap(),
            "fd60::/48".parse().unwrap(),
        ],
        segments: vec![
            SegmentSpec::new(
                "even",
                [
                    "10.60.0.0/17".parse().unwrap(),
                    "fd60:0:0:1::/64".parse().unwrap(),
                ],
            ),
            SegmentSpec::new("odd", ["10.60.128.0/17".parse().unwrap()]),
        ],
        ..PlanSpec::default()
    })
    .unwrap();
    let mut r = Registry::new(plan);
    // Big enough (about 200 KB) that a kill often lands in the middle of a write.
    for _ in 0..1000 {
        add(&mut r);
    }
    r.save(path).unwrap();
    r.len()
}

/// The writer: run only by `writers_killed_at_random_points_lose_nothing`.
#[test]
#[ignore = "run as a child process by writers_killed_at_random_points_lose_nothing"]
fn writer_process() {
    let Some(path) = std::env::var_os(ENV) else {
        return;
    };
    let mut r = Registry::load(&path).unwrap();
    println!("ready");
    loop {
        add(&mut r);
        r.save(&path).unwrap();
    }
}

fn check(path: &Path) -> usize {
    let r = Registry::load(path).unwrap_or_else(|e| panic!("registry lost after a kill: {e}"));
    let n = r.len();
    for (i, m) in r.members().enumerate() {
        assert_eq!(m.name, format!("m{i}"));
        assert_eq!(m.key, key(i as u32));
    }
    n
}

#[test]
fn writers_killed_at_random_points_lose_nothing() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("registry.toml");
    let mut count = initial(&path);
    let start = count;
    // How long one save takes here (debug build, shared machine): kills are spread over
    // about three of the writer's saves.
    let t = std::time::Instant::now();
    Registry::load(&path).unwrap().save(&path).unwrap();
    let save_ms = t.elapsed().as_millis().max(1) as u64;
    let mut rng = gatekit_testkit_free_rng(0x5eed);
    let rounds = 20;
    for _ in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "writer_process", "--nocapture"])
            .env(ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the writer has loaded the file and starts saving, then kill it at a
        // random point of its save loop.
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
                panic!("writer exited before it was ready");
            }
        }
        let delay = rng() % (3 * save_ms);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL: no destructor, no flush
        child.wait().unwrap();
        let n = check(&path);
        assert!(n >= count, "went back from {count} to {n} members");
        count = n;
    }
    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp.")
        })
        .count();
    eprintln!(
        "{rounds} kills: {} members saved in all, {leftovers} kills landed mid-write (temporary file left)",
        count - start
    );
    // The writers did get work done between kills, so the kills did hit a busy writer.
    assert!(count > start, "no save completed in {rounds} rounds");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A seeded xorshift, so the kill delays replay.
fn gatekit_testkit_free_rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
