//! Property/fuzz suite over the `dsnpu` command line: argument vectors built from every subcommand and flag
//! with edge and malformed values (ids out of the vocabulary or of i32, `--max-new-tokens` up to and past
//! u64::MAX, NaN/∞ temperatures, outputs that are directories or missing, models that are devices, FIFOs
//! or missing), run as a subprocess of the built binary with a time limit.
//!
//! Every run must end by exiting — 0, 1 (a clean error) or 2 (clap's usage error) — never by a signal or a
//! hang, never with a panic message. A failed run prints one `error:` line and no cause twice; a successful
//! `generate` prints one line of ids and a successful `forward` writes finite logits.
//!
//! The case count is fixed (below) so the suite runs in well under a minute; `PROPTEST_CASES` raises it.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n)
}

/// Fixtures shared by all cases: a FIFO and a directory, in one temp dir kept for the whole run.
struct Fixtures {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        // A checkpoint whose config.json is a FIFO (nobody ever writes it).
        let fifo_model = root.join("fifo_model");
        std::fs::create_dir(&fifo_model).unwrap();
        assert!(Command::new("mkfifo")
            .arg(fifo_model.join("config.json"))
            .status()
            .unwrap()
            .success());
        std::fs::create_dir(root.join("out_dir")).unwrap();
        Fixtures { _tmp: tmp, root }
    })
}

fn v3_base() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("model/tests/data/v3_base")
        .display()
        .to_string()
}

fn model_path() -> impl Strategy<Value = String> {
    let f = &fixtures().root;
    prop_oneof![
        6 => Just(v3_base()),
        1 => Just("/nonexistent/model".to_string()),
        1 => Just("/dev/zero".to_string()),
        1 => Just(format!("{}/config.json", v3_base())),
        1 => Just(f.join("fifo_model").display().to_string()),
        1 => Just(f.join("out_dir").display().to_string()),
        1 => Just(String::new()),
    ]
}

fn prompt_ids() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(0u32..128, 1..6)
            .prop_map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
        1 => proptest::sample::select(vec![
            "", "1,,2", "-1", "128", "2147483647", "2147483648", "99999999999999999999", "1,2,", " 3 , 4",
            "0x10", "1;2", "\u{0660}", "3,4;5", "1;;2", ";", "1,2;",
        ])
        .prop_map(String::from),
        1 => "[0-9,\\- a]{0,12}",
    ]
}

fn number_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(vec!["0", "1", "2", "5", "61", "62", "63", "64", "65"]).prop_map(String::from),
        1 => proptest::sample::select(vec![
            "18446744073709551615", "18446744073709551616", "9223372036854775808", "-1", "x", "", "1e3", "0.5",
        ])
        .prop_map(String::from),
        1 => any::<u64>().prop_map(|n| n.to_string()),
    ]
}

fn float_like() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "0", "0.7", "1", "2", "-1", "nan", "NaN", "inf", "-inf", "1e39", "1e-45", "x", "",
    ])
    .prop_map(String::from)
}

fn out_path() -> impl Strategy<Value = String> {
    let f = &fixtures().root;
    prop_oneof![
        3 => any::<u32>().prop_map(move |n| f.join(format!("logits-{n}.safetensors")).display().to_string()),
        1 => Just(f.join("out_dir").display().to_string()),
        1 => Just("/nonexistent/dir/logits.safetensors".to_string()),
        1 => Just("/dev/full".to_string()),
    ]
}

type Flag = BoxedStrategy<Vec<String>>;

/// `name value` with probability `p`, else nothing.
fn flag(name: &'static str, value: BoxedStrategy<String>, p: f64) -> Flag {
    proptest::option::weighted(p, value)
        .prop_map(move |v| v.map(|v| vec![name.to_string(), v]).unwrap_or_default())
        .boxed()
}

fn backend() -> BoxedStrategy<String> {
    prop_oneof![
        8 => Just("cpu".to_string()),
        2 => Just("npu".to_string()),
        1 => Just("gpu".to_string()),
    ]
    .boxed()
}

