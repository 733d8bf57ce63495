//! Room passwords: argon2id hashes (PHC strings). Each check costs ~20 MiB and tens of
//! milliseconds by design, so they run on a few threads of their own (`password_concurrency`) at a
//! lower CPU priority than the rest of the hub: a flood of guesses queues behind those threads
//! and can take neither the blocking pool, nor the machine's memory, nor the CPU time the threads
//! that answer requests need.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use tokio::sync::oneshot;

use super::error::HubError;

/// How much lower than the hub's other threads the argon2 threads run (nice levels, Linux).
const NICE_BELOW_THE_HUB: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The argon2 workers. Clones share them; the threads end when the last clone is dropped.
#[derive(Clone)]
pub struct Passwords {
    jobs: mpsc::Sender<Job>,
}

impl Passwords {
    /// Starts `concurrency` argon2 threads; more checks than that wait their turn in a queue.
    pub fn new(concurrency: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..concurrency.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new().name(format!("gambi-argon2-{n}")).spawn(move || {
                lower_this_threads_priority();
                loop {
                    // The lock is held only while waiting for the next job, never while running it.
                    let next = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match next {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::warn!("could not start an argon2 thread: {e}");
            }
        }
        Passwords { jobs }
    }

    /// Runs `work` on an argon2 thread and waits for its answer.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HubError> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = answer.send(work());
            }))
            .map_err(|_| HubError::Internal("the argon2 threads are gone".into()))?;
        answered.await.map_err(|_| HubError::Internal("an argon2 check did not finish".into()))
    }

    pub async fn hash(&self, password: String) -> Result<String, HubError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HubError::Internal(format!("argon2 hash failed: {e}")))
        })
        .await?
    }

    /// True when `password` matches `hash`. A malformed stored hash is an internal error, never a
    /// match.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, HubError> {
        self.run(move || {
            let parsed =
                PasswordHash::new(&hash).map_err(|_| HubError::Internal("stored password hash is malformed".into()))?;
            Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await?
    }
}

/// Puts the calling thread `NICE_BELOW_THE_HUB` nice levels below where it is. On Linux a nice
/// value belongs to a thread, so this touches no other thread of the hub; raising one's own nice
/// value needs no privilege. Elsewhere the threads keep the process's priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        let me = Some(rustix::thread::gettid());
        if let Ok(nice) = rustix::process::getpriority_process(me) {
            let _ = rustix::process::setpriority_process(me, (nice + NICE_BELOW_THE_HUB).min(19));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let p = Passwords::new(2);
        let hash = p.hash("secret123".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(p.verify("secret123".into(), hash.clone()).await.unwrap());
        assert!(!p.verify("wrong".into(), hash.clone()).await.unwrap());
        assert!(!p.verify(String::new(), hash).await.unwrap());
    }

    #[tokio::test]
    async fn malformed_hash_is_an_error_not_a_match() {
        let p = Passwords::new(1);
        assert!(p.verify("x".into(), "not-a-hash".into()).await.is_err());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_argon2_threads_run_below_the_hubs_priority() {
        let p = Passwords::new(1);
        p.hash("warm".into()).await.unwrap();
        let ours = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let theirs: Vec<i64> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("gambi-argon2")))
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
                // Field 19 is the nice value; fields start after the command's closing parenthesis.
                stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok()
            })
            .collect();
        assert!(!theirs.is_empty(), "the argon2 thread is in /proc/self/task");
        let wanted = i64::from((ours + NICE_BELOW_THE_HUB).min(19));
        assert!(theirs.contains(&wanted), "argon2 threads at nice {theirs:?}, the test at {ours}");
    }
}
