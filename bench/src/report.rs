//! Statistics and result files.

use std::{fmt::Write as _, path::PathBuf};

/// Summary of a sample of durations (nanoseconds or microseconds, as the caller says).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub n: usize,
}

impl Stats {
    /// Summarises `samples` (sorted in place).
    pub fn of(samples: &mut [f64]) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let n = samples.len();
        let pick = |q: f64| samples[((n as f64 - 1.0) * q).round() as usize];
        Stats {
            mean: samples.iter().sum::<f64>() / n as f64,
            p50: pick(0.5),
            p99: pick(0.99),
            n,
        }
    }
}

/// A Markdown table.
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| {} |\n|", self.title, self.header.join(" | "));
        for _ in &self.header {
            out.push_str(" ---: |");
        }
        out.push('\n');
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n{n}");
        }
        out
    }
}

/// Where results go: `bench/results/` for full runs, `target/bench-smoke/` for smoke runs (which must
/// not overwrite recorded numbers).
pub fn results_dir(smoke: bool) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if smoke {
        root.join("../target/bench-smoke")
    } else {
        root.join("results")
    }
}

/// Writes a results file with a header naming the machine and date, and prints it.
pub fn write(smoke: bool, file: &str, intro: &str, tables: &[Table]) -> std::io::Result<PathBuf> {
    let dir = results_dir(smoke);
    std::fs::create_dir_all(&dir)?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let mut text = format!(
        "{intro}\n\nMachine: {cpus} CPUs ({cpu_model}), kernel {}",
        kernel.trim()
    );
    if smoke {
        text.push_str(" — SMOKE RUN (small sizes, few samples; not a result)");
    }
    text.push_str("\n\n");
    for t in tables {
        text.push_str(&t.markdown());
        text.push('\n');
    }
    let path = dir.join(file);
    std::fs::write(&path, &text)?;
    println!("{text}");
    println!("written to {}", path.display());
    Ok(path)
}
