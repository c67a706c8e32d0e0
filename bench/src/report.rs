//! Case results, the human table, the JSON lines and the Markdown summary (see BENCH.md).

use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug, Default, Clone)]
pub struct Options {
    pub quick: bool,
    pub json: Option<PathBuf>,
    pub target: Option<PathBuf>,
    /// Runs only the cases whose name contains this.
    pub case: Option<String>,
}

impl Options {
    pub fn wants(&self, case: &str) -> bool {
        self.case.as_deref().is_none_or(|c| case.contains(c))
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One case: our figure and the baseline's, over interleaved runs.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub metric: &'static str,
    pub unit: &'static str,
    /// Medians over the runs.
    pub value: f64,
    pub baseline: String,
    pub baseline_value: f64,
    /// True when a smaller value is better (times): the ratio is then baseline / ours.
    pub lower_is_better: bool,
    pub goal: Option<f64>,
    pub latency: Latency,
    pub baseline_latency: Option<Latency>,
    pub runs: usize,
    pub spread: f64,
    pub note: String,
}

impl Case {
    pub fn ratio(&self) -> f64 {
        if self.lower_is_better {
            self.baseline_value / self.value
        } else {
            self.value / self.baseline_value
        }
    }
}

impl Case {
    /// A higher-is-better case from per-run figures, ours and the baseline's taken interleaved:
    /// both medians, our spread and the run count. The caller names it and fills in the rest.
    pub fn from_runs(mut ours: Vec<f64>, mut theirs: Vec<f64>) -> Case {
        Case {
            name: String::new(),
            metric: "",
            unit: "",
            spread: spread(&ours),
            runs: ours.len(),
            value: median(&mut ours),
            baseline: String::new(),
            baseline_value: median(&mut theirs),
            lower_is_better: false,
            goal: None,
            latency: Latency::default(),
            baseline_latency: None,
            note: String::new(),
        }
    }
}

impl Case {
    /// A lower-is-better time case (ms) from per-run times, ours and the baseline's.
    pub fn from_times(
        name: String,
        mut ours: Vec<f64>,
        mut theirs: Vec<f64>,
        baseline: String,
    ) -> Case {
        Case {
            name,
            metric: "time",
            unit: "ms",
            spread: spread(&ours),
            runs: ours.len(),
            value: median(&mut ours),
            baseline,
            baseline_value: median(&mut theirs),
            lower_is_better: true,
            goal: None,
            latency: Latency::default(),
            baseline_latency: None,
            note: String::new(),
        }
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// (max − min) / median.
pub fn spread(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    let m = median(&mut v);
    (v[v.len() - 1] - v[0]) / m
}

/// Prints the table and writes the JSON lines (appended to an earlier suite's when `append`)
/// and the Markdown summary.
pub fn emit(suite: &str, cases: &[Case], options: &Options, append: bool) -> Result<(), String> {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<22} {:>12} {:>12} {:>7} {:>5}  {:>8} {:>8} {:>8} {:>8}  baseline",
        "case", "ours", "baseline", "ratio", "goal", "p50_us", "p99_us", "p999_us", "max_us"
    );
    for c in cases {
        let goal = c.goal.map_or("-".to_string(), |g| format!("{g:.2}"));
        let verdict = match c.goal {
            _ if c.spread > 0.2 => " (spread > 0.2: too noisy to count)",
            Some(g) if c.ratio() >= g => " (meets goal)",
            Some(_) => " (BELOW GOAL)",
            None => "",
        };
        let _ = writeln!(
            table,
            "{:<22} {:>9.1} {:<2} {:>9.1} {:<2} {:>7.3} {:>5}  {:>8} {:>8} {:>8} {:>8}  {}{}",
            c.name,
            c.value,
            short(c.unit),
            c.baseline_value,
            short(c.unit),
            c.ratio(),
            goal,
            c.latency.p50_us,
            c.latency.p99_us,
            c.latency.p999_us,
            c.latency.max_us,
            c.baseline,
            verdict
        );
        if let Some(b) = c.baseline_latency {
            let _ = writeln!(
                table,
                "{:<22} {:>12} {:>12} {:>7} {:>5}  {:>8} {:>8} {:>8} {:>8}  (baseline latency)",
                "", "", "", "", "", b.p50_us, b.p99_us, b.p999_us, b.max_us
            );
        }
        if !c.note.is_empty() {
            let _ = writeln!(table, "{:<22} note: {}", "", c.note);
        }
    }
    print!("{table}");
    let mut lines = String::new();
    for c in cases {
        let mut obj = serde_json::json!({
            "suite": suite, "case": c.name, "metric": c.metric, "unit": c.unit,
            "value": c.value, "baseline": c.baseline, "baseline_value": c.baseline_value,
            "ratio": c.ratio(), "goal": c.goal,
            "p50_us": c.latency.p50_us, "p99_us": c.latency.p99_us,
            "p999_us": c.latency.p999_us, "max_us": c.latency.max_us,
            "runs": c.runs, "spread": c.spread,
        });
        if let Some(b) = c.baseline_latency {
            obj["baseline_p50_us"] = b.p50_us.into();
            obj["baseline_p99_us"] = b.p99_us.into();
            obj["baseline_p999_us"] = b.p999_us.into();
        }
        lines.push_str(&obj.to_string());
        lines.push('\n');
    }
    if let Some(path) = &options.json {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        file.write_all(lines.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let md = format!(
        "# cess-bench {suite}{}\n\n```\n{table}```\n",
        if options.quick { " (quick)" } else { "" }
    );
    let _ = std::fs::write(dir.join(format!("{suite}.md")), md);
    Ok(())
}

fn short(unit: &str) -> &str {
    match unit {
        "MiB/s" => "MB",
        "IOPS" => "io",
        "ms" => "ms",
        _ => "",
    }
}
