//! The read path: shared download URLs, a per-handle prefetcher, one global memory budget.

pub mod window;
