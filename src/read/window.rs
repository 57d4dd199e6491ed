//! The read-ahead window: plain logic, no I/O. Input: the reads of one handle, in order.
//! Output: which bytes to drop, which to fetch now (the read's own bytes first, then read-ahead).
//!
//! The handle keeps ONE contiguous buffered range `[start, end)` (bytes held or in flight). A read
//! that starts inside it or right at its end continues the stream; a short forward skip keeps the
//! window size but restarts the range at the new offset; anything else (a far seek, a backward seek
//! past the behind-buffer) resets to the initial window. Read-ahead happens only once a reader has
//! shown it is sequential (a read continuing the previous one, or the first read at offset 0), so
//! random readers fetch exactly what they ask for.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// First read-ahead after a reset.
    pub initial_window: u64,
    /// The read-ahead doubles up to this.
    pub max_read_ahead: u64,
    /// A forward jump past the buffered end of at most this many bytes does not reset the window.
    pub max_forward_skip: u64,
    /// Bytes kept before the current read, for short backward seeks.
    pub behind: u64,
    /// Once the window is this large, it is topped up whenever this much of it is consumed
    /// (one download request's worth), rather than when half of it is.
    pub extend_step: u64,
}

/// What the handle must do for one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Discard everything buffered (a far seek).
    pub reset: bool,
    /// Discard buffered bytes below this offset.
    pub drop_before: u64,
    /// Bytes to request now; may be empty. Contiguous with what stays buffered.
    pub fetch: Range<u64>,
    /// `fetch.start..demand_end` is needed by this very read; the rest is read-ahead.
    pub demand_end: u64,
}

#[derive(Debug, Clone)]
pub struct Window {
    cfg: WindowConfig,
    size: u64,
    buffered: Range<u64>,
    /// The next read-ahead extension's size.
    ahead: u64,
    sequential: bool,
    last_end: u64,
}

impl Window {
    pub fn new(cfg: WindowConfig, size: u64) -> Self {
        let initial = cfg.initial_window.max(1);
        Window {
            cfg: WindowConfig {
                initial_window: initial,
                max_read_ahead: cfg.max_read_ahead.max(initial),
                ..cfg
            },
            size,
            buffered: 0..0,
            ahead: initial,
            sequential: false,
            last_end: 0,
        }
    }

    /// Bytes held or in flight.
    pub fn buffered(&self) -> Range<u64> {
        self.buffered.clone()
    }

    /// Size of the next read-ahead extension.
    pub fn ahead(&self) -> u64 {
        self.ahead
    }

    pub fn is_sequential(&self) -> bool {
        self.sequential
    }

    /// Plans the read of `[offset, offset+len)` (clamped to the file size).
    pub fn read(&mut self, offset: u64, len: u64) -> Plan {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Plan {
                reset: false,
                drop_before: self.buffered.start,
                fetch: self.buffered.end..self.buffered.end,
                demand_end: self.buffered.end,
            };
        }
        let b = self.buffered.clone();
        let mut reset = false;
        if offset >= b.start && offset <= b.end {
            // Moving forward from where the last read ended proves a sequential reader; a
            // re-read inside the buffer changes nothing.
            if offset >= self.last_end {
                self.sequential = true;
            }
        } else if self.sequential && offset > b.end && offset - b.end <= self.cfg.max_forward_skip {
            // Short skip (e.g. a player jumping over a few frames): keep the window size,
            // but do not fetch the gap nobody asked for.
            reset = true;
            self.buffered = offset..offset;
        } else {
            reset = true;
            self.buffered = offset..offset;
            self.ahead = self.cfg.initial_window;
            self.sequential = false;
        }

        let keep_from = offset.min(end.saturating_sub(self.cfg.behind));
        let drop_before = self.buffered.start.max(keep_from);
        self.buffered.start = drop_before;
        if self.buffered.end < drop_before {
            self.buffered.end = drop_before;
        }