/// One argument vector: a subcommand with each of its flags present with some probability (rarely a flag
/// it does not take, or an unknown one), in a shuffled order.
fn argv() -> impl Strategy<Value = Vec<String>> {
    let generate: Vec<Flag> = vec![
        flag("--model", model_path().boxed(), 0.97),
        flag("--prompt-ids", prompt_ids().boxed(), 0.97),
        flag("--max-new-tokens", number_like().boxed(), 0.95),
        flag("--temperature", float_like().boxed(), 0.3),
        flag("--top-p", float_like().boxed(), 0.3),
        flag("--seed", number_like().boxed(), 0.2),
        flag("--backend", backend(), 0.4),
        flag("--out", out_path().boxed(), 0.02),
    ];
    let forward: Vec<Flag> = vec![
        flag("--model", model_path().boxed(), 0.97),
        flag("--prompt-ids", prompt_ids().boxed(), 0.97),
        flag("--out", out_path().boxed(), 0.95),
        flag("--backend", backend(), 0.4),
        flag("--max-new-tokens", number_like().boxed(), 0.02),
    ];
    let info: Vec<Flag> = vec![flag("--model", model_path().boxed(), 0.05)];
    let with = |cmd: &'static str, flags: Vec<Flag>| {
        (flags, proptest::option::weighted(0.03, "--[a-z]{1,8}")).prop_flat_map(
            move |(groups, extra)| {
                let mut groups: Vec<Vec<String>> =
                    groups.into_iter().filter(|g| !g.is_empty()).collect();
                if let Some(x) = extra {
                    groups.push(vec![x]);
                }
                Just(groups).prop_shuffle().prop_map(move |groups| {
                    let mut v = vec![cmd.to_string()];
                    v.extend(groups.into_iter().flatten());
                    v
                })
            },
        )
    };
    prop_oneof![
        6 => with("generate", generate),
        5 => with("forward", forward),
        1 => with("info", info),
        1 => Just(vec!["bogus".to_string()]),
    ]
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args`, killing it after 60 s (a hang fails the case).
fn run(args: &[String]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsnpu"))
        .args(args)
        .env_remove("DSNPU_ACL_LIB")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dsnpu");
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dsnpu {args:?} hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

fn read_logits(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// 300 argument vectors through the binary.
    #[test]
    fn every_command_line_ends_in_success_or_a_clean_error(args in argv()) {
        let out_file = args
            .iter()
            .position(|a| a == "--out")
            .map(|i| args[i + 1].clone())
            .filter(|p| p.ends_with(".safetensors") && !p.starts_with("/nonexistent"));
        if let Some(p) = &out_file {
            let _ = std::fs::remove_file(p);
        }
        let r = run(&args);
        let ctx = format!("dsnpu {args:?}\nexit {:?}\nstderr:\n{}", r.code, r.stderr);
        if std::env::var_os("DSNPU_FUZZ_STATS").is_some() {
            let first = r.stderr.lines().find(|l| l.starts_with("error")).unwrap_or("");
            let what: String = first.chars().take(40).collect();
            eprintln!("fuzz outcome: exit {:?} {} {what}", r.code, args[0]);
        }
        prop_assert!(matches!(r.code, Some(0..=2)), "killed by a signal or odd exit: {ctx}");
        prop_assert!(!r.stderr.contains("panicked"), "{ctx}");
        match r.code {
            Some(1) => {
                let errors: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
                prop_assert_eq!(errors.len(), 1, "{}", ctx);
                let causes: Vec<&str> = r
                    .stderr
                    .lines()
                    .filter(|l| l.starts_with("error: ") || l.starts_with("  caused by: "))
                    .map(|l| l.split_once(": ").unwrap().1)
                    .collect();
                for (i, c) in causes.iter().enumerate() {
                    for earlier in &causes[..i] {
                        prop_assert!(!earlier.contains(c), "a cause printed twice: {ctx}");
                    }
                }
                for debug in ["Some(", "None", "Os {", "kind:"] {
                    prop_assert!(!r.stderr.contains(debug), "debug formatting: {ctx}");
                }
            }
            Some(0) if args[0] == "generate" => {
                // One line per prompt of --prompt-ids (`;`-separated).
                let prompts = args
                    .iter()
                    .position(|a| a == "--prompt-ids")
                    .map_or(1, |i| args[i + 1].split(';').count());
                let lines: Vec<&str> = r.stdout.lines().collect();
                prop_assert_eq!(lines.len(), prompts, "{}", ctx);
                // Empty when --max-new-tokens is 0.
                for line in lines {
                    prop_assert!(
                        line.is_empty()
                            || line.split(',').all(|t| t.parse::<u32>().is_ok_and(|t| t < 128)),
                        "{ctx}"
                    );
                }
            }
            Some(0) if args[0] == "forward" => {
                let path = out_file.clone();
                prop_assert!(path.is_some(), "forward succeeded without a writable --out: {ctx}");
                let logits = read_logits(&path.unwrap());
                prop_assert!(!logits.is_empty() && logits.iter().all(|v| v.is_finite()), "{ctx}");
            }
            _ => {}
        }
        if let Some(p) = &out_file {
            let _ = std::fs::remove_file(p);
        }
    }
}
