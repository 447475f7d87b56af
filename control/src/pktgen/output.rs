//! The generator's results for a person: a table on the terminal and a PNG chart.

use std::fmt::Write as _;
use std::path::Path;

use super::engine::{Latency, StreamReport};
use super::Results;

fn mpps(pps: f64) -> String {
    format!("{:.3}", pps / 1e6)
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

fn latency_cells(l: &Latency) -> String {
    format!(
        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        us(l.min_ns),
        us(l.p50_ns),
        us(l.p90_ns),
        us(l.p99_ns),
        us(l.p99_9_ns),
        us(l.max_ns)
    )
}

/// One stream's line of a fixed-rate run (rates over `secs` of sending).
fn stream_row(out: &mut String, size: &str, s: &StreamReport, secs: f64) {
    let loss = if s.tx_frames == 0 {
        0.0
    } else {
        s.lost as f64 * 100.0 / s.tx_frames as f64
    };
    let _ = writeln!(
        out,
        "{:>6} {:>8} {:>12} {:>12} {:>10} {:>10.4} {:>5} {:>6} {:>9} {:>9} {}",
        size,
        s.port,
        s.tx_frames,
        s.rx_frames,
        s.lost,
        loss,
        s.duplicates,
        s.reordered,
        mpps(s.tx_frames as f64 / secs),
        mpps((s.rx_frames - s.duplicates) as f64 / secs),
        latency_cells(&s.latency)
    );
}

const LATENCY_HEAD: &str = "  min us   p50 us   p90 us   p99 us p99.9 us    max us";

/// The results as text tables: fixed-rate runs per stream, or the RFC 2544 figures per size
/// with the latency trials under them.
pub fn table(r: &Results) -> String {
    let mut out = String::new();
    let vm = r
        .reflect
        .map(|m| format!(", the generator also plays the VM ({})", m.describe()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "pktgen: ports {}, {} flows per stream{}{vm}",
        r.ports.join(", "),
        r.flows,
        r.vlan
            .map(|v| format!(", VLAN {v} PCP {}", r.pcp))
            .unwrap_or_default()
    );
    if !r.runs.is_empty() {
        let _ = writeln!(
            out,
            "{:>6} {:>8} {:>12} {:>12} {:>10} {:>10} {:>5} {:>6} {:>9} {:>9} {LATENCY_HEAD}",
            "size",
            "port",
            "tx frames",
            "rx frames",
            "lost",
            "loss %",
            "dup",
            "reord",
            "tx Mpps",
            "rx Mpps"
        );
        for run in &r.runs {
            let t = &run.trial;
            let secs = t.tx_secs.max(1e-9);
            for s in &t.streams {
                stream_row(&mut out, &run.size, s, secs);
            }
            if t.streams.len() > 1 {
                let all = StreamReport {
                    port: "all".into(),
                    tx_frames: t.tx_frames,
                    tx_bytes: t.streams.iter().map(|s| s.tx_bytes).sum(),
                    rx_frames: t.rx_frames,
                    rx_bytes: t.streams.iter().map(|s| s.rx_bytes).sum(),
                    lost: t.lost,
                    duplicates: t.duplicates,
                    reordered: t.reordered,
                    latency: t.latency.clone(),
                };
                stream_row(&mut out, &run.size, &all, secs);
            }
        }
    }
    if !r.rfc2544.is_empty() {
        let _ = writeln!(
            out,
            "{:>6} {:>10} {:>8} {:>10} {:>10} {:>8} {:>11} {:>7}",
            "size", "NDR Mpps", "Gbit/s", "bound", "PDR Mpps", "Gbit/s", "gen. Mpps", "trials"
        );
        for s in &r.rfc2544 {
            let _ = writeln!(
                out,
                "{:>6} {:>10} {:>8.2} {:>10} {:>10} {:>8.2} {:>11} {:>7}",
                s.size,
                mpps(s.ndr.pps),
                s.ndr.gbps,
                if s.ndr.generator_bound {
                    "generator"
                } else {
                    "device"
                },
                mpps(s.pdr.pps),
                s.pdr.gbps,
                mpps(s.generator_pps),
                s.search_trials.len()
            );
        }
        let _ = writeln!(
            out,
            "{:>6} {:>8} {:>10} {:>8} {LATENCY_HEAD}",
            "size", "% NDR", "Mpps", "lost"
        );
        for s in &r.rfc2544 {
            for l in &s.latency {
                let _ = writeln!(
                    out,
                    "{:>6} {:>8} {:>10} {:>8} {}",
                    s.size,
                    l.load_percent,
                    mpps(l.trial.sent_pps),
                    l.trial.lost,
                    latency_cells(&l.trial.latency)
                );
            }
        }
    }
    out
}

/// Makes "sans-serif" drawable: registers DejaVu Sans (Debian's fonts-dejavu-core) once.
fn register_font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        const CANDIDATES: [&str; 3] = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
        ];
        let bytes = CANDIDATES
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or("no DejaVu Sans font found (Debian package fonts-dejavu-core)")?;
        // The chart library keeps the font for the process's life.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
            .map_err(|_| "the DejaVu Sans font file is not a usable TrueType font".to_string())
    })
    .clone()
}