        let fetch_start = self.buffered.end;
        let demand_end = end.max(fetch_start);
        let mut new_end = demand_end;
        // Extend once half of the current read-ahead (or one request's worth) is consumed, so
        // each extension is a sizeable request rather than a trickle of small ones, and a large
        // window keeps downloads flowing steadily instead of in bursts of half its size.
        let step = (self.ahead / 2).min(self.cfg.extend_step.max(1));
        if self.sequential && self.buffered.end < end.saturating_add(self.ahead - step) {
            let mut target = end.saturating_add(self.ahead);
            if step == self.cfg.extend_step {
                // Whole steps, so that each is one download request, not one and a sliver.
                let whole = (target - self.buffered.end) / step * step;
                target = self.buffered.end + whole;
            }
            new_end = new_end.max(target);
            self.ahead = self.ahead.saturating_mul(2).min(self.cfg.max_read_ahead);
        }
        new_end = new_end.min(self.size).max(fetch_start);
        self.buffered.end = new_end;
        self.last_end = end;
        Plan {
            reset,
            drop_before,
            fetch: fetch_start..new_end,
            demand_end: demand_end.min(new_end),
        }
    }

    /// The handle could only buffer up to `end` (memory budget full, or a fetch failed): the
    /// buffered range stops there and the next read fetches from it again.
    pub fn truncate(&mut self, end: u64) {
        let end = end.clamp(self.buffered.start, self.buffered.end);
        self.buffered.end = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const KB: u64 = 1024;

    fn cfg() -> WindowConfig {
        WindowConfig {
            initial_window: 64 * KB,
            max_read_ahead: 1024 * KB,
            max_forward_skip: 64 * KB,
            behind: 64 * KB,
            extend_step: 256 * KB,
        }
    }

    fn pattern(i: u64) -> u8 {
        (i.wrapping_mul(31) ^ (i >> 9)) as u8
    }

    /// The handle's store as a model: chunks as start -> end; a chunk's byte `i` is
    /// `pattern(start + i)`, as if fetched at its own offset.
    #[derive(Default)]
    struct Model {
        chunks: BTreeMap<u64, u64>,
        fetched_bytes: u64,
        direct_bytes: u64,
    }

    impl Model {
        fn apply(&mut self, plan: &Plan, truncate_at: Option<u64>, w: &mut Window) {
            if plan.reset {
                self.chunks.clear();
            }
            // The model trims partly dropped chunks so that it holds exactly the buffered range.
            let d = plan.drop_before;
            self.chunks = std::mem::take(&mut self.chunks)
                .into_iter()
                .filter(|(_, e)| *e > d)
                .map(|(s, e)| (s.max(d), e))
                .collect();
            let mut end = plan.fetch.end;
            if let Some(t) = truncate_at {
                if t < end {
                    end = t.max(plan.fetch.start);
                    w.truncate(end);
                }
            }
            if end > plan.fetch.start {
                self.chunks.insert(plan.fetch.start, end);
                self.fetched_bytes += end - plan.fetch.start;
            }
        }

        /// Serves [offset, end) from the chunks, fetching directly what is not buffered.
        fn serve(&mut self, offset: u64, end: u64) -> Vec<u8> {
            let mut out = Vec::new();
            let mut pos = offset;
            while pos < end {
                let hit = self
                    .chunks
                    .range(..=pos)
                    .next_back()
                    .filter(|(_, e)| pos < **e)
                    .map(|(s, e)| (*s, *e));
                match hit {
                    Some((_, e)) => {
                        let stop = end.min(e);
                        out.extend((pos..stop).map(pattern));
                        pos = stop;
                    }
                    None => {
                        out.push(pattern(pos));
                        self.direct_bytes += 1;
                        pos += 1;
                    }
                }
            }
            out
        }

        fn held(&self) -> u64 {
            self.chunks.iter().map(|(s, e)| e - s).sum()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Next(u64),
        Seek(u64, u64),
        Skip(u64, u64),
        Back(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1..40 * KB).prop_map(Op::Next),
            1 => (0..4096 * KB, 1..40 * KB).prop_map(|(o, l)| Op::Seek(o, l)),
            1 => (1..100 * KB, 1..40 * KB).prop_map(|(s, l)| Op::Skip(s, l)),
            1 => (1..100 * KB, 1..40 * KB).prop_map(|(s, l)| Op::Back(s, l)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every read is served with the right bytes from what the plans fetched (plus direct
        /// fetches of what a truncated plan left out), and the buffer stays bounded.
        #[test]
        fn reads_are_exact_and_bounded(
            size in 1..4096 * KB,
            ops in proptest::collection::vec((op(), proptest::option::weighted(0.2, 0..4096 * KB)), 1..80),
        ) {
            let c = cfg();
            let mut w = Window::new(c, size);
            let mut m = Model::default();
            let mut pos = 0u64;
            let mut max_len = 0;
            for (op, trunc) in ops {
                let (offset, len) = match op {
                    Op::Next(l) => (pos, l),
                    Op::Seek(o, l) => (o, l),
                    Op::Skip(s, l) => (pos + s, l),
                    Op::Back(s, l) => (pos.saturating_sub(s), l),
                };
                max_len = max_len.max(len);
                let plan = w.read(offset, len);
                let end = (offset + len).min(size);
                prop_assert!(plan.fetch.start <= plan.demand_end && plan.demand_end <= plan.fetch.end);
                prop_assert!(plan.drop_before <= offset.max(w.buffered().start));
                m.apply(&plan, trunc, &mut w);
                if offset < end {
                    let got = m.serve(offset, end);
                    let want: Vec<u8> = (offset..end).map(pattern).collect();
                    prop_assert_eq!(got, want);
                    pos = end;
                }
                let b = w.buffered();
                prop_assert!(b.end <= size);
                prop_assert_eq!(m.held(), b.end - b.start);
                prop_assert!(b.end - b.start <= c.max_read_ahead + c.behind + 2 * max_len,
                    "buffered {:?} too large", b);
            }
        }

        /// Random reads far apart fetch only their own bytes.
        #[test]
        fn random_reads_fetch_only_what_they_ask(
            reads in proptest::collection::vec((0..64u64, 1..32 * KB), 1..50),
        ) {
            let size = 64 * 1024 * KB;
            let mut w = Window::new(cfg(), size);
            let mut m = Model::default();
            let mut asked = 0;
            let mut last: Option<u64> = None;
            for (slot, len) in reads {
                // 1 MiB apart, never the slot right after the previous read.
                let slot = match last { Some(l) if slot == l + 1 || slot == l => (l + 2) % 64, _ => slot };
                last = Some(slot);
                let offset = slot * 1024 * KB + 1;
                let plan = w.read(offset, len);
                m.apply(&plan, None, &mut w);
                prop_assert_eq!(m.serve(offset, offset + len).len() as u64, len);
                asked += len;
            }
            prop_assert_eq!(m.fetched_bytes, asked);
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// A sequential reader's read-ahead grows to the maximum, and the bytes fetched stay close
        /// to the bytes read.
        #[test]
        fn sequential_windows_grow(len in 4 * KB..128 * KB) {
            let c = cfg();
            let size = 8 * c.max_read_ahead;
            let mut w = Window::new(c, size);
            let mut m = Model::default();
            let mut pos = 0;
            let mut fetches = Vec::new();
            while pos < size {
                let plan = w.read(pos, len);
                if !plan.fetch.is_empty() {
                    fetches.push(plan.fetch.end - plan.fetch.start);
                }
                prop_assert!(!plan.reset);
                m.apply(&plan, None, &mut w);
                let end = (pos + len).min(size);
                prop_assert_eq!(m.serve(pos, end).len() as u64, end - pos);
                pos = end;
            }
            prop_assert_eq!(w.ahead(), c.max_read_ahead);
            prop_assert_eq!(m.direct_bytes, 0);
            prop_assert_eq!(m.fetched_bytes, size);
            // Growing windows: few, large requests rather than one per read (at most one per
            // step consumed once the window is full).
            let step = c.extend_step.min(c.max_read_ahead / 2);
            prop_assert!(fetches.len() as u64 <= 8 + 2 * size / step + 1,
                "{} fetches", fetches.len());
            prop_assert!(fetches.windows(2).take(4).all(|p| p[1] >= p[0] || p[1] < len));
        }
    }

    /// A full window is topped up a step at a time, so downloads flow steadily: every
    /// extension is at least a step, and the reader never has less than the window minus a
    /// step (and its own read) ahead of it.
    #[test]
    fn a_full_window_is_topped_up_a_step_at_a_time() {
        let c = cfg();
        let size = 16 * c.max_read_ahead;
        let mut w = Window::new(c, size);
        let len = 128 * KB;
        let mut pos = 0;
        while pos < size {
            let plan = w.read(pos, len);
            let end = (pos + len).min(size);
            let full = w.ahead() == c.max_read_ahead && pos >= 2 * c.max_read_ahead;
            if full && plan.fetch.end < size {
                assert!(w.buffered().end >= end + c.max_read_ahead - c.extend_step - len);
                let fetched = plan.fetch.end - plan.fetch.start;
                assert!(fetched % c.extend_step == 0, "{fetched} at {pos}");
            }
            pos = end;
        }
    }

    #[test]
    fn first_read_not_at_zero_has_no_read_ahead() {
        let mut w = Window::new(cfg(), 10 << 20);
        let p = w.read(5 << 20, 4096);
        assert_eq!(p.fetch, (5 << 20)..(5 << 20) + 4096);
        // Continuing it proves a sequential reader.
        let p = w.read((5 << 20) + 4096, 4096);
        assert_eq!(p.fetch.end, (5 << 20) + 8192 + 64 * KB);
    }

    #[test]
    fn short_skip_keeps_window_far_seek_resets() {
        let mut w = Window::new(cfg(), 100 << 20);
        let mut pos = 0;
        for _ in 0..40 {
            w.read(pos, 32 * KB);
            pos += 32 * KB;
        }
        let grown = w.ahead();
        assert!(grown > cfg().initial_window);
        let b = w.buffered();
        let p = w.read(b.end + 10 * KB, 4 * KB);
        assert!(p.reset);
        assert_eq!(w.ahead(), grown.saturating_mul(2).min(cfg().max_read_ahead));
        assert!(w.is_sequential());
        let p = w.read(90 << 20, 4 * KB);
        assert!(p.reset);
        assert_eq!(w.ahead(), cfg().initial_window);
        assert!(!w.is_sequential());
        assert_eq!(p.fetch, (90 << 20)..(90 << 20) + 4 * KB);
    }

    #[test]
    fn backward_seek_within_behind_buffer_is_served() {
        let mut w = Window::new(cfg(), 100 << 20);
        w.read(0, 32 * KB);
        w.read(32 * KB, 32 * KB);
        let p = w.read(10 * KB, 4 * KB);
        assert!(!p.reset);
        assert!(p.fetch.is_empty() || p.fetch.start >= 64 * KB);
    }

    #[test]
    fn reads_at_or_after_eof_plan_nothing() {
        let mut w = Window::new(cfg(), 1000);
        let p = w.read(1000, 10);
        assert!(p.fetch.is_empty());
        let p = w.read(0, 5000);
        assert_eq!(p.fetch, 0..1000);
        assert_eq!(p.demand_end, 1000);
    }
}
