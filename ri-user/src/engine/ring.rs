//! ri's reader of the kernel's BPF ring buffer (`EVENTS`), mapped directly.
//!
//! The kernel reads the consumer position on every reservation. aya's
//! reader stores it after every record, so while ri drains, the cache line
//! holding it moves between the reader's CPU and the traced thread's for
//! every event. This reader walks a whole batch and then stores the position
//! once (or every [`RELEASE_EVERY`] bytes of a long batch, so the producer
//! gets space back), which keeps that line on the producer's side.
//!
//! Layout (the kernel's `bpf_ringbuf`): page 0 is the consumer position
//! (read-write), page 1 the producer position, then the data area mapped
//! twice in a row so a record that wraps is contiguous. Each record starts
//! with an 8-byte header: its length with a busy bit (being written) and a
//! discard bit, then the page offset; records are 8-byte aligned.

use std::{
    num::NonZeroUsize,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// Bytes of a record's header.
const RECORD_HEADER: u64 = 8;
/// The record is still being written (`BPF_RINGBUF_BUSY_BIT`).
const BUSY: u32 = 1 << 31;
/// The record was discarded (`BPF_RINGBUF_DISCARD_BIT`).
const DISCARD: u32 = 1 << 30;
/// A long drain hands space back to the producer this often.
const RELEASE_EVERY: u64 = 1 << 20;

/// Errors mapping the ring buffer.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// mmap failed.
    #[error("cannot map the event ring buffer: {0}")]
    Map(#[source] nix::Error),
    /// The size is not a power of two the kernel would accept.
    #[error("bad ring buffer size {0}")]
    Size(u32),
}

/// The event ring buffer, mapped for reading.
pub struct EventRing {
    map: MapData,
    consumer: NonNull<AtomicU64>,
    producer: NonNull<AtomicU64>,
    data: NonNull<u8>,
    page: usize,
    size: u64,
    /// The consumer position, as read and advanced locally.
    pos: u64,
}

impl EventRing {
    /// Maps the ring of `map`, `size` bytes of data (a power of two).
    pub fn new(map: MapData, size: u32) -> Result<Self, RingError> {
        if !size.is_power_of_two() {
            return Err(RingError::Size(size));
        }
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as usize;
        let len = |n: usize| NonZeroUsize::new(n).expect("non-zero");
        let fd = map.fd().as_fd();
        // SAFETY: fresh shared mappings of the map's fd, at the offsets
        // and sizes the kernel defines for ring buffers; unmapped on drop.
        let (consumer, producer) = unsafe {
            let c = mmap(
                None,
                len(page),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
            .map_err(RingError::Map)?;
            let p = mmap(
                None,
                len(page + 2 * size as usize),
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                fd,
                page as i64,
            );
            match p {
                Ok(p) => (c, p),
                Err(e) => {
                    let _ = munmap(c, page);
                    return Err(RingError::Map(e));
                }
            }
        };
        let consumer = consumer.cast::<AtomicU64>();
        // SAFETY: the data pages follow the producer page in the mapping.
        let data = unsafe { producer.cast::<u8>().add(page) };
        // SAFETY: the consumer page holds the kernel's consumer position.
        let pos = unsafe { consumer.as_ref() }.load(Ordering::Acquire);
        Ok(EventRing {
            map,
            consumer,
            producer: producer.cast(),
            data,
            page,
            size: u64::from(size),
            pos,
        })
    }

    /// Hands every complete record waiting to `f`, in order, then tells the
    /// kernel they are consumed.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        // SAFETY: the position words live in the mappings held by self.
        let (consumer, producer) = unsafe { (self.consumer.as_ref(), self.producer.as_ref()) };
        let mut released = self.pos;
        loop {
            let end = producer.load(Ordering::Acquire);
            if self.pos >= end {
                break;
            }
            while self.pos < end {
                let off = (self.pos & (self.size - 1)) as usize;
                // SAFETY: `off` is inside the data area; the header word is
                // 8-aligned and written by the kernel with release order.
                let head = unsafe { &*(self.data.as_ptr().add(off) as *const AtomicU32) }
                    .load(Ordering::Acquire);
                if head & BUSY != 0 {
                    // Being written: the rest comes on a later drain.
                    consumer.store(self.pos, Ordering::Release);
                    return;
                }
                let len = u64::from(head & !(BUSY | DISCARD));
                if head & DISCARD == 0 {
                    // SAFETY: the record lies within the doubly mapped data
                    // area, which makes a wrapping record contiguous.
                    let rec = unsafe {
                        std::slice::from_raw_parts(
                            self.data.as_ptr().add(off + RECORD_HEADER as usize),
                            len as usize,
                        )
                    };
                    f(rec);
                }
                self.pos += (len + RECORD_HEADER + 7) & !7;
                if self.pos - released >= RELEASE_EVERY {
                    consumer.store(self.pos, Ordering::Release);
                    released = self.pos;
                }
            }
        }
        consumer.store(self.pos, Ordering::Release);
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

impl AsFd for EventRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

impl Drop for EventRing {
    fn drop(&mut self) {
        // SAFETY: the mappings made in `new`, unmapped once.
        unsafe {
            let _ = munmap(self.consumer.cast(), self.page);
            let _ = munmap(self.producer.cast(), self.page + 2 * self.size as usize);
        }
    }
}
