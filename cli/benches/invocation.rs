//! The whole invocation, measured from outside (issue 14): a warm release loader under our
//! Runtime API stand-in ([`Sandbox`]) loads Kinesis batches with duplicates and poison
//! through the real pipeline against the local stack, and we read what it cost.
//!
//! Per variant (a loader binary: today's code and the candidate, side by side in one run,
//! rounds alternated so drift on a shared host hits both alike):
//! - CPU of the function process per 1,000 records: from the process's own cgroup (v1
//!   `cpuacct.usage`, exact ns, split into user and system by the tick counts of
//!   `cpuacct.stat`; v2 `cpu.stat`), else `/proc/<pid>/stat` (clock ticks);
//! - wall per batch; AWS requests by operation (counted by a proxy in front of the endpoint);
//! - the loader's own phase split (its `batch done` line: wall/CPU per phase), where the
//!   binary reports it;
//! - peak memory (VmHWM) after the measured batches;
//! - the duration of one 10,000-record batch with the process held to 0.25 and 1 vCPU by a
//!   cgroup CPU quota (skipped, and said so, where cgroups cannot be written).
//!
//! Afterwards every variant's sinks are checked: each event once in PostgreSQL and in
//! Parquet, nothing else — the speed must not cost exactly-once.
//!
//! The endpoint: moto answers `Connection: close`, so a loader talking to it directly opens
//! a TCP connection per request, which AWS endpoints do not make it do. Each variant talks
//! to its own counting proxy instead, which keeps client connections alive as AWS does (and
//! opens one upstream connection per request itself). `@direct` after a variant's path
//! points it at the endpoint itself, to show the difference. `@fast-claims` has the proxy
//! answer every conditional `PutItem` itself after 5 ms, many at once, from its own memory
//! (a key it holds is refused with the held item, as DynamoDB does) — a diagnostic of AWS's
//! answer rate (moto answers one write at a time, so the loader sleeps and wakes once per
//! answer). Redeliveries are still refused and judged by their object in S3, so the sinks
//! are checked as for every variant; the claims themselves never reach moto.
//!
//! Environment: `INVOCATION_VARIANTS` (`label=path[@direct][|VAR=value…],…`, required; the
//! `|VAR=value` pairs are extra function environment), and optionally
//! `INVOCATION_RECORDS` (per batch, 1000), `INVOCATION_BATCHES` (per round, 3),
//! `INVOCATION_ROUNDS` (2), `INVOCATION_BIG` (records of the CPU-limited batch, 10000; 0
//! skips it), `INVOCATION_CPUS` (`0.25,1`), `INVOCATION_SPREAD_HOURS` (late data: event
//! times spread over this many hours, one object per hour; 0), `INVOCATION_POISON_SHARE`
//! (0.02). Run by `make bench` (scripts/bench.sh), which
//! builds both binaries.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use streamload_cli::produce::{self, Rng};
use streamload_cli::sandbox::{FunctionSpec, Outcome, Sandbox};
use streamload_tests::fault_proxy::{Fault, FaultProxy, Rule};
use streamload_tests::{kinesis_event, TestStack};

/// Longest an invocation of the bench may take (Lambda's own maximum timeout).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(900);

/// Share of each batch that repeats events of the previous batch (a redelivery).
const DUPLICATE_SHARE: f64 = 0.10;
/// Share of each batch that is poison, unless `INVOCATION_POISON_SHARE` says otherwise.
const POISON_SHARE: f64 = 0.02;

fn poison_share() -> f64 {
    env_or("INVOCATION_POISON_SHARE", POISON_SHARE)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One loader binary to measure.
struct Variant {
    label: String,
    binary: PathBuf,
    direct: bool,
    /// Conditional writes answered by the proxy from its own memory in 5 ms (`@fast-claims`).
    fast_claims: bool,
    /// Extra environment of the function (`|VAR=value` after the path).
    env: Vec<(String, String)>,
}

fn variants() -> Vec<Variant> {
    let spec = std::env::var("INVOCATION_VARIANTS")
        .expect("INVOCATION_VARIANTS=label=path[@direct],… (scripts/bench.sh sets it)");
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (label, rest) = item
                .split_once('=')
                .unwrap_or_else(|| panic!("INVOCATION_VARIANTS item {item:?}: label=path"));
            let mut parts = rest.split('|');
            let path = parts.next().unwrap_or("");
            let env = parts
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let (path, fast_claims) = match path.strip_suffix("@fast-claims") {
                Some(p) => (p, true),
                None => (path, false),
            };
            let (path, direct) = match path.strip_suffix("@direct") {
                Some(p) => (p, true),
                None => (path, false),
            };
            assert!(Path::new(path).exists(), "{label}: no binary at {path}");
            Variant {
                label: label.to_owned(),
                binary: path.into(),
                direct,
                fast_claims,
                env,
            }
        })
        .collect()
}

