//! Background threads give way to requests on a busy machine.
//!
//! The index merger's insert plans keep a core busy for as long as points
//! wait, on machines with as few as two. At the same priority as the threads that
//! serve searches, the scheduler let it run out its time slice before a
//! search thread that had just been woken got the core: measured beside a
//! writer at 1,000 points/s, the server's own queue time of a search (from
//! handing it to a thread to its start) had a p99 of 2–3 ms with no lock
//! involved, 1.6 ms at nice 19, and 0.2 ms once the merger ran as
//! `SCHED_IDLE`, which Linux preempts as soon as any other thread wants
//! the core. It still gets every cycle nobody else wants; under a load
//! that keeps every core busy, writers wait once
//! `fresh_segment_max_points` are waiting (the back-pressure the fresh
//! segment already has), so searches come first. Threads it starts
//! inherit the policy (a rebuild's faiss workers too).
//!
//! A thread in the idle class must never hold or wait for a lock that
//! searches need: on a machine whose cores are all busy it may not run
//! again for many milliseconds, and everyone behind the lock waits with it
//! (priority inversion; with Rust's read/write lock a writer merely
//! waiting already holds new readers back). So background work is split:
//! its owner runs at normal priority and takes the locks, and hands each
//! CPU-heavy step that needs no lock to an [`IdleThread`].

use std::sync::mpsc;

/// Moves the calling thread to the idle scheduling class (Linux; elsewhere
/// nothing). Best effort: a failure is logged once and the thread runs on
/// unchanged. A thread cannot move back without privileges: call it only
/// on threads that do background work to the end.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` during the call; pid 0
        // is the calling thread (Linux keeps the policy per thread).
        #[allow(unsafe_code)]
        let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
        if failed {
            static LOGGED: std::sync::Once = std::sync::Once::new();
            LOGGED.call_once(|| {
                tracing::warn!(
                    error = %std::io::Error::last_os_error(),
                    "could not lower a background thread's priority"
                );
            });
        }
    }
}

/// A thread in the idle scheduling class that runs its owner's lock-free,
/// CPU-heavy steps one at a time while the owner waits (see the module
/// docs). It ends when dropped.
#[derive(Debug)]
pub struct IdleThread {
    jobs: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

impl IdleThread {
    /// Starts the thread, named `name`.
    pub fn start(name: String) -> std::io::Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        std::thread::Builder::new().name(name).spawn(move || {
            lower_this_thread();
            for job in inbox {
                job();
            }
        })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the thread and returns its result; a panic in `f`
    /// unwinds into the caller, as if it had called `f` itself.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (result, outcome) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            // The receiver waits for exactly this send.
            let _ = result.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        self.jobs
            .send(job)
            .expect("an idle thread lives as long as its handle");
        match outcome
            .recv()
            .expect("an idle thread answers every job it takes")
        {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: no arguments to uphold; pid 0 is the calling thread.
        #[allow(unsafe_code)]
        unsafe {
            libc::sched_getscheduler(0)
        }
    }

    #[test]
    fn a_background_thread_runs_idle_and_only_it() {
        let before = policy();
        let (inside, inherited) = std::thread::spawn(|| {
            lower_this_thread();
            let inherited = std::thread::spawn(policy).join().unwrap();
            (policy(), inherited)
        })
        .join()
        .unwrap();
        assert_eq!(inside, libc::SCHED_IDLE);
        assert_eq!(inherited, libc::SCHED_IDLE, "threads it starts inherit it");
        assert_eq!(policy(), before, "the caller's thread is untouched");
    }

    #[test]
    fn an_idle_thread_runs_jobs_in_the_idle_class_and_returns_their_results() {
        let idle = IdleThread::start("idle-test".into()).unwrap();
        assert_eq!(idle.run(policy), libc::SCHED_IDLE);
        assert_ne!(policy(), libc::SCHED_IDLE, "the owner keeps its class");
        let owned = String::from("moved in");
        assert_eq!(idle.run(move || owned.len()), 8);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            idle.run(|| panic!("boom"));
        }));
        assert!(panicked.is_err(), "the panic reaches the owner");
        assert_eq!(idle.run(|| 7), 7, "and the thread goes on");
    }
}
