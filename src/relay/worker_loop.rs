//! A worker thread's own loop for busy tunnels between two plain sockets.
//!
//! Through a tunnel's own task every relayed message costs a task schedule and a task poll
//! on top of tokio's reactor dispatch, about as much as nginx's whole relay of a message
//! (bench/RESULTS.md). Here the sockets stay in
//! tokio's reactor, but their wakers do not wake the tunnel's task: each queues its tunnel
//! and direction on the worker's loop, one task that then relays every queued direction
//! inline. A batch of socket events costs one task wake-up, and no extra system call: an
//! epoll set of the loop's own, nested in tokio's, cost an `epoll_wait` per batch and the
//! kernel's nested wake-up per event (bench/RESULTS.md). The tunnel's own task only watches the
//! controls (timers, revocation, shutdown) and is woken once more, when the tunnel is over.
//!
//! Everything here runs on the worker's thread (a current-thread runtime: the loop is only
//! installed there, and its reactor wakes from there), so the mutexes below are never
//! contended; they make the sharing between the loop, the wakers and a tunnel's task safe,
//! not concurrent.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};

use tokio::runtime::{Handle, RuntimeFlavor};

use super::tunnel::Tunnel;
use crate::net::Stream;

/// Directions stepped per poll of the loop's task before it yields to the worker's other
/// tasks (new connections, timers).
const BATCH: usize = 256;

/// Which direction of a tunnel: client → upstream, upstream → client.
const UP: usize = 0;
const DOWN: usize = 1;

/// A tunnel as the loop and the tunnel's task share it.
pub(crate) struct Cell {
    pub(super) tunnel: Tunnel,
    /// Set once the relay is over (both directions ended, or one failed).
    pub(super) finished: Option<io::Result<()>>,
    /// The tunnel's task, woken when `finished` is set.
    pub(super) owner: Option<Waker>,
    /// Each direction's waker, registered with both of its sockets (reading one, writing
    /// the other), and its "already queued" flag.
    wakers: [Waker; 2],
    queued: [Arc<Queue>; 2],
}

impl Cell {
    /// Moves what can move in the given directions; notes the end and wakes the task when
    /// the relay is over.
    pub(super) fn step(&mut self, up: bool, down: bool) {
        let [uw, dw] = &self.wakers;
        let mut ucx = Context::from_waker(uw);
        let mut dcx = Context::from_waker(dw);
        if let Poll::Ready(r) = self.tunnel.step(&mut ucx, &mut dcx, up, down) {
            self.finished = Some(r);
            if let Some(w) = self.owner.take() {
                w.wake();
            }
        }
    }
}

/// One direction's waker: puts it on the loop's queue (once until the loop takes it), and
/// wakes the loop's task when the queue was empty.
struct Queue {
    lp: Weak<Loop>,
    key: u64,
    queued: AtomicBool,
}

