//! `generate --ep N` and `forward --ep N`: the model over N devices, one worker process per device,
//! attention data-parallel and the MoE layers expert-parallel over HCCL
//! ([`EpEngine`]). `--ep` always runs the device engine.
//!
//! # Launch
//! A process is a **worker** when `DSNPU_EP_ROOT_FILE` is set, in the style of torchrun:
//! - `RANK` (0..N), `WORLD_SIZE` (= N, checked against `--ep`), `LOCAL_RANK` (the device ordinal on
//!   this node; default `RANK`), `DSNPU_EP_ROOT_FILE` (rank 0 writes the HCCL root info there, the
//!   others wait up to 120 s for it: a fresh path, on a folder every node sees).
//!
//! Otherwise the command is the **parent** of a single-node run: it re-executes itself N times with
//! those variables (a fresh rendezvous folder under the temporary directory, `LOCAL_RANK = RANK`, and
//! `DSNPU_SIM_DEVICES = N` when unset), forwards each worker's stderr prefixed `[rank k]`, and exits
//! non-zero with the failing rank's last lines as soon as one worker fails (the others are killed).
//!
//! # Output
//! `generate --ep` runs the prompts of `--prompt-ids` (separated by `;`) prompt `i` on rank `i mod N`,
//! seeded as on one device; rank 0 prints each prompt's ids on its own line. `forward --ep` computes on rank 0
//! (the others serve their experts) and rank 0 writes `--out`. With `--stats-json FILE`, rank `k`
//! writes `FILE.rank<k>`: the device engine's report plus `hccl: {sent_bytes, recv_bytes}` and
//! `ep: {rank, world, experts: [first, end)}`.

use super::device_run;
use super::forward::{write_logits, ForwardArgs};
use super::generate::{parse_ids, parse_prompts, print_lines, GenerateArgs};
use crate::error::CliError;
use dsnpu_model::device::{EngineOptions, EpEngine, EpGroup};
use dsnpu_model::{ModelConfig, ModelError};
use serde_json::json;
use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The worker environment (see the module docs).
pub const ENV_RANK: &str = "RANK";
pub const ENV_WORLD_SIZE: &str = "WORLD_SIZE";
pub const ENV_LOCAL_RANK: &str = "LOCAL_RANK";
pub const ENV_ROOT_FILE: &str = "DSNPU_EP_ROOT_FILE";

/// Tokens per cache block.
const BLOCK_SIZE: usize = 16;

/// Lines of a failed worker's stderr the parent's error repeats.
const TAIL_LINES: usize = 8;

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// This process's group when it is a worker (`DSNPU_EP_ROOT_FILE` set), checked against `--ep n`.
fn worker_group(n: usize) -> Result<Option<EpGroup>, CliError> {
    let Some(root_file) = std::env::var_os(ENV_ROOT_FILE) else {
        return Ok(None);
    };
    // Rank 0 writes the file into an existing folder and the others wait up to 120 s for it: a path
    // that can never be written would fail rank 0 and leave the others waiting out the timeout.
    let root_path = PathBuf::from(&root_file);
    if root_path.as_os_str().is_empty() {
        return Err(usage(format!(
            "{ENV_ROOT_FILE} is set but empty: give the path rank 0 writes the HCCL root info to"
        )));
    }
    if let Some(dir) = root_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(usage(format!(
                "{ENV_ROOT_FILE}={}: the folder {} does not exist",
                root_path.display(),
                dir.display()
            )));
        }
    }
    let int = |name: &str| -> Result<Option<usize>, CliError> {
        match std::env::var(name) {
            Err(_) => Ok(None),
            Ok(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| usage(format!("{name}={v:?} is not a non-negative integer"))),
        }
    };
    let need = |name: &str| {
        int(name)?.ok_or_else(|| usage(format!("{ENV_ROOT_FILE} is set but {name} is not")))
    };
    let (rank, world) = (need(ENV_RANK)?, need(ENV_WORLD_SIZE)?);
    if world != n {
        return Err(usage(format!("--ep {n} but {ENV_WORLD_SIZE}={world}")));
    }
    if rank >= world {
        return Err(usage(format!(
            "{ENV_RANK}={rank} of {ENV_WORLD_SIZE}={world}"
        )));
    }
    Ok(Some(EpGroup {
        rank,
        world,
        local_rank: int(ENV_LOCAL_RANK)?.unwrap_or(rank),
        root_file: root_path,
    }))
}

fn check_ep(n: usize) -> Result<(), CliError> {
    if n == 0 {
        return Err(usage("--ep needs at least 1 rank"));
    }
    Ok(())
}

/// The checkpoint's config, with its routed experts dividing over `n` ranks: checked before any rank
/// is spawned, so a bad `--ep` fails once, here, instead of in N workers (or in allocating for
/// `--ep 18446744073709551615` of them).
fn ep_config(dir: &Path, n: usize) -> Result<ModelConfig, CliError> {
    let cfg = ModelConfig::from_file(dir.join("config.json"))?;
    match EpGroup::experts_per_rank(cfg.n_routed_experts, n) {
        Ok(_) => Ok(cfg),
        Err(ModelError::InvalidInput(why)) => Err(usage(format!("--ep {n}: {why}"))),
        Err(other) => Err(other.into()),
    }
}