/// Where the process's CPU is read and limited: its own cgroup, or /proc.
enum CpuMeter {
    /// cgroup v1: `cpuacct` for the counts, `cpu` for the quota.
    V1 { acct: PathBuf, cpu: PathBuf },
    /// cgroup v2: one directory.
    V2 { dir: PathBuf },
    /// `/proc/<pid>/stat` utime + stime (clock ticks), no limit possible.
    Proc { pid: u32 },
}

/// One reading of the process's CPU: the exact total, and the kernel's sampled user and
/// system shares (ticks or µs) by which an interval's total is split.
#[derive(Debug, Default, Clone, Copy)]
struct CpuReading {
    total_us: u64,
    user_weight: u64,
    system_weight: u64,
}

impl CpuReading {
    /// User and system µs between `before` and this reading: the total's difference, split
    /// by the interval's own samples (a split of each total alone could run backwards).
    fn since(&self, before: &CpuReading) -> (u64, u64) {
        let total = self.total_us.saturating_sub(before.total_us);
        let user = self.user_weight.saturating_sub(before.user_weight);
        let system = self.system_weight.saturating_sub(before.system_weight);
        let user_us = if user + system == 0 {
            total
        } else {
            (total as f64 * user as f64 / (user + system) as f64) as u64
        };
        (user_us, total - user_us.min(total))
    }
}

impl CpuMeter {
    /// Moves `pid` into a cgroup of its own when the host allows it.
    fn attach(pid: u32, name: &str) -> Self {
        let v1 = Path::new("/sys/fs/cgroup/cpuacct");
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let join = |dir: &Path| {
            std::fs::create_dir_all(dir).ok()?;
            std::fs::write(dir.join("cgroup.procs"), pid.to_string()).ok()
        };
        if v1.is_dir() {
            let acct = v1.join(name);
            let cpu = Path::new("/sys/fs/cgroup/cpu").join(name);
            if join(&acct).is_some() && join(&cpu).is_some() {
                return CpuMeter::V1 { acct, cpu };
            }
        } else if v2.exists() {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
            let dir = Path::new("/sys/fs/cgroup").join(name);
            if join(&dir).is_some() {
                return CpuMeter::V2 { dir };
            }
        }
        CpuMeter::Proc { pid }
    }

    /// (user, system) CPU so far, µs.
    fn read(&self) -> CpuReading {
        let text = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        match self {
            CpuMeter::V1 { acct, .. } => {
                // `cpuacct.usage` is exact (ns of run time, as CLOCK_PROCESS_CPUTIME_ID);
                // `usage_user`/`usage_sys` are charged at ticks and miss most of a process
                // that sleeps and wakes thousands of times a second (measured: 0.76 s of
                // 1.78 s). So the total is `usage`, split by the tick counts of `cpuacct.stat`.
                let total_us = text(acct.join("cpuacct.usage"))
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1000;
                let stat = text(acct.join("cpuacct.stat"));
                let ticks = |k: &str| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                CpuReading {
                    total_us,
                    user_weight: ticks("user"),
                    system_weight: ticks("system"),
                }
            }
            CpuMeter::V2 { dir } => {
                let stat = text(dir.join("cpu.stat"));
                let field = |k: &str| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                // As v1: the total is exact, the split is what the kernel sampled.
                CpuReading {
                    total_us: field("usage_usec"),
                    user_weight: field("user_usec"),
                    system_weight: field("system_usec"),
                }
            }
            CpuMeter::Proc { pid } => {
                let stat = text(PathBuf::from(format!("/proc/{pid}/stat")));
                // Fields after the command name (which may hold spaces) start at state (3).
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .map(|v| v.parse().unwrap_or(0))
                    .collect();
                let tick_us = 1_000_000 / 100; // USER_HZ is 100 on Linux
                let (user, system) = (
                    f.get(11).copied().unwrap_or(0),
                    f.get(12).copied().unwrap_or(0),
                );
                CpuReading {
                    total_us: (user + system) * tick_us,
                    user_weight: user,
                    system_weight: system,
                }
            }
        }
    }