impl Wake for Queue {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(lp) = self.lp.upgrade() else {
            return;
        };
        let first = {
            let mut ready = lp.ready.lock().unwrap_or_else(|e| e.into_inner());
            ready.push(self.key);
            ready.len() == 1
        };
        if first {
            if let Some(w) = lp.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

/// One worker's loop: the tunnels in it and the directions waiting to be stepped.
pub(crate) struct Loop {
    slots: Mutex<Slots>,
    ready: Mutex<Vec<u64>>,
    /// The loop's task, woken when `ready` gets its first entry.
    task: Mutex<Option<Waker>>,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Slot>,
    free: Vec<u32>,
}

struct Slot {
    /// Bumped when the slot is freed: a wake-up still queued (or a waker still held by a
    /// socket) for the old tunnel then matches nothing.
    generation: u32,
    cell: Option<Arc<Mutex<Cell>>>,
}

/// A queue entry: generation, slot, and which direction.
fn key(generation: u32, index: u32, direction: usize) -> u64 {
    (u64::from(generation) << 32) | (u64::from(index) << 1) | direction as u64
}

impl Loop {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Relays what one queued direction allows.
    fn on_ready(&self, k: u64) {
        let (generation, index, direction) = ((k >> 32) as u32, (k as u32) >> 1, (k & 1) as usize);
        let slots = self.lock();
        let Some(cell) = slots
            .entries
            .get(index as usize)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.cell.as_ref())
        else {
            return;
        };
        let mut cell = cell.lock().unwrap_or_else(|e| e.into_inner());
        // Taken off the queue before the step: a wake-up during or after it queues again.
        cell.queued[direction]
            .queued
            .store(false, Ordering::Release);
        if cell.finished.is_some() {
            return;
        }
        cell.step(direction == UP, direction == DOWN);
    }
}

/// A tunnel's place in its worker's loop. Dropping it takes the tunnel out (its sockets
/// close with the last reference).
pub(crate) struct Registration {
    lp: Arc<Loop>,
    index: u32,
    cell: Arc<Mutex<Cell>>,
}

impl Registration {
    /// Hands the tunnel's relay to the loop. Two plain sockets only: a TLS stream's bytes
    /// must pass through rustls, which has buffers of its own to flush.
    pub(crate) fn new(lp: &Arc<Loop>, tunnel: Tunnel) -> io::Result<Registration> {
        if !matches!(
            (&tunnel.client, &tunnel.upstream),
            (Stream::Tcp(_), Stream::Tcp(_))
        ) {
            return Err(io::Error::other(
                "only two plain sockets go to the worker loop",
            ));
        }
        let mut slots = lp.lock();
        let index = match slots.free.pop() {
            Some(i) => i,
            None => {
                slots.entries.push(Slot {
                    generation: 0,
                    cell: None,
                });
                (slots.entries.len() - 1) as u32
            }
        };
        let slot = &mut slots.entries[index as usize];
        let queued = [UP, DOWN].map(|direction| {
            Arc::new(Queue {
                lp: Arc::downgrade(lp),
                key: key(slot.generation, index, direction),
                queued: AtomicBool::new(false),
            })
        });
        let cell = Arc::new(Mutex::new(Cell {
            tunnel,
            finished: None,
            owner: None,
            wakers: [&queued[UP], &queued[DOWN]].map(|q| Waker::from(q.clone())),
            queued,
        }));
        slot.cell = Some(cell.clone());
        Ok(Registration {
            lp: lp.clone(),
            index,
            cell,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Cell> {
        self.cell.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let cell = {
            let mut slots = self.lp.lock();
            let slots = &mut *slots;
            slots.entries.get_mut(self.index as usize).and_then(|slot| {
                slot.generation = slot.generation.wrapping_add(1);
                slots.free.push(self.index);
                slot.cell.take()
            })
        };
        // Released outside the loop's lock; the sockets close with the last reference (this
        // registration's own), which drops the wakers they held.
        drop(cell);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Loop>>> = const { RefCell::new(None) };
}

/// The loop of the current thread, if one is installed.
pub(crate) fn current() -> Option<Arc<Loop>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Keeps a thread's loop installed; dropping it uninstalls the loop (tunnels already in
/// it keep running while the runtime does).
pub(crate) struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Starts the current thread's loop, as a task of its runtime. Only on a current-thread
/// runtime: there a tunnel's task, the loop and the reactor that wakes it always run on
/// this thread. `None` (tunnels are relayed by their own tasks) elsewhere.
pub(crate) fn install() -> Option<Installed> {
    let handle = Handle::try_current().ok()?;
    if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return None;
    }
    let lp = Arc::new(Loop {
        slots: Mutex::new(Slots::default()),
        ready: Mutex::new(Vec::new()),
        task: Mutex::new(None),
    });
    // Outside tokio's cooperative budget: a batch polls many sockets, and a socket whose
    // poll ran out of budget would wake its direction's waker, queueing it right back.
    // The loop bounds its own work per poll instead.
    handle.spawn(tokio::task::unconstrained(run(lp.clone())));
    CURRENT.with(|c| *c.borrow_mut() = Some(lp));
    Some(Installed(()))
}

/// Steps the queued directions as they come; never ends (the runtime drops it).
async fn run(lp: Arc<Loop>) {
    let mut batch = Vec::new();
    poll_fn(|cx| {
        {
            let mut task = lp.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut stepped = 0;
        loop {
            std::mem::swap(
                &mut *lp.ready.lock().unwrap_or_else(|e| e.into_inner()),
                &mut batch,
            );
            if batch.is_empty() {
                return Poll::<()>::Pending;
            }
            stepped += batch.len();
            for k in batch.drain(..) {
                lp.on_ready(k);
            }
            if stepped >= BATCH {
                // Queued since: the next poll takes them, after the worker's other tasks.
                if !lp
                    .ready
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
                {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
    })
    .await
}
