//! `cargo bench --no-default-features --bench scheduling`: how well a room chooses, in a simulated
//! room of machines that differ like real ones, under a mixed workload from three callers.
//!
//! The room: a fast GPU desktop (30 ms to first token, 80 tokens/s, 4 places), a medium machine
//! (80 ms, 40 tokens/s, 2 places) and a CPU laptop (600 ms, 8 tokens/s, 1 place). A model that is
//! not loaded on a machine takes 10 s to load there first. The callers: a person chatting (a
//! request every ~7 s), an app (a request every ~10 s, on a model only two machines have loaded),
//! and a script that fires a burst of 100 short requests (20-80 tokens, a batch job) at once.
//!
//! The same workload runs under three policies, in simulated time (a discrete-event simulation,
//! no sleeping): the first wave's least-loaded-random (first come first served), the hub's
//! scheduler (`gambi::hub::scheduler`, the very functions the registry calls, learning speeds from
//! its own measurements as the hub does), and a clairvoyant reference that knows every request's
//! true size and every machine's true speed and books each request, in order of arrival, where it
//! would finish earliest. A no-wait bound (each request alone on the machine best for it) is shown
//! too. Printed: mean and p95 completion time (arrival to last token) per policy, each caller's
//! share and times, and the verdicts on the targets.
#![expect(clippy::print_stdout, reason = "a bench binary prints its table")]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use gambi::hub::scheduler::{self, Ask, Candidate, Decision, Loaded, Policy, Speed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LOAD_MS: f64 = 10_000.0;
const SEEDS: u64 = 5;
/// How long the person and the app keep asking (simulated): ten minutes, with the burst in it.
const HORIZON_MS: f64 = 600_000.0;

#[derive(Clone)]
struct Machine {
    name: &'static str,
    ttft_ms: f64,
    tokens_per_second: f64,
    places: u32,
    loaded: HashSet<&'static str>,
}

fn room() -> Vec<Machine> {
    vec![
        Machine { name: "fast", ttft_ms: 30.0, tokens_per_second: 80.0, places: 4, loaded: ["llama3"].into() },
        Machine {
            name: "medium",
            ttft_ms: 80.0,
            tokens_per_second: 40.0,
            places: 2,
            loaded: ["llama3", "qwen"].into(),
        },
        Machine { name: "slow", ttft_ms: 600.0, tokens_per_second: 8.0, places: 1, loaded: ["llama3", "qwen"].into() },
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Caller {
    Person,
    App,
    Script,
}

const CALLERS: [Caller; 3] = [Caller::Person, Caller::App, Caller::Script];

impl Caller {
    fn label(self) -> &'static str {
        match self {
            Caller::Person => "person (1 chat every ~7 s)",
            Caller::App => "app (1 every ~10 s, qwen)",
            Caller::Script => "script (100 short ones at 30 s)",
        }
    }
}

#[derive(Clone)]
struct Request {
    caller: Caller,
    model: &'static str,
    arrival_ms: f64,
    tokens: f64,
}

fn workload(seed: u64) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut t = 0.0;
    while t < HORIZON_MS {
        out.push(Request {
            caller: Caller::Person,
            model: "llama3",
            arrival_ms: t,
            tokens: rng.random_range(150.0..400.0),
        });
        t += rng.random_range(4_000.0..10_000.0);
    }
    let mut t = 500.0;
    while t < HORIZON_MS {
        out.push(Request { caller: Caller::App, model: "qwen", arrival_ms: t, tokens: rng.random_range(50.0..300.0) });
        t += rng.random_range(6_000.0..14_000.0);
    }
    for i in 0..100 {
        let tokens = rng.random_range(20.0..80.0);
        out.push(Request {
            caller: Caller::Script,
            model: "llama3",
            arrival_ms: 30_000.0 + f64::from(i) * 0.1,
            tokens,
        });
    }
    out.sort_by(|a, b| a.arrival_ms.total_cmp(&b.arrival_ms));
    out
}