    /// Holds the process to `cpus` vCPUs (CFS quota per 100 ms period); false if not possible.
    fn limit(&self, cpus: f64) -> bool {
        let quota = (cpus * 100_000.0) as u64;
        match self {
            CpuMeter::V1 { cpu, .. } => {
                std::fs::write(cpu.join("cpu.cfs_period_us"), "100000").is_ok()
                    && std::fs::write(cpu.join("cpu.cfs_quota_us"), quota.to_string()).is_ok()
            }
            CpuMeter::V2 { dir } => {
                std::fs::write(dir.join("cpu.max"), format!("{quota} 100000")).is_ok()
            }
            CpuMeter::Proc { .. } => false,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            CpuMeter::V1 { .. } => "cgroup v1 cpuacct.usage (ns; user/sys split by ticks)",
            CpuMeter::V2 { .. } => "cgroup v2 cpu.stat (µs)",
            CpuMeter::Proc { .. } => "/proc/<pid>/stat (10 ms ticks)",
        }
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        // A cgroup can be removed once its processes are gone; the sandbox kills them first.
        match self {
            CpuMeter::V1 { acct, cpu } => {
                let _ = std::fs::remove_dir(acct);
                let _ = std::fs::remove_dir(cpu);
            }
            CpuMeter::V2 { dir } => {
                let _ = std::fs::remove_dir(dir);
            }
            CpuMeter::Proc { .. } => {}
        }
    }
}

/// The records of the bench's batches: fresh events, redeliveries of the previous batch's
/// events (same bytes) and poison, from a fixed seed, so every variant loads the same data.
struct Feed {
    rng: Rng,
    sequence: u64,
    poisons: u64,
    previous: Vec<Vec<u8>>,
    /// Every event id sent, once each: what the sinks must hold at the end.
    expected: Vec<String>,
    /// Fresh events' times spread over this many hours before now (`INVOCATION_SPREAD_HOURS`,
    /// 0: all now): late data, one object per hour a batch holds.
    spread_hours: u64,
    poison_share: f64,
}

impl Feed {
    fn new() -> Self {
        Self {
            rng: Rng::from_seed(0x5eed_0014),
            sequence: 0,
            poisons: 0,
            previous: Vec::new(),
            expected: Vec::new(),
            spread_hours: env_or("INVOCATION_SPREAD_HOURS", 0),
            poison_share: poison_share(),
        }
    }

    /// `bytes` (one event's JSON) with its time moved back a random number of whole hours
    /// within the spread.
    fn spread(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        if self.spread_hours == 0 {
            return bytes;
        }
        let hours = self.rng.below(self.spread_hours) as i64;
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).expect("an event");
        let at = chrono::Utc::now() - chrono::Duration::hours(hours);
        doc["created_at"] = at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into();
        doc.to_string().into_bytes()
    }

    fn batch(&mut self, records: usize) -> String {
        let mut out = Vec::with_capacity(records);
        let mut fresh = Vec::new();
        for _ in 0..records {
            self.sequence += 1;
            let bytes = if self.rng.chance(self.poison_share) {
                self.poisons += 1;
                produce::poison(&mut self.rng, self.poisons).1.bytes
            } else if !self.previous.is_empty() && self.rng.chance(DUPLICATE_SHARE) {
                let i = self.rng.below(self.previous.len() as u64) as usize;
                self.previous[i].clone()
            } else {
                let (event_id, record) = produce::event(&mut self.rng, 1000);
                let bytes = self.spread(record.bytes);
                self.expected.push(event_id);
                fresh.push(bytes.clone());
                bytes
            };
            out.push((self.sequence, bytes));
        }
        self.previous = fresh;
        kinesis_event(&out)
    }
}

/// What the loader's `batch done` line said.
#[derive(Default, Clone)]
struct Done {
    /// phase name → (wall ms, cpu ms)
    phases: BTreeMap<String, (f64, f64)>,
}

