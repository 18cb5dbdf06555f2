//! Estimated outcomes: for an attempt the recording never made, one of that target's recorded
//! outcomes nearest in time, drawn with the run's seeded RNG (latency, time to first token,
//! error class, Retry-After and output tokens come together, from one real attempt).
//!
//! Bounded memory: per target, the last [`RECENT`] outcomes the main read has passed (it reads
//! ahead of the simulated time by the requests still in flight). A target that has no outcome
//! there yet is looked up by a second cursor that scans forward for the first outcomes of every
//! target still short of them; it moves only forward, so all look-ups together cost at most one
//! more read of the log. A target with no outcome in the whole log is unknown: never guessed.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use omniroute_core::event::ArchivedEvent;
use omniroute_core::log::{LogError, Reader, Records};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

use crate::source::{Outcome, Targets, tokens};

/// Outcomes kept per target from the main read.
const RECENT: usize = 64;
/// Outcomes a draw chooses among: the ones nearest in time.
const NEAREST: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Sample {
    ts: u64,
    outcome: Outcome,
}

pub struct Pool<'r> {
    reader: &'r Reader,
    recent: Vec<VecDeque<Sample>>,
    early: Vec<Vec<Sample>>,
    ahead: Option<Records<'r>>,
    ahead_done: bool,
    /// Attempts the look-ahead saw start: (request, attempt) -> start time.
    ahead_started: FxHashMap<(u128, u16), u64>,
}

pub enum Draw {
    Estimated(Outcome),
    /// The target has no recorded outcome anywhere in the log.
    Unknown,
}

impl<'r> Pool<'r> {
    pub fn new(reader: &'r Reader) -> Self {
        Self {
            reader,
            recent: Vec::new(),
            early: Vec::new(),
            ahead: None,
            ahead_done: false,
            ahead_started: FxHashMap::default(),
        }
    }

    fn grow(&mut self, n: usize) {
        if self.recent.len() < n {
            self.recent.resize_with(n, VecDeque::new);
            self.early.resize_with(n, Vec::new);
        }
    }

    /// An outcome the main read passed.
    pub fn observe(&mut self, target: u32, ts: u64, outcome: Outcome) {
        self.grow(target as usize + 1);
        if let Some(q) = self.recent.get_mut(target as usize) {
            if q.len() == RECENT {
                q.pop_front();
            }
            q.push_back(Sample { ts, outcome });
        }
    }

    /// An outcome for `target` at time `t`; `from_seq` is where the main read is.
    pub fn draw(
        &mut self,
        target: u32,
        t: u64,
        from_seq: u64,
        targets: &mut Targets,
        rng: &mut ChaCha8Rng,
    ) -> Result<Draw, LogError> {
        let i = target as usize;
        self.grow(targets.len().max(i + 1));
        if self.recent[i].is_empty() && self.early[i].is_empty() {
            self.look_ahead(i, from_seq, targets)?;
        }
        let pick = |s: &[Sample], rng: &mut ChaCha8Rng| -> Option<Outcome> {
            if s.is_empty() {
                return None;
            }
            // The NEAREST samples around t (they are in time order).
            let pos = s.partition_point(|x| x.ts < t);
            let lo = pos.saturating_sub(NEAREST / 2);
            let hi = (lo + NEAREST).min(s.len());
            let lo = hi.saturating_sub(NEAREST);
            let k = lo + (rng.next_u64() % (hi - lo) as u64) as usize;
            s.get(k).map(|x| x.outcome)
        };
        let recent = self.recent[i].make_contiguous();
        if let Some(o) = pick(recent, rng) {
            return Ok(Draw::Estimated(o));
        }
        Ok(match pick(&self.early[i], rng) {
            Some(o) => Draw::Estimated(o),
            None => Draw::Unknown,
        })
    }

    /// Scans forward until `want` has its first outcomes (or the log ends), keeping the first
    /// outcomes of every target met that is still short of them.
    fn look_ahead(
        &mut self,
        want: usize,
        from_seq: u64,
        targets: &mut Targets,
    ) -> Result<(), LogError> {
        if self.ahead_done {
            return Ok(());
        }
        if self.ahead.is_none() {
            self.ahead = Some(self.reader.range(from_seq.max(1)..)?);
        }
        while self.early.get(want).is_some_and(|e| e.len() < NEAREST) {
            let Some(item) = self.ahead.as_mut().and_then(|it| it.next()) else {
                self.ahead_done = true;
                self.ahead = None;
                break;
            };
            let stored = item?;
            let rec = stored.record()?;
            match rec.event {
                ArchivedEvent::AttemptStarted(a) => {
                    self.ahead_started
                        .insert((a.request_id.get().0, a.attempt.to_native()), rec.ts_ms);
                }
                ArchivedEvent::AttemptFinished(a) => {
                    let Some(start) = self
                        .ahead_started
                        .remove(&(a.request_id.get().0, a.attempt.to_native()))
                    else {
                        continue;
                    };
                    let target = targets.id(&a.target.provider, &a.target.model) as usize;
                    self.grow(targets.len());
                    if self.early[target].len() >= NEAREST {
                        continue;
                    }
                    let error = a.error.as_ref();
                    self.early[target].push(Sample {
                        ts: rec.ts_ms,
                        outcome: Outcome {
                            dur_ms: rec.ts_ms.saturating_sub(start),
                            latency_us: a.latency_us.to_native(),
                            ttft_us: a.ttft_us.as_ref().map(|x| x.to_native()),
                            error: error.map(|e| e.class.get()),
                            retry_after_ms: error
                                .and_then(|e| e.retry_after_ms.as_ref().map(|r| r.to_native())),
                            status: a.status.as_ref().map(|s| s.to_native()),
                            tokens: tokens(&a.tokens),
                        },
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}