/// The expert-parallel layer computes in f32 only.
fn check_ep_dtype(d: device_run::DtypeChoice) -> Result<(), CliError> {
    match d {
        device_run::DtypeChoice::F32 => Ok(()),
        device_run::DtypeChoice::Bf16 => Err(CliError::Usage(
            "--dtype bf16 with --ep: the expert-parallel MoE layer computes in f32 only".into(),
        )),
    }
}

/// `generate --ep n`.
pub fn generate(args: &GenerateArgs, n: usize) -> Result<(), CliError> {
    check_ep(n)?;
    let prompts = parse_prompts(&args.prompt_ids)?;
    if let Some(path) = &args.stats_json {
        super::check_output("--stats-json", path)?;
    }
    check_ep_dtype(args.dtype)?;
    // The lengths before any rank is spawned or loads: the cache is sized from them, and a length past
    // usize (`--max-new-tokens 18446744073709551615`) must be refused as on one device, not wrap.
    // So are the prompts and the sampling options: refused once here, not by N workers.
    let cfg = ep_config(&args.model, n)?;
    dsnpu_ops::sampling::Sampler::new(args.temperature, args.top_p, args.seed)?;
    let max = cfg.max_position_embeddings;
    let mut positions = 0usize;
    let mut blocks = 0usize;
    for (i, p) in prompts.iter().enumerate() {
        dsnpu_model::check_prompt(i, p, cfg.vocab_size)?;
        let n = dsnpu_model::positions_needed(i, p.len(), args.max_new_tokens, max)?;
        positions += n;
        blocks += (n + 1).div_ceil(BLOCK_SIZE);
    }
    let Some(group) = worker_group(n)? else {
        return spawn_workers(n);
    };
    let opts = EngineOptions {
        num_blocks: blocks.max(1),
        block_size: BLOCK_SIZE,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        max_prefill_tokens: args.max_prefill_tokens,
        ..EngineOptions::default()
    };
    let mut ep = load(&args.model, opts, group)?;
    let cfg = ep.engine().config().clone();
    let start = std::time::Instant::now();
    let ids = ep.generate(&prompts, args.max_new_tokens, &cfg.eos_token_ids)?;
    let secs = start.elapsed().as_secs_f64();
    let rank = ep.group().rank;
    eprintln!(
        "rank {rank}: generated {} tokens for {} prompts ({positions} positions) in {secs:.3} s",
        ids.iter().map(Vec::len).sum::<usize>(),
        prompts.len()
    );
    finish(&ep, args.stats_json.as_deref())?;
    if rank == 0 {
        print_lines(&ids)?;
    }
    Ok(())
}

/// `forward --ep n`.
pub fn forward(args: &ForwardArgs, n: usize) -> Result<(), CliError> {
    check_ep(n)?;
    let ids = parse_ids(&args.prompt_ids)?;
    check_ep_dtype(args.dtype)?;
    let cfg = ep_config(&args.model, n)?;
    // As `generate` does: a prompt outside the vocabulary or longer than the positions is refused once
    // here, not by N workers (and reported as a rank's failure).
    dsnpu_model::check_prompt(0, &ids, cfg.vocab_size)?;
    dsnpu_model::positions_needed(0, ids.len(), 0, cfg.max_position_embeddings)?;
    let Some(group) = worker_group(n)? else {
        return spawn_workers(n);
    };
    let opts = EngineOptions {
        num_blocks: ids.len().div_ceil(BLOCK_SIZE).max(1),
        block_size: BLOCK_SIZE,
        max_prefill_tokens: args.max_prefill_tokens,
        ..EngineOptions::default()
    };
    let mut ep = load(&args.model, opts, group)?;
    let logits = ep.prompt_logits(&ids)?;
    finish(&ep, args.stats_json.as_deref())?;
    if let Some(logits) = logits {
        let v = ep.engine().config().vocab_size;
        let logits = ndarray::Array2::from_shape_vec((ids.len(), v), logits)
            .expect("the engine returns len x V logits");
        write_logits(&args.out, &logits)?;
    }
    Ok(())
}

fn load(dir: &Path, opts: EngineOptions, group: EpGroup) -> Result<EpEngine, CliError> {
    let start = std::time::Instant::now();
    let (rank, world) = (group.rank, group.world);
    let ep = EpEngine::load(dir, opts, group, &mut |_, _| {})?;
    eprintln!(
        "rank {rank} of {world}: loaded {} onto device {} in {:.3} s ({} bytes of weights)",
        dir.display(),
        ep.group().local_rank,
        start.elapsed().as_secs_f64(),
        ep.engine().stats().weight_bytes
    );
    Ok(ep)
}

