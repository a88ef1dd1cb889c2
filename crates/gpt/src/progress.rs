//! Training progress for people and for log files: an indicatif bar when stderr is a terminal, and
//! otherwise (output redirected, CI, `nohup`) a plain line every few seconds with the step, the loss, the
//! speed and the time left, so that a log is never silent for a minute.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain line is printed when there is no terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    mode: Mode,
    total: usize,
    tokens_per_step: usize,
    start: Instant,
}

enum Mode {
    Bar(ProgressBar),
    Plain { last: Instant },
    Silent,
}

impl Progress {
    /// Progress over `total` steps of `tokens_per_step` tokens each (0: no speed shown); `shown = false`
    /// prints nothing.
    pub fn new(label: &str, total: usize, tokens_per_step: usize, shown: bool) -> Self {
        let mode = if !shown {
            Mode::Silent
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            Mode::Bar(bar)
        } else {
            Mode::Plain {
                last: Instant::now(),
            }
        };
        Progress {
            mode,
            total,
            tokens_per_step,
            start: Instant::now(),
        }
    }

    /// Step `done` (1-based) finished with training loss `loss`.
    pub fn step(&mut self, done: usize, loss: f64) {
        match &mut self.mode {
            Mode::Bar(bar) => {
                bar.set_message(format!("loss {loss:.4}"));
                bar.set_position(done as u64);
            }
            Mode::Plain { last } if last.elapsed() >= PLAIN_EVERY || done == self.total => {
                *last = Instant::now();
                let secs = self.start.elapsed().as_secs_f64();
                let speed = match self.tokens_per_step {
                    0 => String::new(), // steps that are not batches of tokens (a grid of runs)
                    n => format!(", {:.0} tokens/s", (done * n) as f64 / secs.max(1e-9)),
                };
                let eta = secs / done as f64 * (self.total - done) as f64;
                println!(
                    "step {done}/{}: loss {loss:.4}{speed}, {secs:.0}s elapsed, ~{eta:.0}s left",
                    self.total
                );
            }
            _ => {}
        }
    }

    /// A line printed above the bar (or as it is, without one).
    pub fn println(&self, line: &str) {
        match &self.mode {
            Mode::Bar(bar) => bar.println(line),
            Mode::Plain { .. } => println!("{line}"),
            Mode::Silent => {}
        }
    }

    pub fn finish(&self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}
