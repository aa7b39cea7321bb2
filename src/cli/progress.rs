//! Materialization progress: a live bar with rows/s on a terminal,
//! plain lines otherwise (at 10,000 rows read, then each time the count
//! doubles: short logs that still show a long run moving).

use std::io::IsTerminal;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};

use crate::registry::MaterializationRecord;
use crate::MaterializeProgress;

pub struct Progress {
    terminal: bool,
    bar: Mutex<Option<ProgressBar>>,
    started: Mutex<std::time::Instant>,
    /// Rows read so far of the view being materialized, and the count at
    /// which the next plain line is printed.
    rows: Mutex<(u64, u64)>,
}

/// Rows read at the first plain progress line (then at twice as many, ...).
const FIRST_LINE_ROWS: u64 = 10_000;

impl Progress {
    pub fn new() -> Self {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            started: Mutex::new(std::time::Instant::now()),
            rows: Mutex::new((0, FIRST_LINE_ROWS)),
        }
    }
}

impl MaterializeProgress for Progress {
    fn view_started(&self, view: &str, start: DateTime<Utc>, end: DateTime<Utc>) {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
        *self.rows.lock().unwrap_or_else(|e| e.into_inner()) = (0, FIRST_LINE_ROWS);
        let window = format!("{view}: {} .. {}", start.to_rfc3339(), end.to_rfc3339());
        if self.terminal {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {human_pos} rows ({per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(window);
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
        } else {
            eprintln!("materializing {window}");
        }
    }

    fn rows_written(&self, view: &str, rows: u64) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.inc(rows);
            return;
        }
        let mut counts = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let (total, next) = &mut *counts;
        *total = total.saturating_add(rows);
        while *total >= *next && *next < u64::MAX {
            eprintln!("{view}: {next} rows read");
            *next = next.saturating_mul(2);
        }
    }

    fn view_finished(&self, record: &MaterializationRecord) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
        let seconds = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            .as_secs_f64();
        println!(
            "{}: wrote {} rows in {:.2}s ({:.0} rows/s), window {} .. {}",
            record.view,
            record.rows_written,
            seconds,
            record.rows_written as f64 / seconds.max(1e-9),
            record.start.to_rfc3339(),
            record.end.to_rfc3339()
        );
    }
}