/// The label of category axis position `v`: a category at each whole number, none between.
fn category<S: AsRef<str>>(v: f64, labels: &[S]) -> String {
    let i = v.round();
    if (v - i).abs() < 0.01 && i >= 0.0 {
        labels
            .get(i as usize)
            .map(|s| s.as_ref().to_owned())
            .unwrap_or_default()
    } else {
        String::new()
    }
}

/// One series of the throughput panel and the latency panel.
struct Series {
    label: String,
    values: Vec<f64>,
}

/// Draws throughput per frame size (left) and latency percentiles (right) into a PNG.
pub fn draw_png(r: &Results, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    register_font()?;
    let e = |x: &dyn std::fmt::Display| x.to_string();

    // Throughput per size: NDR and PDR, or sent and received of fixed-rate runs.
    let (sizes, through, lat): (Vec<String>, Vec<Series>, Vec<(String, Latency)>) =
        if r.rfc2544.is_empty() {
            (
                r.runs.iter().map(|x| x.size.clone()).collect(),
                vec![
                    Series {
                        label: "sent".into(),
                        values: r.runs.iter().map(|x| x.trial.sent_pps / 1e6).collect(),
                    },
                    Series {
                        label: "received".into(),
                        values: r.runs.iter().map(|x| x.trial.received_pps / 1e6).collect(),
                    },
                ],
                r.runs
                    .iter()
                    .map(|x| (format!("{} B", x.size), x.trial.latency.clone()))
                    .collect(),
            )
        } else {
            (
                r.rfc2544.iter().map(|x| x.size.clone()).collect(),
                vec![
                    Series {
                        label: "zero loss (NDR)".into(),
                        values: r.rfc2544.iter().map(|x| x.ndr.pps / 1e6).collect(),
                    },
                    Series {
                        label: "PDR".into(),
                        values: r.rfc2544.iter().map(|x| x.pdr.pps / 1e6).collect(),
                    },
                ],
                r.rfc2544
                    .iter()
                    .flat_map(|x| {
                        x.latency.iter().map(move |l| {
                            (
                                format!("{} B at {}%", x.size, l.load_percent),
                                l.trial.latency.clone(),
                            )
                        })
                    })
                    .collect(),
            )
        };
    let root = BitMapBackend::new(path, (1280, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(620);
    let n = sizes.len().max(1);
    let ymax = through
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.15;
    let mut chart = ChartBuilder::on(&left)
        .caption("Throughput per frame size", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|v| category(*v, &sizes))
        .x_desc("frame size (bytes)")
        .y_desc("Mpps")
        .draw()
        .map_err(|x| e(&x))?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (k, s) in through.iter().enumerate() {
        let c = colors[k % colors.len()];
        let pts: Vec<(f64, f64)> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64, v))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;

    // Latency percentile curves: one line per measured trial.
    let quantiles = ["min", "p50", "p90", "p99", "p99.9", "max"];
    let lmax = lat.iter().map(|(_, l)| l.max_ns).max().unwrap_or(1).max(10) as f64 / 1e3 * 2.0;
    let lmin = lat
        .iter()
        .map(|(_, l)| l.min_ns)
        .filter(|&v| v > 0)
        .min()
        .unwrap_or(100) as f64
        / 1e3
        / 2.0;
    let mut chart = ChartBuilder::on(&right)
        .caption("One-way latency percentiles", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..5.5f64, (lmin.max(0.01)..lmax).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_labels(7)
        .x_label_formatter(&|v| category(*v, &quantiles))
        .x_desc("percentile")
        .y_desc("latency (us, log)")
        .draw()
        .map_err(|x| e(&x))?;
    for (k, (label, l)) in lat.iter().enumerate() {
        if l.samples == 0 {
            continue;
        }
        let c = colors[k % colors.len()];
        let vals = [l.min_ns, l.p50_ns, l.p90_ns, l.p99_ns, l.p99_9_ns, l.max_ns];
        let pts: Vec<(f64, f64)> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64, (v.max(1) as f64 / 1e3).max(lmin.max(0.01))))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