/// Reads the log lines appended since `offset` and returns the last `batch done`.
fn last_done(log: &Path, offset: &mut u64) -> Option<Done> {
    let mut f = std::fs::File::open(log).ok()?;
    f.seek(SeekFrom::Start(*offset)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    *offset += text.len() as u64;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "batch done")
        .map(|v| {
            // The loader's JSON lines carry their fields at the top level; other
            // formatters nest them under "fields".
            let fields = if v.get("phases").is_some() {
                &v
            } else {
                &v["fields"]
            };
            let mut done = Done::default();
            for pair in fields["phases"].as_str().unwrap_or("").split_whitespace() {
                if let Some((name, times)) = pair.split_once('=') {
                    if let Some((w, c)) = times.split_once('/') {
                        done.phases.insert(
                            name.to_owned(),
                            (w.parse().unwrap_or(0.0), c.parse().unwrap_or(0.0)),
                        );
                    }
                }
            }
            done
        })
}

/// One big batch under a CPU quota: its wall (s), its CPU (s, where the quota could be
/// set) and the loader's phase split (wall ms / CPU ms per phase).
struct Big {
    wall: f64,
    cpu: Option<f64>,
    done: Option<Done>,
}

/// Totals of one variant over its measured batches.
#[derive(Default)]
struct Tally {
    records: u64,
    batches: u64,
    user_us: u64,
    sys_us: u64,
    wall_ms: f64,
    redeliveries: u64,
    requests: BTreeMap<String, u64>,
    phases: BTreeMap<String, (f64, f64)>,
    peak_kb: u64,
    /// Context switches of the process's threads (voluntary: it slept waiting for I/O).
    switches: u64,
    big: Vec<Big>,
}

/// One variant's function: its resources, proxy, sandbox and meter.
struct Function {
    stack: TestStack,
    proxy: FaultProxy,
    sandbox: Sandbox,
    log: PathBuf,
    log_offset: u64,
    feed: Feed,
    meter: Option<CpuMeter>,
}

impl Function {
    async fn start(v: &Variant, tag: &str) -> Self {
        let stack = TestStack::new(&format!("bench{tag}"), false).await;
        let moto = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (make bench)");
        let proxy = FaultProxy::start(&moto).await;
        if v.fast_claims {
            proxy.add(Rule::always("DynamoDB.PutItem", Fault::ClaimsInProxy));
        }
        let endpoint = if v.direct { moto } else { proxy.endpoint() };
        let log = std::env::temp_dir().join(format!("{}-{tag}.log", stack.name));
        let pass = |k: &str| std::env::var(k).ok().map(|val| (k.to_owned(), val));
        let mut env: Vec<(String, String)> = [
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "PATH",
        ]
        .iter()
        .filter_map(|k| pass(k))
        .collect();
        env.extend([
            ("AWS_ENDPOINT_URL".into(), endpoint),
            ("DATABASE_URL".into(), stack.database_url.clone()),
            ("DEDUP_TABLE".into(), stack.config.dedup_table.clone()),
            ("OUTPUT_BUCKET".into(), stack.config.output_bucket.clone()),
            ("DLQ_URL".into(), stack.config.dlq_url.clone()),
        ]);
        env.extend(v.env.iter().cloned());
        let sandbox = Sandbox::new(FunctionSpec {
            binary: v.binary.clone(),
            name: format!("bench-{}", v.label),
            env,
            log: log.clone(),
        })
        .await
        .expect("the Runtime API stand-in binds");
        Self {
            stack,
            proxy,
            sandbox,
            log,
            log_offset: 0,
            feed: Feed::new(),
            meter: None,
        }
    }

    /// Invokes with `event` until nothing is reported failed (the mapping would redeliver
    /// the failed part; the whole batch again is the same work plus duplicates). Returns the
    /// number of extra deliveries and the loader's last `batch done`.
    async fn deliver(&mut self, event: String) -> (u64, Option<Done>) {
        let mut redeliveries = 0;
        loop {
            let outcome = self
                .sandbox
                .invoke(event.clone(), INVOCATION_TIMEOUT, None)
                .await;
            let done = last_done(&self.log, &mut self.log_offset);
            match outcome {
                Outcome::Response(body) if body.contains("\"batchItemFailures\":[]") => {
                    return (redeliveries, done)
                }
                Outcome::Response(_) if redeliveries < 5 => redeliveries += 1,
                other => panic!(
                    "{}: the loader did not load the batch: {other:?} (log {})",
                    self.stack.name,
                    self.log.display()
                ),
            }
        }
    }

    fn cpu(&self) -> CpuReading {
        self.meter
            .as_ref()
            .map_or(CpuReading::default(), CpuMeter::read)
    }

