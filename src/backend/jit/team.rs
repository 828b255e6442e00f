//! A team of threads for the JIT's parallel steps. A network run is 50 to
//! 150 short fork-joins (one per GEMM, 0.1 to 3 ms each); a pool whose
//! threads sleep between them pays a cross-core wake-up per step, which is
//! slow on virtual machines. The team's threads spin between steps for a
//! while (`SPIN`), then park until the next one.
//!
//! A task that panics does not take its thread down or leave the step
//! unfinished: the panic is caught where the task ran, the step completes,
//! and [`Team::run`] resumes the first panic on the caller's thread.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A raw pointer the tasks of one step share: they only read through it,
/// or each writes a part of what it addresses that no other task touches.
/// Making one is that promise, hence `unsafe`.
pub struct TaskPtr<T>(*mut T);

impl<T> Clone for TaskPtr<T> {
    fn clone(&self) -> TaskPtr<T> {
        *self
    }
}
impl<T> Copy for TaskPtr<T> {}

// SAFETY: by `new`'s contract the tasks holding copies read, or write
// disjoint parts; `T: Send + Sync` as for sharing `&T` and sending `&mut T`.
unsafe impl<T: Send + Sync> Send for TaskPtr<T> {}
// SAFETY: as for Send.
unsafe impl<T: Send + Sync> Sync for TaskPtr<T> {}

impl<T> TaskPtr<T> {
    /// # Safety
    /// While any task holds a copy, tasks only read through it or write
    /// parts of what it addresses that no other task reads or writes.
    pub unsafe fn new(p: *mut T) -> TaskPtr<T> {
        TaskPtr(p)
    }

    /// # Safety
    /// As [`TaskPtr::new`]: what it addresses is only read.
    pub unsafe fn reading(p: *const T) -> TaskPtr<T> {
        TaskPtr(p as *mut T)
    }

    /// Through a method, so closures capture the wrapper, not the field.
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// The claim word's task index while a step is being set up: above any
/// step's task count, so nothing can be claimed.
const CLOSED: u64 = 0xffff_ffff;

/// How long an idle thread spins before it parks.
const SPIN: Duration = Duration::from_millis(5);

type Job = *const (dyn Fn(usize) + Sync);

struct State {
    /// `generation << 32 | next task`: a step's tasks are claimed by
    /// compare-and-swap, so a thread late for one step cannot claim a task
    /// of the next. Two generations a step: the first closes the last step
    /// (index [`CLOSED`]) while the next is set up, the second opens it.
    claim: AtomicU64,
    /// Tasks in the current step, and those not yet finished.
    tasks: AtomicUsize,
    pending: AtomicUsize,
    /// The current step's work; written only between steps.
    job: UnsafeCell<Option<Job>>,
    sleeping: AtomicUsize,
    stop: AtomicBool,
    /// The first panic of the current step's tasks, for the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is written only while no thread can read it (no step runs);
// the rest is atomic or locked.
unsafe impl Sync for State {}
// SAFETY: as for Sync; `job` points at a `Sync` closure.
unsafe impl Send for State {}

pub struct Team {
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

impl Team {
    /// A team of `size` threads: the caller of [`Team::run`] and `size - 1` more.
    pub fn new(size: usize) -> std::io::Result<Team> {
        let state = Arc::new(State {
            claim: AtomicU64::new(0),
            tasks: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            sleeping: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let mut threads = Vec::new();
        for i in 1..size.max(1) {
            let s = state.clone();
            let t = std::thread::Builder::new()
                .name(format!("resnetc-{i}"))
                .spawn(move || worker(&s))?;
            threads.push(t);
        }
        Ok(Team { state, threads })
    }

    pub fn size(&self) -> usize {
        self.threads.len() + 1
    }

    /// Run `f(0) .. f(tasks - 1)` on the team, the caller included; returns
    /// when all are done. Tasks are claimed one at a time, so a slower
    /// thread simply does fewer. If a task panics, the others still run and
    /// the first panic is resumed here once all are done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.threads.is_empty() || tasks == 1 {
            (0..tasks).for_each(f);
            return;
        }
        let s = &*self.state;
        assert!(tasks < CLOSED as usize, "{tasks} tasks in one step");
        // Close the last step first: a worker late for it may still hold its
        // claim word, and must not claim a task of this step with it (it
        // would run one twice, and `pending` would wrap: a hang, seen under
        // load). Its compare-and-swap fails once the word has changed.
        let last = s.claim.load(Relaxed) >> 32;
        s.claim.store(((last + 1) << 32) | CLOSED, SeqCst);
        // SAFETY: no step is running (the last one's tasks all finished, and
        // none can be claimed now), so no thread reads `job`; it is cleared
        // before `f` goes out of scope.
        unsafe { *s.job.get() = Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f)) };
        s.tasks.store(tasks, Relaxed);
        s.pending.store(tasks, Relaxed);
        let generation = last + 2;
        s.claim.store(generation << 32, SeqCst);
        if s.sleeping.load(SeqCst) > 0 {
            for t in &self.threads {
                t.thread().unpark();
            }
        }
        work(s, generation);
        let mut spins = 0u32;
        while s.pending.load(Acquire) > 0 {
            relax(&mut spins);
        }
        // SAFETY: every task is done; nobody reads `job` until the next step.
        unsafe { *s.job.get() = None };
        let panic = s.panic.lock().map(|mut p| p.take()).unwrap_or(None);
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }

