//! One lane of a broker's pool: its open connections and at most one dial in progress. The lock guarding the
//! lane is never held across a dial: callers that need a new connection while one is being opened wait for that
//! same dial (its success serves them all, its failure fails them all at once), and callers that can use an
//! existing connection never wait for it. One dial at a time also keeps the lane within its bound.
//!
//! A caller that wants one more connection while the lane already has some waits for the dial only briefly: a
//! broker that accepts TCP but never answers would otherwise hold every new client for the whole dial timeout,
//! although an open connection could carry its requests (and time them out like any other).

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// How long a caller that could use an open connection waits for a new one: long enough for a healthy dial, so
/// a burst of new clients still spreads over the lane's connections.
const PATIENCE: std::time::Duration = std::time::Duration::from_millis(250);

/// What a lane holds.
pub trait Member: Send + Sync + 'static {
    fn is_closed(&self) -> bool;
    /// Closes once idle; for a connection whose dial completed after its lane was emptied.
    fn retire(self: &Arc<Self>);
    /// How busy it is; the least busy open connection serves callers that stop waiting for a dial.
    fn load(&self) -> usize {
        0
    }
}

/// The result of the dial in progress: `None` until it is done; errors as text, shared by every waiter.
type Outcome<T> = Option<Result<Arc<T>, String>>;

struct State<T> {
    conns: Vec<Arc<T>>,
    /// The dial under way, if any.
    opening: Option<watch::Receiver<Outcome<T>>>,
    /// Set once the lane was emptied for good (its pool was replaced): late dials do not join it.
    retired: bool,
}

pub struct Lane<T> {
    state: Arc<Mutex<State<T>>>,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Lane { state: Arc::new(Mutex::new(State { conns: Vec::new(), opening: None, retired: false })) }
    }
}

impl<T: Member> Lane<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection of this lane: the one `choose` picks among the open ones, else the one being dialled, else a
    /// new one from `open`. The dial runs
    /// as a task of its own, so a caller that gives up (a client that left, a probe's timeout) does not cancel it
    /// for the others; the connection it opens joins the lane either way.
    pub async fn get<F>(&self, choose: impl FnOnce(&[Arc<T>]) -> Option<Arc<T>>, open: F) -> Result<Arc<T>, String>
    where
        F: Future<Output = Result<Arc<T>, String>> + Send + 'static,
    {
        let (mut waiting, patient) = {
            let mut state = self.lock();
            state.conns.retain(|c| !c.is_closed());
            if let Some(c) = choose(&state.conns) {
                return Ok(c);
            }
            let patient = !state.conns.is_empty();
            let waiting = match &state.opening {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    state.opening = Some(rx.clone());
                    let lane = self.state.clone();
                    tokio::spawn(async move {
                        let outcome = open.await;
                        let mut state = lane.lock().unwrap_or_else(|p| p.into_inner());
                        match &outcome {
                            Ok(c) if state.retired => c.retire(),
                            Ok(c) => state.conns.push(c.clone()),
                            Err(_) => {}
                        }
                        state.opening = None;
                        // Sent under the lock: a caller that saw no dial in progress also sees its connection.
                        let _ = tx.send(Some(outcome));
                    });
                    rx
                }
            };
            (waiting, patient)
        };
        if patient
            && tokio::time::timeout(PATIENCE, waiting.wait_for(Option::is_some)).await.is_err()
            && let Some(c) = self.least_busy()
        {
            return Ok(c);
        }
        let done = waiting.wait_for(Option::is_some).await.map_err(|_| "the connection attempt was abandoned")?;
        done.clone().unwrap_or_else(|| Err("the connection attempt was abandoned".into()))
    }

    fn least_busy(&self) -> Option<Arc<T>> {
        self.lock().conns.iter().filter(|c| !c.is_closed()).min_by_key(|c| c.load()).cloned()
    }

    /// The open connections.
    pub fn conns(&self) -> Vec<Arc<T>> {
        self.lock().conns.iter().filter(|c| !c.is_closed()).cloned().collect()
    }

    /// Removes and returns every connection for good; a dial still in progress retires its connection.
    pub fn take(&self) -> Vec<Arc<T>> {
        let mut state = self.lock();
        state.retired = true;
        std::mem::take(&mut state.conns)
    }
}

#[cfg(test)]
mod tests;
