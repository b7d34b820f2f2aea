//! Background threads give way to requests on a busy machine.
//!
//! The index merger keeps a core busy for as long as points wait, on
//! machines with as few as two. At the same priority as the threads that
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
}
