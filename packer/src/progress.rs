//! A progress bar on stderr for long packs: only when stderr is a terminal, and only
//! once packing has taken more than a second, so quick packs and scripts see nothing.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::{Cell, RefCell};
use std::io::{self, IsTerminal, Read};
use std::time::{Duration, Instant};

const DELAY: Duration = Duration::from_secs(1);
const WITH_TOTAL: &str =
    "{spinner} packing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
const WITHOUT_TOTAL: &str = "{spinner} packing {bytes} {bytes_per_sec} {elapsed}";

/// Counts the input bytes read; shared by reference with the readers that count.
pub struct Progress {
    enabled: bool,
    start: Instant,
    total: Cell<Option<u64>>,
    done: Cell<u64>,
    bar: RefCell<Option<ProgressBar>>,
}

impl Progress {
    /// `total`: the input's size when known (a regular file), else a spinner is shown.
    pub fn new(total: Option<u64>) -> Progress {
        Progress {
            enabled: io::stderr().is_terminal(),
            start: Instant::now(),
            total: Cell::new(total),
            done: Cell::new(0),
            bar: RefCell::new(None),
        }
    }

    /// A progress that never draws.
    #[cfg(test)]
    pub fn hidden() -> Progress {
        Progress {
            enabled: false,
            start: Instant::now(),
            total: Cell::new(None),
            done: Cell::new(0),
            bar: RefCell::new(None),
        }
    }

    /// The size of the input, once it is known (an image: its layers, read twice).
    pub fn set_total(&self, total: Option<u64>) {
        self.total.set(total);
    }

    pub fn add(&self, n: u64) {
        let done = self.done.get() + n;
        self.done.set(done);
        if !self.enabled {
            return;
        }
        let mut bar = self.bar.borrow_mut();
        match &*bar {
            // indicatif limits its own redraw rate.
            Some(bar) => bar.set_position(done),
            None if self.start.elapsed() >= DELAY => {
                let new = self.make_bar();
                new.set_position(done);
                *bar = Some(new);
            }
            None => {}
        }
    }

    fn make_bar(&self) -> ProgressBar {
        let (bar, template) = match self.total.get() {
            Some(total) => (
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
                WITH_TOTAL,
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                WITHOUT_TOTAL,
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }

    /// Removes the bar, if one was shown, before the final messages.
    pub fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A reader that reports what it reads to a [`Progress`].
pub struct Counting<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<'a, R> Counting<'a, R> {
    pub fn new(inner: R, progress: &'a Progress) -> Self {
        Counting { inner, progress }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        ProgressStyle::with_template(WITH_TOTAL).unwrap();
        ProgressStyle::with_template(WITHOUT_TOTAL).unwrap();
    }

    #[test]
    fn counting_reader_counts() {
        let progress = Progress::hidden();
        let mut data = Vec::new();
        Counting::new(&[7u8; 5000][..], &progress)
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(progress.done.get(), 5000);
        assert!(progress.bar.borrow().is_none());
    }
}