    /// Context switches so far, summed over the process's live threads.
    fn switches(&self) -> u64 {
        let pid = self.sandbox.pid().unwrap_or(0);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0;
        };
        tasks
            .filter_map(Result::ok)
            .map(|t| {
                std::fs::read_to_string(t.path().join("status"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| {
                        l.strip_prefix("voluntary_ctxt_switches:")
                            .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                    })
                    .filter_map(|v| v.trim().parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    fn peak_kb(&self) -> u64 {
        let pid = self.sandbox.pid().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A warm-up batch (start-up, first connections), then the process gets its cgroup.
    async fn warm_up(&mut self, tag: &str) {
        let event = self.feed.batch(200);
        self.deliver(event).await;
        let pid = self
            .sandbox
            .pid()
            .expect("the loader runs after its first batch");
        self.meter = Some(CpuMeter::attach(pid, &format!("streamload-bench-{tag}")));
    }

    /// One measured batch of `records`, added to `tally`.
    async fn measured_batch(&mut self, records: usize, tally: &mut Tally) {
        let event = self.feed.batch(records);
        let before_requests = self.proxy.counts();
        let cpu_before = self.cpu();
        let switches = self.switches();
        let started = Instant::now();
        let (redeliveries, done) = self.deliver(event).await;
        tally.switches += self.switches().saturating_sub(switches);
        let wall = started.elapsed().as_secs_f64() * 1000.0;
        let (user_us, sys_us) = self.cpu().since(&cpu_before);
        tally.records += records as u64;
        tally.batches += 1;
        tally.user_us += user_us;
        tally.sys_us += sys_us;
        tally.wall_ms += wall;
        tally.redeliveries += redeliveries;
        for (op, (seen, _)) in self.proxy.counts() {
            let before = before_requests.get(&op).map_or(0, |c| c.0);
            *tally.requests.entry(op).or_default() += (seen - before) as u64;
        }
        if let Some(done) = done {
            for (name, (w, c)) in done.phases {
                let e = tally.phases.entry(name).or_default();
                e.0 += w;
                e.1 += c;
            }
        }
        tally.peak_kb = tally.peak_kb.max(self.peak_kb());
    }

    /// The 10,000-record batch under a CPU limit: its wall time and its CPU (s).
    async fn limited_batch(&mut self, records: usize, cpus: f64) -> Big {
        let limited = self.meter.as_ref().is_some_and(|m| m.limit(cpus));
        let event = self.feed.batch(records);
        let cpu_before = self.cpu();
        let started = Instant::now();
        let (_, done) = self.deliver(event).await;
        let wall = started.elapsed().as_secs_f64();
        let (user_us, sys_us) = self.cpu().since(&cpu_before);
        if let Some(m) = &self.meter {
            m.limit_off();
        }
        Big {
            wall,
            cpu: limited.then_some((user_us + sys_us) as f64 / 1e6),
            done,
        }
    }
}

impl CpuMeter {
    /// Lifts the quota.
    fn limit_off(&self) -> bool {
        match self {
            CpuMeter::V1 { cpu, .. } => std::fs::write(cpu.join("cpu.cfs_quota_us"), "-1").is_ok(),
            CpuMeter::V2 { dir } => std::fs::write(dir.join("cpu.max"), "max 100000").is_ok(),
            CpuMeter::Proc { .. } => false,
        }
    }
}

#[tokio::main]
async fn main() {
    let variants = variants();
    let records: usize = env_or("INVOCATION_RECORDS", 1000);
    let batches: usize = env_or("INVOCATION_BATCHES", 3);
    let rounds: usize = env_or("INVOCATION_ROUNDS", 2);
    let big: usize = env_or("INVOCATION_BIG", 10_000);
    let cpus: Vec<f64> = std::env::var("INVOCATION_CPUS")
        .unwrap_or_else(|_| "0.25,1".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();

    let mut functions = Vec::new();
    for (n, v) in variants.iter().enumerate() {
        let tag = format!("{}{n}{}", v.label, std::process::id());
        let mut f = Function::start(v, &tag).await;
        f.warm_up(&tag).await;
        functions.push(f);
    }
    let mut tallies: Vec<Tally> = variants.iter().map(|_| Tally::default()).collect();
    for round in 0..rounds {
        for (n, f) in functions.iter_mut().enumerate() {
            for _ in 0..batches {
                f.measured_batch(records, &mut tallies[n]).await;
            }
            eprintln!("round {} {} done", round + 1, variants[n].label);
        }
    }
    if big > 0 {
        for &c in &cpus {
            for (n, f) in functions.iter_mut().enumerate() {
                let r = f.limited_batch(big, c).await;
                eprintln!(
                    "{}: {big} records at {c} vCPU: {:.1} s",
                    variants[n].label, r.wall
                );
                tallies[n].big.push(r);
            }
        }
    }

    // Exactly once, whatever the speed: every event once in both sinks, nothing else.
    for f in &functions {
        let mut expected = f.feed.expected.clone();
        expected.sort();
        f.stack.assert_each_once_in_both_sinks(&expected).await;
    }

    let meter = functions
        .first()
        .and_then(|f| f.meter.as_ref())
        .map_or("none", CpuMeter::name);
    println!(
        "\nwhole invocation, warm release loader under the Runtime API stand-in, {rounds} rounds × \
         {batches} batches × {records} records (≈{:.0}% duplicates, {:.0}% poison); CPU from {meter}",
        DUPLICATE_SHARE * 100.0,
        poison_share() * 100.0
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>7}",
        "variant", "CPU µs/rec", "user", "sys", "wall/batch", "switch/rec", "peak MB", "redeliv"
    );
    for (v, t) in variants.iter().zip(&tallies) {
        let per = |us: u64| us as f64 / t.records.max(1) as f64;
        println!(
            "{:<28} {:>9.1} {:>9.1} {:>9.1} {:>8.0}ms {:>10.2} {:>9.1} {:>7}",
            format!(
                "{}{}",
                v.label,
                if v.direct {
                    " (to moto)"
                } else if v.fast_claims {
                    " (claims in 5 ms)"
                } else {
                    ""
                }
            ),
            per(t.user_us + t.sys_us),
            per(t.user_us),
            per(t.sys_us),
            t.wall_ms / t.batches.max(1) as f64,
            t.switches as f64 / t.records.max(1) as f64,
            t.peak_kb as f64 / 1024.0,
            t.redeliveries
        );
    }
    println!("\nAWS requests per 1,000 records:");
    for (v, t) in variants.iter().zip(&tallies) {
        let per_k = 1000.0 / t.records.max(1) as f64;
        let ops: Vec<String> = t
            .requests
            .iter()
            .map(|(op, n)| format!("{op} {:.0}", *n as f64 * per_k))
            .collect();
        println!("  {:<26} {}", v.label, ops.join(", "));
    }
    println!("\nphase split per 1,000 records, wall ms / process CPU ms (the loader's own line):");
    for (v, t) in variants.iter().zip(&tallies) {
        if t.phases.is_empty() {
            println!("  {:<26} (this binary does not report phases)", v.label);
            continue;
        }
        let per_k = 1000.0 / t.records.max(1) as f64;
        let parts: Vec<String> = t
            .phases
            .iter()
            .map(|(p, (w, c))| format!("{p} {:.0}/{:.1}", w * per_k, c * per_k))
            .collect();
        println!("  {:<26} {}", v.label, parts.join(", "));
    }
    if big > 0 {
        println!("\none {big}-record batch held to a CPU quota (wall s; CPU s used):");
        for (v, t) in variants.iter().zip(&tallies) {
            let parts: Vec<String> = cpus
                .iter()
                .zip(&t.big)
                .map(|(c, b)| match b.cpu {
                    Some(cpu) => format!("{c} vCPU {:.2} s (CPU {cpu:.2} s)", b.wall),
                    None => format!("{c} vCPU: no cgroup here, unlimited {:.2} s", b.wall),
                })
                .collect();
            println!("  {:<26} {}", v.label, parts.join("; "));
        }
        println!("\nthat batch's phases, wall ms / process CPU ms (the loader's own line):");
        for (v, t) in variants.iter().zip(&tallies) {
            for (c, b) in cpus.iter().zip(&t.big) {
                let parts: Vec<String> = b
                    .done
                    .iter()
                    .flat_map(|d| d.phases.iter())
                    .map(|(p, (w, cpu))| format!("{p} {w:.0}/{cpu:.0}"))
                    .collect();
                println!("  {:<26} {c} vCPU: {}", v.label, parts.join(", "));
            }
        }
    }
    println!(
        "\nexactly once: every variant's events each once in PostgreSQL and in Parquet ✓{}",
        if variants.iter().any(|v| v.fast_claims) {
            " (@fast-claims: with their claims kept by the proxy)"
        } else {
            ""
        }
    );
    for mut f in functions {
        f.sandbox.kill().await;
        // The meter's cgroup can go once its process is gone.
        drop(f.meter.take());
    }
}