    /// `f()` once on every thread of the team at the same time.
    pub fn broadcast<R: Send>(&self, f: impl Fn() -> R + Sync) -> Vec<R> {
        let size = self.size();
        let started = AtomicUsize::new(0);
        let out: Vec<std::sync::Mutex<Option<R>>> =
            (0..size).map(|_| std::sync::Mutex::new(None)).collect();
        self.run(size, &|i| {
            // Hold each task until all have started: one per thread.
            started.fetch_add(1, AcqRel);
            let mut spins = 0u32;
            while started.load(Acquire) < size {
                relax(&mut spins);
            }
            let r = f();
            if let Ok(mut slot) = out[i].lock() {
                *slot = Some(r);
            }
        });
        out.into_iter()
            .filter_map(|m| m.into_inner().ok().flatten())
            .collect()
    }
}

/// One round of a wait: a pause, and now and then a yield, so that with
/// more threads than cores the thread being waited for gets to run.
fn relax(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    if spins.is_multiple_of(4096) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Claim and run tasks of step `generation` until none are left.
fn work(s: &State, generation: u64) {
    loop {
        let c = s.claim.load(Acquire);
        let task = (c & 0xffff_ffff) as usize;
        if c >> 32 != generation || task >= s.tasks.load(Acquire) {
            return;
        }
        if s.claim
            .compare_exchange_weak(c, c + 1, AcqRel, Relaxed)
            .is_ok()
        {
            // SAFETY: a claimed task keeps its step (and so `job`) alive
            // until `pending` drops below it.
            if let Some(job) = unsafe { *s.job.get() } {
                // SAFETY: as above; the job is a live `&dyn Fn(usize) + Sync`.
                let ran = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(task) }));
                if let Err(p) = ran {
                    if let Ok(mut first) = s.panic.lock() {
                        first.get_or_insert(p);
                    }
                }
            }
            s.pending.fetch_sub(1, AcqRel);
        }
    }
}

fn worker(s: &State) {
    let mut seen = 0;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        let generation = loop {
            if s.stop.load(Acquire) {
                return;
            }
            let g = s.claim.load(Acquire) >> 32;
            if g != seen {
                break g;
            }
            relax(&mut spins);
            if spins.is_multiple_of(1024) && since.elapsed() > SPIN {
                s.sleeping.fetch_add(1, SeqCst);
                // Checked again after announcing sleep: a step published
                // before this either is seen here or unparks us.
                if s.claim.load(SeqCst) >> 32 == seen && !s.stop.load(SeqCst) {
                    std::thread::park();
                }
                s.sleeping.fetch_sub(1, SeqCst);
                since = Instant::now();
            }
        };
        seen = generation;
        work(s, generation);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.state.stop.store(true, SeqCst);
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_in_every_step() {
        for size in [1, 2, 3] {
            let team = Team::new(size).unwrap();
            for step in 0..200 {
                let tasks = step % 7;
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                team.run(tasks, &|i| {
                    hits[i].fetch_add(1, Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Relaxed) == 1),
                    "size {size} step {step}"
                );
            }
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_team_goes_on() {
        let team = Team::new(2).unwrap();
        for bad in [0, 5] {
            let done = AtomicUsize::new(0);
            let start = Instant::now();
            let r = catch_unwind(AssertUnwindSafe(|| {
                team.run(8, &|i| {
                    if i == bad {
                        panic!("task {i}");
                    }
                    done.fetch_add(1, Relaxed);
                })
            }));
            let p = r.expect_err("the panic is resumed on the caller");
            assert_eq!(
                p.downcast_ref::<String>().map(String::as_str),
                Some(format!("task {bad}").as_str())
            );
            // The other tasks all ran, and nothing hung.
            assert_eq!(done.load(Relaxed), 7);
            assert!(start.elapsed() < Duration::from_secs(1));
        }
        let hits = AtomicUsize::new(0);
        team.run(4, &|_| {
            hits.fetch_add(1, Relaxed);
        });
        assert_eq!(hits.load(Relaxed), 4);
    }

    /// Many short steps of different sizes on more threads than cores: a
    /// worker late for one step must never claim a task of the next (it
    /// ran a task twice and `pending` wrapped: the step never ended). The
    /// steps run on a thread of their own, so a hang fails the test.
    #[test]
    fn late_workers_never_claim_the_next_steps_tasks() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let team = Team::new(8).unwrap();
            for step in 0..200_000 {
                let tasks = 1 + step % 13;
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                team.run(tasks, &|i| {
                    hits[i].fetch_add(1, Relaxed);
                });
                if !hits.iter().all(|h| h.load(Relaxed) == 1) {
                    let _ = done.send(Err(format!("step {step}: a task ran twice or not at all")));
                    return;
                }
            }
            let _ = done.send(Ok(()));
        });
        match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(r) => r.unwrap(),
            Err(_) => panic!("a step never ended"),
        }
    }

    #[test]
    fn parked_threads_wake_for_the_next_step() {
        let team = Team::new(2).unwrap();
        std::thread::sleep(SPIN * 3);
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        let ids = team.broadcast(|| std::thread::current().id());
        seen.lock().unwrap().extend(ids);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}
