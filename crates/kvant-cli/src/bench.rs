//! `kvant bench`: latency (median, p90) and peak memory of repeated runs.

use crate::error::CliError;
use crate::inputs::{generate, parse_dims, read_feeds};
use kvant_graph::load_model;
use kvant_runtime::{Session, SessionOptions};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `kvant bench`.
pub struct BenchArgs {
    pub model: PathBuf,
    pub input: Option<PathBuf>,
    pub dims: Vec<String>,
    pub threads: usize,
    pub iters: usize,
    pub warmup: usize,
    pub json: bool,
    pub profile: bool,
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs the benchmark and prints the result.
pub fn bench(args: &BenchArgs) -> Result<(), CliError> {
    if args.iters == 0 {
        return Err(CliError::Usage("--iters must be at least 1".into()));
    }
    let start = Instant::now();
    let model = load_model(&args.model)?;
    let session = Session::with_options(&model, &SessionOptions::with_threads(args.threads))?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let feeds = match &args.input {
        Some(path) => read_feeds(path)?,
        None => {
            let dims = parse_dims(&args.dims)?;
            session
                .plan()
                .inputs()
                .enumerate()
                .map(|(i, info)| Ok((info.name.clone(), generate(info, &dims, i as u64)?)))
                .collect::<Result<Vec<_>, CliError>>()?
        }
    };
    drop(model);
    for _ in 0..args.warmup {
        session.run(&feeds)?;
    }
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let t = Instant::now();
        let out = session.run(&feeds)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    times.sort_by(f64::total_cmp);
    let median = percentile(&times, 0.5);
    let p90 = percentile(&times, 0.9);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let peak = peak_rss_mb();
    let profile = if args.profile {
        Some(profile_steps(&session, &feeds, args.iters)?)
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            json!({
                "model": args.model.display().to_string(),
                "threads": session.threads(),
                "iters": args.iters,
                "median_ms": median,
                "p90_ms": p90,
                "mean_ms": mean,
                "min_ms": times[0],
                "load_ms": load_ms,
                "peak_rss_mb": peak,
            })
        );
    } else {
        println!("model    {}", args.model.display());
        println!("threads  {}", session.threads());
        println!("load     {load_ms:.1} ms (parse + plan)");
        println!(
            "latency  median {median:.3} ms, p90 {p90:.3} ms, mean {mean:.3} ms, min {:.3} ms over {} runs",
            times[0], args.iters
        );
        if let Some(peak) = peak {
            println!("peak rss {peak:.1} MB");
        }
    }
    if let Some(text) = profile {
        print!("{text}");
    }
    Ok(())
}

/// Runs `iters` profiled runs and summarizes the time per operator type and per node.
fn profile_steps(
    session: &Session,
    feeds: &[(String, kvant_tensor::Tensor)],
    iters: usize,
) -> Result<String, CliError> {
    use std::collections::HashMap;
    let mut per_op: HashMap<String, (f64, usize)> = HashMap::new();
    let mut per_node: HashMap<String, f64> = HashMap::new();
    for _ in 0..iters {
        let (_, steps) = session.run_profiled(feeds)?;
        for s in steps {
            let e = per_op.entry(s.op_type).or_default();
            e.0 += s.seconds;
            e.1 += 1;
            *per_node.entry(s.node).or_default() += s.seconds;
        }
    }
    let total: f64 = per_op
        .values()
        .map(|v| v.0)
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let mut ops: Vec<_> = per_op.into_iter().collect();
    ops.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let mut out = String::from("profile: time per operator type (mean per run)\n");
    for (op, (secs, count)) in &ops {
        out.push_str(&format!(
            "  {op:<24} {:>9.3} ms {:>5.1}%  {} nodes\n",
            secs * 1e3 / iters as f64,
            100.0 * secs / total,
            count / iters
        ));
    }
    let mut nodes: Vec<_> = per_node.into_iter().collect();
    nodes.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.push_str("slowest nodes\n");
    for (node, secs) in nodes.iter().take(15) {
        out.push_str(&format!(
            "  {:>9.3} ms  {node}\n",
            secs * 1e3 / iters as f64
        ));
    }
    Ok(out)
}