/// Serving `r` on `m` once a place is free: loading if needed, first token, generation.
fn true_service(m: &Machine, r: &Request, loaded: bool) -> f64 {
    (if loaded { 0.0 } else { LOAD_MS }) + m.ttft_ms + r.tokens / m.tokens_per_second * 1000.0
}

/// Each request alone in the room, on the machine that would serve it fastest.
fn alone(machines: &[Machine], r: &Request) -> f64 {
    machines.iter().map(|m| true_service(m, r, m.loaded.contains(r.model))).fold(f64::INFINITY, f64::min)
}

#[derive(PartialEq)]
struct Event(f64, u64, usize, usize); // time, order, request, machine (completion)

impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Runs the workload under `policy` as the hub would: decisions from what the hub has measured.
fn simulate(policy: Policy, work: &[Request], seed: u64) -> Vec<f64> {
    let mut machines = room();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut in_flight = vec![0u32; machines.len()];
    let mut speeds: HashMap<(usize, &str), Speed> = HashMap::new();
    let mut tokens_seen = scheduler::DEFAULT_OUTPUT_TOKENS;
    let mut done = vec![f64::NAN; work.len()];
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut served_turn: HashMap<Caller, u64> = HashMap::new();
    let mut turn = 0u64;
    let mut completions: BinaryHeap<Reverse<Event>> = BinaryHeap::new();
    let mut started_cold: HashMap<usize, bool> = HashMap::new();
    let mut next_arrival = 0;
    let mut order = 0u64;
    loop {
        let next_done = completions.peek().map(|Reverse(e)| e.0);
        let arrival = work.get(next_arrival).map(|r| r.arrival_ms);
        let now = match (arrival, next_done) {
            (None, None) => break,
            (Some(a), Some(d)) if a <= d => a,
            (Some(a), None) => a,
            (_, Some(d)) => d,
        };
        if arrival == Some(now) {
            queue.push_back(next_arrival);
            next_arrival += 1;
        } else if let Some(Reverse(Event(t, _, r, m))) = completions.pop() {
            done[r] = t;
            in_flight[m] -= 1;
            let req = &work[r];
            let cold = started_cold.remove(&r).unwrap_or(false);
            let ttft = (if cold { LOAD_MS } else { 0.0 }) + machines[m].ttft_ms;
            let tps = Some(machines[m].tokens_per_second);
            speeds.entry((m, req.model)).and_modify(|s| s.observe(ttft, tps, cold)).or_insert_with(|| {
                let mut s = Speed::first(machines[m].ttft_ms, tps);
                if cold {
                    s.load_ms = Some(LOAD_MS);
                }
                s
            });
            tokens_seen += 0.1 * (req.tokens - tokens_seen);
        }
        // Offer places to the waiting requests, in the policy's order.
        let ids: Vec<usize> = queue.iter().copied().collect();
        let ordered: Vec<usize> = match policy {
            Policy::LeastLoaded => ids.clone(),
            Policy::Expected => {
                let callers: Vec<Caller> = ids.iter().map(|&i| work[i].caller).collect();
                scheduler::fair_order(&callers, |c| served_turn.get(c).copied()).into_iter().map(|k| ids[k]).collect()
            }
        };
        let mut taken = HashSet::new();
        for (ahead, &r) in ordered.iter().enumerate() {
            let req = &work[r];
            let candidates: Vec<Candidate> = machines
                .iter()
                .enumerate()
                .map(|(m, machine)| Candidate {
                    in_flight: in_flight[m],
                    max_concurrency: machine.places,
                    loaded: if machine.loaded.contains(req.model) { Loaded::Yes } else { Loaded::No },
                    // As the registry does: a machine's speed on another model stands in until it
                    // has served this one.
                    speed: speeds
                        .get(&(m, req.model))
                        .or_else(|| speeds.iter().find(|((n, _), _)| *n == m).map(|(_, s)| s))
                        .copied(),
                })
                .collect();
            let ask = Ask { tokens: tokens_seen, ahead: ahead.saturating_sub(taken.len()) };
            let decision = scheduler::decide(policy, &candidates, &ask, &mut |n| rng.random_range(0..n));
            if let Decision::Take { index: m, .. } = decision {
                let loaded = machines[m].loaded.contains(req.model);
                started_cold.insert(r, !loaded);
                let finish = now + true_service(&machines[m], req, loaded);
                machines[m].loaded.insert(req.model);
                in_flight[m] += 1;
                order += 1;
                completions.push(Reverse(Event(finish, order, r, m)));
                taken.insert(r);
                turn += 1;
                served_turn.insert(req.caller, turn);
            }
        }
        queue.retain(|r| !taken.contains(r));
    }
    work.iter().zip(done).map(|(r, d)| d - r.arrival_ms).collect()
}