/// The op report on stderr and this rank's stats file.
fn finish(ep: &EpEngine, stats_json: Option<&Path>) -> Result<(), CliError> {
    let engine = ep.engine();
    let ops: Vec<String> = engine
        .stats()
        .ops
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect();
    let g = ep.group();
    eprintln!("rank {}: ops: {}", g.rank, ops.join(", "));
    let Some(path) = stats_json else {
        return Ok(());
    };
    let hccl = ep.hccl_bytes()?;
    let experts = g.experts(engine.config().n_routed_experts)?;
    let mut v = device_run::engine_stats_json(engine);
    v["hccl"] = json!({"sent_bytes": hccl.sent, "recv_bytes": hccl.received});
    v["ep"] = json!({"rank": g.rank, "world": g.world, "experts": [experts.start, experts.end]});
    device_run::write_stats(&rank_path(path, g.rank), &v)
}

/// `FILE.rank<k>`.
pub fn rank_path(path: &Path, rank: usize) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(format!(".rank{rank}"));
    PathBuf::from(s)
}

/// A worker and the last lines of its stderr.
struct Worker {
    rank: usize,
    child: Child,
    tail: Arc<Mutex<Vec<String>>>,
    forwarder: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn join_forwarder(&mut self) {
        if let Some(h) = self.forwarder.take() {
            let _ = h.join();
        }
    }

    fn tail(&self) -> String {
        self.tail.lock().map(|t| t.join("\n")).unwrap_or_default()
    }
}

/// The parent of a single-node run (see the module docs): this executable, N times, with the
/// worker environment; returns when all succeeded or as soon as one failed.
fn spawn_workers(n: usize) -> Result<(), CliError> {
    if let Ok(v) = std::env::var("DSNPU_SIM_DEVICES") {
        if v.trim().parse::<usize>().is_ok_and(|d| d < n) {
            return Err(usage(format!(
                "--ep {n} needs {n} devices, DSNPU_SIM_DEVICES={v}"
            )));
        }
    }
    let exe = std::env::current_exe().map_err(|source| CliError::Io {
        path: "<current executable>".into(),
        source,
    })?;
    let dir = rendezvous_dir()?;
    let result = run_workers(&exe, n, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn rendezvous_dir() -> Result<PathBuf, CliError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("dsnpu-ep-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| CliError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(dir)
}

fn run_workers(exe: &Path, n: usize, dir: &Path) -> Result<(), CliError> {
    let mut workers: Vec<Worker> = Vec::with_capacity(n);
    for rank in 0..n {
        let mut cmd = Command::new(exe);
        cmd.args(std::env::args_os().skip(1))
            .env(ENV_RANK, rank.to_string())
            .env(ENV_WORLD_SIZE, n.to_string())
            .env(ENV_LOCAL_RANK, rank.to_string())
            .env(ENV_ROOT_FILE, dir.join("root"))
            .stdin(Stdio::null())
            .stdout(if rank == 0 {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        if std::env::var_os("DSNPU_SIM_DEVICES").is_none() {
            cmd.env("DSNPU_SIM_DEVICES", n.to_string());
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                stop_all(&mut workers);
                return Err(CliError::Io {
                    path: exe.display().to_string(),
                    source,
                });
            }
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let forwarder = child.stderr.take().map(|err| {
            let tail = Arc::clone(&tail);
            std::thread::spawn(move || forward_stderr(rank, err, &tail))
        });
        workers.push(Worker {
            rank,
            child,
            tail,
            forwarder,
        });
    }
    let mut done = vec![false; n];
    loop {
        let mut failure = None;
        for w in workers.iter_mut() {
            if done[w.rank] {
                continue;
            }
            match w.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    done[w.rank] = true;
                    w.join_forwarder();
                    if !status.success() {
                        failure = Some(CliError::Failed(format!(
                            "--ep {n}: rank {} failed ({status}); the other ranks were stopped. Its last lines:\n{}",
                            w.rank,
                            w.tail()
                        )));
                        break;
                    }
                }
                Err(source) => {
                    failure = Some(CliError::Io {
                        path: format!("worker {}", w.rank),
                        source,
                    });
                    break;
                }
            }
        }
        if let Some(e) = failure {
            stop_all(&mut workers);
            return Err(e);
        }
        if done.iter().all(|&d| d) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills (by handle) and reaps every worker still running.
fn stop_all(workers: &mut [Worker]) {
    for w in workers.iter_mut() {
        if matches!(w.child.try_wait(), Ok(None)) {
            let _ = w.child.kill();
        }
        let _ = w.child.wait();
        w.join_forwarder();
    }
}

/// Copies a worker's stderr to ours, each line prefixed with its rank, keeping the last lines.
fn forward_stderr(rank: usize, err: std::process::ChildStderr, tail: &Mutex<Vec<String>>) {
    for line in std::io::BufReader::new(err).lines() {
        let Ok(line) = line else { break };
        eprintln!("[rank {rank}] {line}");
        if let Ok(mut t) = tail.lock() {
            t.push(line);
            if t.len() > TAIL_LINES {
                t.remove(0);
            }
        }
    }
}
