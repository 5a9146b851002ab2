//! The "at a glance" numbers: per-minute activity over the last hour, taken
//! from the daemon's counters by a sampler (duplicates and refusals are
//! never stored, so the store cannot say), and drawn as inline SVG.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::app::App;

/// The series, in drawing order: (name, colour).
pub const SERIES: [(&str, &str); 5] = [
    ("accepted", "#2b6cb0"),
    ("duplicates", "#805ad5"),
    ("rejected", "#dd6b20"),
    ("delivered", "#2f855a"),
    ("failed", "#c53030"),
];

const MINUTES: usize = 60;

#[derive(Default)]
struct Activity {
    /// (minute since the epoch, counts in that minute), oldest first.
    minutes: VecDeque<(u64, [u64; 5])>,
    last: Option<[u64; 5]>,
}

static ACTIVITY: Mutex<Activity> = Mutex::new(Activity {
    minutes: VecDeque::new(),
    last: None,
});

fn totals(app: &App) -> [u64; 5] {
    let m = &app.metrics;
    [
        m.accepted_total.get(),
        m.duplicate_total.get(),
        m.rejected_total.get(),
        m.delivered_total.get(),
        m.failed_total.get(),
    ]
}

fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

/// Add what happened since the last sample to the current minute.
pub fn sample(app: &App) {
    let now = totals(app);
    let minute = minute_now();
    let Ok(mut a) = ACTIVITY.lock() else { return };
    let last = a.last.replace(now).unwrap_or(now);
    let mut delta = [0u64; 5];
    for i in 0..5 {
        delta[i] = now[i].saturating_sub(last[i]);
    }
    match a.minutes.back_mut() {
        Some((m, c)) if *m == minute => {
            for i in 0..5 {
                c[i] = c[i].saturating_add(delta[i]);
            }
        }
        _ => a.minutes.push_back((minute, delta)),
    }
    while a
        .minutes
        .front()
        .is_some_and(|(m, _)| *m + (MINUTES as u64) <= minute)
    {
        a.minutes.pop_front();
    }
}

/// Sample every two seconds for as long as the daemon runs.
pub async fn sampler(app: Arc<App>) {
    loop {
        sample(&app);
        if app.draining.load(Ordering::Acquire) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The last hour, one entry per minute (oldest first, zeros where nothing
/// was sampled), ending with the current minute.
pub fn last_hour() -> Vec<[u64; 5]> {
    let minute = minute_now();
    let a = match ACTIVITY.lock() {
        Ok(a) => a,
        Err(_) => return vec![[0; 5]; MINUTES],
    };
    (0..MINUTES as u64)
        .map(|i| {
            let m = minute + 1 + i - MINUTES as u64;
            a.minutes
                .iter()
                .find(|(k, _)| *k == m)
                .map(|(_, c)| *c)
                .unwrap_or([0; 5])
        })
        .collect()
}

/// A line chart of the minutes with a legend, as an `<svg>` element. Only
/// numbers and fixed names go in, nothing from a request.
pub fn chart(minutes: &[[u64; 5]]) -> String {
    let (w, h, left, top, bottom) = (720.0_f64, 180.0_f64, 44.0_f64, 10.0_f64, 24.0_f64);
    let max = minutes
        .iter()
        .flat_map(|m| m.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let n = minutes.len().max(2) as f64;
    let x = |i: usize| left + (w - left - 8.0) * i as f64 / (n - 1.0);
    let y = |v: u64| top + (h - top - bottom) * (1.0 - v as f64 / max as f64);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"events per minute, last hour\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>",
        y(0),
        w - 8.0,
        y(0)
    );
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{max}/min</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        left - 4.0,
        top + 10.0,
        left - 4.0,
        y(0)
    );
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{}\" font-size=\"11\">−60 min</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">now</text>",
        h - 6.0,
        w - 8.0,
        h - 6.0
    );
    for (k, (name, colour)) in SERIES.iter().enumerate() {
        let points: Vec<String> = minutes
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{:.1},{:.1}", x(i), y(m[k])))
            .collect();
        let total: u64 = minutes.iter().map(|m| m[k]).sum();
        let _ = write!(
            s,
            "<polyline class=\"series\" data-series=\"{name}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"><title>{name}: {total} in the last hour</title></polyline>",
            points.join(" ")
        );
    }
    s.push_str("</svg>");
    s
}