/// The clairvoyant reference: in order of arrival, each request booked on the machine place where,
/// knowing everything, it finishes earliest.
fn clairvoyant(work: &[Request]) -> Vec<f64> {
    let mut machines = room();
    let mut free_at: Vec<Vec<f64>> = machines.iter().map(|m| vec![0.0; m.places as usize]).collect();
    let mut loaded_at: Vec<HashMap<&str, f64>> =
        machines.iter().map(|m| m.loaded.iter().map(|&n| (n, 0.0)).collect()).collect();
    let mut out = Vec::with_capacity(work.len());
    for r in work {
        let mut best = (f64::INFINITY, 0, 0, false);
        for (m, machine) in machines.iter().enumerate() {
            for (s, &at) in free_at[m].iter().enumerate() {
                let start = at.max(r.arrival_ms);
                let loaded = loaded_at[m].get(r.model).is_some_and(|&t| t <= start);
                let finish = start + true_service(machine, r, loaded);
                if finish < best.0 {
                    best = (finish, m, s, loaded);
                }
            }
        }
        let (finish, m, s, loaded) = best;
        free_at[m][s] = finish;
        if !loaded {
            loaded_at[m].entry(r.model).or_insert(finish);
            machines[m].loaded.insert(r.model);
        }
        out.push(finish - r.arrival_ms);
    }
    out
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

fn p95(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

struct Run {
    times: Vec<f64>,
}

fn main() {
    let started = std::time::Instant::now();
    let mut runs: Vec<(&str, Vec<Run>)> = vec![
        ("least-loaded-random (first wave)", Vec::new()),
        ("scheduler (expected completion, fair turns)", Vec::new()),
        ("clairvoyant reference (true sizes and speeds)", Vec::new()),
        ("no-wait bound (each request alone)", Vec::new()),
    ];
    let mut works = Vec::new();
    for seed in 0..SEEDS {
        let work = workload(seed);
        let machines = room();
        runs[0].1.push(Run { times: simulate(Policy::LeastLoaded, &work, seed) });
        runs[1].1.push(Run { times: simulate(Policy::Expected, &work, seed) });
        runs[2].1.push(Run { times: clairvoyant(&work) });
        runs[3].1.push(Run { times: work.iter().map(|r| alone(&machines, r)).collect() });
        works.push(work);
    }
    println!(
        "Scheduling: {} workloads (seeds) of {} requests each on average, simulated time; the room:",
        SEEDS,
        works.iter().map(Vec::len).sum::<usize>() / works.len()
    );
    for m in room() {
        let mut models: Vec<&str> = m.loaded.iter().copied().collect();
        models.sort_unstable();
        println!(
            "  {:<7} {:>4.0} ms to first token, {:>3.0} tokens/s, {} place(s), loaded: {} (others load in {:.0} s)",
            m.name,
            m.ttft_ms,
            m.tokens_per_second,
            m.places,
            models.join(", "),
            LOAD_MS / 1000.0
        );
    }
    println!();
    println!("{:<48} {:>10} {:>10}", "policy", "mean s", "p95 s");
    let mut means = Vec::new();
    for (name, rs) in &runs {
        let all: Vec<f64> = rs.iter().flat_map(|r| r.times.iter().copied()).collect();
        means.push(mean(&all));
        println!("{:<48} {:>10.2} {:>10.2}", name, mean(&all) / 1000.0, p95(&all) / 1000.0);
    }
    println!();
    println!("Per caller: mean / p95 completion s, and the caller's share of the requests");
    println!("{:<48} {:>32} {:>32} {:>32}", "policy", CALLERS[0].label(), CALLERS[1].label(), CALLERS[2].label());
    for (name, rs) in runs.iter().take(3) {
        let mut cells = Vec::new();
        for caller in CALLERS {
            let times: Vec<f64> = rs
                .iter()
                .zip(&works)
                .flat_map(|(r, w)| r.times.iter().zip(w).filter(|(_, q)| q.caller == caller).map(|(t, _)| *t))
                .collect();
            let asked: usize = works.iter().map(|w| w.iter().filter(|q| q.caller == caller).count()).sum();
            let total: usize = works.iter().map(Vec::len).sum();
            cells.push(format!(
                "{:.2} / {:.2} ({:.0} % of requests)",
                mean(&times) / 1000.0,
                p95(&times) / 1000.0,
                asked as f64 * 100.0 / total as f64
            ));
        }
        println!("{:<48} {:>32} {:>32} {:>32}", name, cells[0], cells[1], cells[2]);
    }
    // The person's requests while the burst is being served, against their time alone.
    let machines = room();
    let burst_ratio = |rs: &[Run]| {
        let ratios: Vec<f64> = rs
            .iter()
            .zip(&works)
            .flat_map(|(r, w)| {
                let burst_end = r
                    .times
                    .iter()
                    .zip(w)
                    .filter(|(_, q)| q.caller == Caller::Script)
                    .map(|(t, q)| q.arrival_ms + t)
                    .fold(0.0, f64::max);
                r.times
                    .iter()
                    .zip(w)
                    .filter(move |(_, q)| {
                        q.caller == Caller::Person && q.arrival_ms >= 30_000.0 && q.arrival_ms <= burst_end
                    })
                    .map(|(t, q)| t / alone(&machines, q))
                    .collect::<Vec<f64>>()
            })
            .collect();
        (p95(&ratios), ratios.len())
    };
    println!();
    let (old_ratio, n_old) = burst_ratio(&runs[0].1);
    let (new_ratio, n_new) = burst_ratio(&runs[1].1);
    println!(
        "person's requests during the burst, p95 of completion / time alone: least-loaded {:.2}x ({} requests), scheduler {:.2}x ({} requests)",
        old_ratio, n_old, new_ratio, n_new
    );
    println!();
    let verdict = |name: &str, value: f64, target: &str, ok: bool| {
        println!("{:<70} {:>8.2} {:<12} {}", name, value, target, if ok { "PASS" } else { "MISS" });
    };
    // The steady traffic alone (the person and the app), where the choice of machine is the
    // whole story: during the burst every policy must use every machine.
    let steady = |rs: &[Run]| {
        let xs: Vec<f64> = rs
            .iter()
            .zip(&works)
            .flat_map(|(r, w)| r.times.iter().zip(w).filter(|(_, q)| q.caller != Caller::Script).map(|(t, _)| *t))
            .collect();
        mean(&xs)
    };
    let steady_better = steady(&runs[0].1) / steady(&runs[1].1);
    println!(
        "steady traffic (person and app) mean s: least-loaded {:.2}, scheduler {:.2}, clairvoyant {:.2}",
        steady(&runs[0].1) / 1000.0,
        steady(&runs[1].1) / 1000.0,
        steady(&runs[2].1) / 1000.0
    );
    println!();
    let within = means[1] / means[2];
    verdict("scheduler mean / clairvoyant mean", within, "<= 1.15", within <= 1.15);
    let better = means[0] / means[1];
    verdict("least-loaded-random mean / scheduler mean", better, ">= 2", better >= 2.0);
    verdict("least-loaded-random mean / scheduler mean, steady traffic", steady_better, ">= 2", steady_better >= 2.0);
    verdict("person's p95 during the burst, x time alone (scheduler)", new_ratio, "<= 1.5", new_ratio <= 1.5);
    println!("(ran in {:.2} s)", started.elapsed().as_secs_f64());
}
