//! Where the programs' records arrive: the BPF ring buffer, or one perf buffer per CPU (`--buffer`).

use std::{io, ops::ControlFlow, time::Duration};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{
        MapData, RingBuf,
        perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer},
    },
};
use tokio::io::{Interest, unix::AsyncFd};
use udptrace_common::names;

/// Which buffer the programs write to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// The BPF ring buffer (5.8+): one for every CPU, records in order.
    Ring,
    /// A perf buffer per CPU.
    Perf,
}

impl Buffer {
    /// The value of `Config::buffer` that makes the programs write here.
    pub fn for_kernel(self) -> u8 {
        match self {
            Buffer::Ring => udptrace_common::buffer::RING,
            Buffer::Perf => udptrace_common::buffer::PERF,
        }
    }
}

/// Pages of each CPU's perf buffer (`--buffer perf`): 256 KiB, about 1,100 `icmp_sent` records (bpftrace's default).
const PERF_PAGES: usize = 64;

/// The page size perf buffers are counted in.
fn page_size() -> usize {
    // SAFETY: no arguments; sysconf only reads.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// How long the buffer is left without a drain: the programs wake udptrace only once 64 KiB wait, so that
/// a flood does not cost a wake-up per event; this bounds the delay of a quiet trickle.
const DRAIN_PERIOD: Duration = Duration::from_millis(50);

/// Records handled in one drain of the ring buffer: a steady flood must not hold the session loop in one
/// drain, away from signals, timers and the metrics server.
const DRAIN_BATCH: usize = 4096;

pub enum Source {
    /// The ring buffer, and whether the last drain stopped at `DRAIN_BATCH` with records left.
    Ring(AsyncFd<RingBuf<MapData>>, bool),
    /// One buffer per online CPU.
    Perf(Vec<AsyncFd<PerfEventArrayBuffer<MapData>>>),
}

impl Source {
    /// Opens the buffer the programs write to; `size` is each CPU's perf buffer's bytes (`--buffer-size`,
    /// a power of two of pages), the ring buffer's being set when the object loads.
    pub fn open(ebpf: &mut Ebpf, buffer: Buffer, size: Option<u32>) -> Result<Self> {
        match buffer {
            Buffer::Ring => {
                let map = ebpf.take_map(names::EVENTS).context("the EVENTS map is missing")?;
                let ring = RingBuf::try_from(map)?;
                // SAFETY: the ring buffer's fd stays open and unchanged while the AsyncFd owns the RingBuf.
                let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)
                    .context("polling the ring buffer")?;
                Ok(Source::Ring(ring, false))
            }
            Buffer::Perf => {
                let map = ebpf.take_map(names::PERF_EVENTS).context("the PERF_EVENTS map is missing")?;
                let mut array = PerfEventArray::try_from(map)?;
                let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
                let mut buffers = Vec::with_capacity(cpus.len());
                for cpu in cpus {
                    let buffer = array
                        .open(cpu, Some(size.map_or(PERF_PAGES, |bytes| (bytes as usize / page_size()).max(1))))
                        .with_context(|| format!("opening the perf buffer of CPU {cpu}"))?;
                    // SAFETY: the buffer's fd stays open and unchanged while the AsyncFd owns the buffer.
                    let buffer = unsafe { AsyncFd::register_with_interest(buffer, Interest::READABLE) }
                        .map_err(|e| e.into_parts().1)
                        .context("polling a perf buffer")?;
                    buffers.push(buffer);
                }
                Ok(Source::Perf(buffers))
            }
        }
    }

    /// Waits until a buffer may have records, or `DRAIN_PERIOD` passed. Readiness is cleared before the
    /// caller drains every buffer, so a record that arrives meanwhile is either drained now or signalled
    /// again.
    pub async fn ready(&mut self) -> io::Result<()> {
        tokio::select! {
            ready = self.readable() => ready,
            () = tokio::time::sleep(DRAIN_PERIOD) => Ok(()),
        }
    }

    async fn readable(&mut self) -> io::Result<()> {
        match self {
            Source::Ring(ring, more) => {
                if *more {
                    // Records are left from the last drain: ready at once, but after the other branches'
                    // turn (`select!` picks among ready branches at random). Cleared only once this
                    // branch wins, so that another branch winning meanwhile does not lose it.
                    tokio::task::yield_now().await;
                    *more = false;
                    return Ok(());
                }
                ring.readable_mut().await?.clear_ready();
                Ok(())
            }
            Source::Perf(buffers) => {
                std::future::poll_fn(|cx| {
                    let mut ready = false;
                    for buffer in buffers.iter_mut() {
                        if let std::task::Poll::Ready(guard) = buffer.poll_read_ready_mut(cx) {
                            guard?.clear_ready();
                            ready = true;
                        }
                    }
                    if ready { std::task::Poll::Ready(Ok(())) } else { std::task::Poll::Pending }
                })
                .await
            }
        }
    }

    /// Whether the last drain left records behind.
    pub fn has_more(&self) -> bool {
        matches!(self, Source::Ring(_, true))
    }

    /// Hands waiting records to `handle` (at most `DRAIN_BATCH` from the ring buffer), until it breaks.
    pub fn drain<B>(&mut self, mut handle: impl FnMut(&[u8]) -> ControlFlow<B>) -> ControlFlow<B> {
        match self {
            Source::Ring(ring, more) => {
                let ring = ring.get_mut();
                for _ in 0..DRAIN_BATCH {
                    let Some(item) = ring.next() else {
                        return ControlFlow::Continue(());
                    };
                    handle(&item)?;
                }
                *more = true;
                ControlFlow::Continue(())
            }
            Source::Perf(buffers) => {
                let mut joined = Vec::new();
                for buffer in buffers.iter_mut() {
                    buffer.get_mut().try_fold((), |(), event| match event {
                        PerfEvent::Sample { head, tail } => {
                            if tail.is_empty() {
                                return handle(head);
                            }
                            joined.clear();
                            joined.extend_from_slice(head);
                            joined.extend_from_slice(tail);
                            handle(&joined)
                        }
                        // The programs count every record that did not fit (`stat::LOST`), when it happens;
                        // these reports of the same losses come late, with the next record that fits.
                        PerfEvent::Lost { .. } => ControlFlow::Continue(()),
                    })?;
                }
                ControlFlow::Continue(())
            }
        }
    }
}
